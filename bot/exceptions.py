"""Every error groupbot raises on purpose.

    GroupbotError
    ├── ConfigError              config.yaml or the routes it declares cannot be used
    ├── InvalidInput             a request body, field or number is not what was expected
    │   └── InvalidNumber        a phone number cannot be read as E.164 digits
    ├── TemplateError            a template is missing or fails while rendering
    ├── HandlerError             a handler returned something groupbot cannot send
    ├── LeaseLost                work was claimed again by another worker: drop this outcome
    ├── WebhookRefused           a webhook's signature cannot be trusted
    │   ├── Unsigned             no token at all (Vonage advises a 5xx: it retries)
    │   └── BadSignature         a wrong, stale or mismatched token (401)
    │       └── Replayed         a token whose jti was accepted before (401)
    └── ApiError                 the Messages API refused or failed a request
        ├── PermanentApiError    4xx problem documents: retrying cannot help
        └── TransientApiError    429, 5xx, timeouts, connection errors: retry later

A message names what was received and what was expected, and where: the config key
(`routes[2].pattern`) or the body field (`mms.participants[1]`).
"""

from __future__ import annotations


class GroupbotError(Exception):
    """Base class of every error groupbot raises on purpose."""


class ConfigError(GroupbotError):
    """The configuration cannot be used; `problems` lists every reason, one a line.

    `without_unknown_keys`: when unknown keys were the only problems, the configuration read
    without them (a Config), so that `groupbot check` can go on to find the rest at once.
    """

    def __init__(self, problems: list[str], *, without_unknown_keys: object = None) -> None:
        self.problems = problems
        self.without_unknown_keys = without_unknown_keys
        super().__init__("\n".join(problems))


class InvalidInput(GroupbotError):
    """A value from outside is not what was expected; `field` says where it was."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class InvalidNumber(InvalidInput):
    """A phone number that cannot be read as E.164 digits."""


class StoreUnavailable(GroupbotError):
    """The store could not be opened (reached, created or upgraded)."""


class TemplateError(GroupbotError):
    """A template is missing, or raised while rendering."""


class HandlerError(GroupbotError):
    """A handler returned a value groupbot does not know how to send."""


class LeaseLost(GroupbotError):
    """A claim ran out and the item was claimed again; the stale outcome was not written."""


class WebhookRefused(GroupbotError):
    """A webhook whose signature cannot be trusted; nothing of it is stored."""


class Unsigned(WebhookRefused):
    """No `Authorization: Bearer` token at all."""


class BadSignature(WebhookRefused):
    """A token that does not verify, does not match the body, or is too old."""


class Replayed(BadSignature):
    """A token whose `jti` was accepted before."""


class ApiError(GroupbotError):
    """The Messages API answered with a problem document or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        title: str | None = None,
        detail: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.retry_after = retry_after
        super().__init__(message)


class PermanentApiError(ApiError):
    """A 4xx answer other than 429: sending the same request again cannot succeed."""


class TransientApiError(ApiError):
    """429, 5xx, a timeout or a lost connection: the same request may succeed later."""
