"""The OpenAPI description of the bot's own endpoints, served at `/openapi.json`.

Request bodies are the pydantic models' own JSON Schemas, so the description cannot drift
from what the endpoints accept.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from bot.admin import SendRequest
from bot.models import InboundMessage, MessageStatus
from bot.simulator.web import MemberMessage

REF = "#/components/schemas/{model}"
PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": PROBLEM}},
    }


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or {"type": "object"}}},
    }


WEBHOOK_ANSWERS = {
    "200": _json("Stored (an inbound message seen before is answered 200 too, once)"),
    "400": _problem("The body is not what was expected; `field` names where"),
    "401": _problem("The signature is wrong, stale, or was used before"),
    "413": _problem("The body is larger than server.max_body_bytes"),
    "415": _problem("The body is not application/json"),
    "503": _problem("Unsigned (Vonage retries), or the store could not take it"),
}


NUMBERS = {"type": "array", "items": {"type": "string"}}
GROUPS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["key", "members"],
        "properties": {"key": {"type": "string"}, "members": NUMBERS},
    },
}
CONVERSATION = {
    "type": "object",
    "required": ["key", "bot_number", "members", "phones"],
    "properties": {
        "key": {"type": "string"},
        "bot_number": {"type": "string"},
        "members": NUMBERS,
        "phones": {
            "type": "object",
            "description": "member -> the messages their phone shows, oldest first",
            "additionalProperties": {"type": "array", "items": {"type": "object"}},
        },
    },
}
GROUP_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^g[0-9a-f]{16}$"},
}


def document(*, simulator: bool) -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Problem": {
            "type": "object",
            "required": ["title", "status", "detail"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "field": {"type": "string"},
            },
        }
    }

    def body(model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(by_alias=True, ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
        }

    paths: dict[str, Any] = {
        "/webhooks/inbound": {
            "post": {
                "summary": "Vonage's inbound MMS webhook",
                "security": [{"vonageSignature": []}],
                "requestBody": body(InboundMessage),
                "responses": WEBHOOK_ANSWERS,
            }
        },
        "/webhooks/status": {
            "post": {
                "summary": "Vonage's message status webhook",
                "security": [{"vonageSignature": []}],
                "requestBody": body(MessageStatus),
                "responses": WEBHOOK_ANSWERS,
            }
        },
        "/api/messages": {
            "post": {
                "summary": "Start a group conversation: one message per member",
                "security": [{"apiToken": []}],
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "Names the broadcast: a retry with it gets the first back",
                        "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
                    }
                ],
                "requestBody": body(SendRequest),
                "responses": {
                    "200": _json("Queued before under this Idempotency-Key: not queued again"),
                    "202": _json("Queued, one message per member"),
                    "400": _problem("A field is not what was expected; `field` names it"),
                    "401": _problem("No bearer token, or not server.api_token"),
                    "403": _problem("The admin API is off: server.api_token is not set"),
                    "422": _problem("The Idempotency-Key was used for another request"),
                    "413": _problem("The body is larger than server.max_body_bytes"),
                    "503": _problem("The store could not take the broadcast"),
                },
            }
        },
        "/healthz": {"get": {"summary": "Up", "responses": {"200": _json("The process is up")}}},
        "/metrics": {
            "get": {
                "summary": "Counters, histograms and queue depths for Prometheus",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Ready",
                "responses": {
                    "200": _json("The store answers and the workers run"),
                    "503": _problem("Not ready"),
                },
            }
        },
    }
    if simulator:
        paths["/simulator/messages"] = {
            "post": {
                "summary": "Write to a group as one of its members (simulator only)",
                "requestBody": body(MemberMessage),
                "responses": {
                    "201": _json("Accepted as the webhook Vonage would send"),
                    **{k: v for k, v in WEBHOOK_ANSWERS.items() if k != "200"},
                },
            }
        }
        paths["/simulator/groups"] = {
            "get": {
                "summary": "The groups, each with its members (simulator only)",
                "responses": {"200": _json("Every group", GROUPS)},
            }
        }
        paths["/simulator/groups/{key}"] = {
            "get": {
                "summary": "What every member's phone shows of a group (simulator only)",
                "parameters": [GROUP_KEY],
                "responses": {
                    "200": _json("Each member's thread", CONVERSATION),
                    "404": _problem("No such group"),
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "groupbot", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "vonageSignature": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT (HS256, signature secret, payload_hash)",
                },
                "apiToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }
