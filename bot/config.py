"""config.yaml -> validated, typed settings.

`${VAR}` and `${VAR:-default}` are replaced from the environment in every string value
(after YAML parsing, so a variable's value can never change the document's structure).
Relative paths (templates, a relative SQLite file) are resolved against the config's folder.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.exceptions import ConfigError, InvalidNumber
from bot.models import field_path
from bot.numbers import normalize, only_north_american, reaches_by_mms
from bot.retry import UNBOUNDED

DEFAULT_CONFIG = "config.yaml"
ENV_CONFIG = "GROUPBOT_CONFIG"


class YamlLoader(yaml.SafeLoader):
    """YAML with the booleans of YAML 1.2 only: `true` and `false`.

    YAML 1.1 also reads yes, no, on and off as booleans, so an intent named `yes` or a keyword
    `on` would silently become True. Here they stay the words they are.
    """


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rule) for tag, rule in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(stream: Any) -> Any:
    return yaml.load(stream, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass


SECRET_KEYS = frozenset({"private_key", "api_secret", "signature_secret", "api_token"})

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
# scheme://user:PASSWORD@host...: the password runs to the last @ (it may hold #, ? or /).
_USER_PASSWORD = re.compile(r"(?P<head>^[a-z][a-z0-9+.-]*://[^:/@?#]*:)(?P<password>.*)@")
_PASSWORD_PARAMETERS = frozenset({"password", "sslpassword"})
_BARE_VARIABLE = re.compile(r"\$(?P<name>[A-Z_][A-Z0-9_]*)")  # the whole value: $NAME
# Keys whose values come from the environment as a rule, where $NAME is a shell's habit (a
# keyword or a business name may well be "$TSLA").
_FROM_ENVIRONMENT = SECRET_KEYS | {"application_id", "api_key", "api_url", "url", "number", "kind"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BotSettings(_Section):
    number: str
    max_group_size: Annotated[int, Field(ge=2, le=50)] = 10

    @field_validator("number")
    @classmethod
    def _e164(cls, value: str) -> str:
        try:
            number = normalize(value)
        except InvalidNumber as exc:
            raise ValueError(exc.message) from None
        if not reaches_by_mms(number):
            raise ValueError(only_north_american(number))
        return number


class RetrySettings(_Section):
    """How failed sends are retried: exponential backoff with jitter, bounded twice."""

    # None: as many as ttl_seconds leaves room for. An outage of the API is retried through,
    # every max_delay_seconds at most, for as long as a message may still go.
    max_attempts: Annotated[int, Field(ge=1, le=UNBOUNDED)] | None = None
    base_seconds: Annotated[float, Field(gt=0)] = 1.0
    max_delay_seconds: Annotated[float, Field(gt=0)] = 300.0
    ttl_seconds: Annotated[float, Field(gt=0)] = 24 * 3600.0


# The slowest send rate that can be kept: a send waits for its slot at most 25 s (the claim's
# lease margin less a safety margin, bot/outbox.py), and slots are spaced 5 % wider than 1/rate.
MIN_SEND_RATE = 0.05
# A host name's labels (underscores too: container names such as vonage_mock resolve) or an
# IPv4 address; an IPv6 address is checked in its brackets.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?", re.IGNORECASE)
_HOST_AND_PORT = re.compile(r"(?P<host>\[[^\]]*\]|[^:\[\]]+)(?::[0-9]+)?")


def _is_host(netloc: str) -> bool:
    """Whether `netloc` (no credentials) is a host name or IP address, with a port or not."""
    found = _HOST_AND_PORT.fullmatch(netloc)
    if found is None:
        return False
    host = found["host"]
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return all(_LABEL.fullmatch(label) for label in host.removesuffix(".").split("."))


class ProviderSettings(_Section):
    kind: Literal["simulator", "vonage"] = "simulator"
    api_url: str = "https://api.nexmo.com"
    application_id: str = ""
    # Secrets print as '**********' in reprs and tracebacks.
    private_key: SecretStr = SecretStr("")
    api_key: str = ""
    api_secret: SecretStr = SecretStr("")
    signature_secret: SecretStr = SecretStr("")
    # Signed webhooks: on unless switched off here explicitly (say, behind a gateway that
    # checks them already). With the simulator and no secret, one is made up per process.
    verify_signatures: bool = True
    # At most a day: accepted tokens are remembered (against replays) for that long.
    signature_max_age_seconds: Annotated[float, Field(gt=0, le=86400)] = 300
    # Sends per second for the account, and for each sending number (10DLC carriers cap MMS
    # per number); null turns a limit off.
    rate_limit_per_second: Annotated[float, Field(gt=0)] | None = 30
    rate_limit_per_number: Annotated[float, Field(gt=0)] | None = None
    timeout_seconds: Annotated[float, Field(gt=0)] = 10
    retry: RetrySettings = RetrySettings()

    @field_validator("rate_limit_per_second", "rate_limit_per_number")
    @classmethod
    def _often_enough(cls, value: float | None) -> float | None:
        # A send waits for its slot within its claim's lease; slots further apart than that
        # could never be kept, and the member's next message would wait for ever.
        if value is not None and value < MIN_SEND_RATE:
            raise ValueError(
                f"expected at least {MIN_SEND_RATE:g} sends a second (one every "
                f"{1 / MIN_SEND_RATE:g} s), or null for no limit, got {value:g}"
            )
        return value

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            raise ValueError(f"expected a port number in {value!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"expected an https:// URL such as https://api.nexmo.com, got {value!r}"
            )
        if parts.username is not None:  # not echoed: it may carry a password
            raise ValueError("expected no user or password in the URL")
        if "?" in value or "#" in value:
            raise ValueError(f"expected scheme, host and path only, got {value!r}")
        if not value.isascii() or any(c <= " " or c == "\x7f" for c in value):
            raise ValueError(
                "expected ASCII without spaces or control characters (percent-encode the "
                f"rest), got {value!r}"
            )
        if parts.port == 0:
            raise ValueError(f"expected a port from 1 to 65535, got {value!r}")
        if not _is_host(parts.netloc):
            raise ValueError(f"expected a host name or IP address, got {parts.netloc!r}")
        if parts.path.rstrip("/").endswith("/v1/messages"):
            raise ValueError(
                f"expected the API's base URL (groupbot adds /v1/messages), got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _credentials(self) -> ProviderSettings:
        jwt = self.application_id and self.private_key.get_secret_value()
        basic = self.api_key and self.api_secret.get_secret_value()
        if self.kind == "vonage" and not (jwt or basic):
            raise ValueError(
                "provider.kind vonage needs application_id and private_key (JWT auth) "
                "or api_key and api_secret (Basic auth)"
            )
        secret = self.signature_secret.get_secret_value()
        if self.kind == "vonage" and self.verify_signatures and not secret:
            raise ValueError(
                "signature_secret is required to verify Vonage's signed webhooks "
                "(from the dashboard's settings); set verify_signatures: false only "
                "if something in front of the bot verifies them"
            )
        return self


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    api_token: SecretStr = SecretStr("")
    max_body_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024


class StorageSettings(_Section):
    url: str = "sqlite:///var/groupbot.db"
    pool_size: int = Field(10, ge=1, le=1000)  # PostgreSQL connections per process

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            # The value is not echoed: a database URL may carry a password.
            raise ValueError("expected sqlite:///PATH or postgresql://USER@HOST/DATABASE")
        return value

    @property
    def shown_url(self) -> str:
        """The URL with its password (if any) hidden, for output and logs."""
        return without_password(self.url)


def unencoded_password(url: str) -> bool:
    """Whether `url`'s password holds a character its parsers split on (# ? / @): a driver
    then reads another host or port, and its errors quote pieces of the password."""
    found = _USER_PASSWORD.match(url)
    return found is not None and any(c in found["password"] for c in "#?/@")


def without_password(url: str) -> str:
    """`url` with its password hidden, for output and logs: in its user part (up to the last
    `@`, so that one written with `#`, `?` or `/` unencoded is hidden whole too), or as a
    `password=` parameter (which PostgreSQL's drivers take too)."""
    hidden = _USER_PASSWORD.sub(r"\g<head>***@", url, count=1)
    head, mark, query = hidden.partition("?")
    if not mark:
        return hidden
    pairs = [pair.partition("=") for pair in query.split("&")]
    return (
        head
        + "?"
        + "&".join(
            f"{name}={'***' if name.lower() in _PASSWORD_PARAMETERS else value}" if eq else name
            for name, eq, value in pairs
        )
    )


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = "auto"
    mask_numbers: bool = True


class HandlerSettings(_Section):
    timeout_seconds: Annotated[float, Field(gt=0)] = 10
    # Rendered to the group when a handler raises or times out; none: the group gets nothing.
    error_template: str | None = None


class ComplianceSettings(_Section):
    """10DLC keywords, answered before any route: the sender of a number owns them."""

    business_name: str = "groupbot"
    stop_words: list[str] = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"]
    start_words: list[str] = ["START", "UNSTOP", "JOIN"]
    help_words: list[str] = ["HELP", "INFO"]
    stop_template: str | None = None  # none: the built-in confirmation
    start_template: str | None = None
    help_template: str | None = None
    # Keep an opted-out member in the others' participant lists, so that every handset keeps
    # one thread (changing the list starts a new one); they get no message either way.
    keep_opted_out_in_participants: bool = True


class LimitSettings(_Section):
    # Most messages a group's answers may cost in one (UTC) day; past it the group gets one
    # notice and no more answers until the next day. Null: no limit.
    daily_messages: Annotated[int, Field(ge=1)] | None = None


class IntentSettings(_Section):
    examples: list[str] = Field(min_length=1)


class RouteSettings(_Section):
    name: Annotated[str, Field(min_length=1)]
    keywords: list[Annotated[str, Field(min_length=1)]] | None = None
    pattern: str | None = None
    intent: str | None = None
    threshold: Annotated[float, Field(ge=0, le=1)] | None = None  # for an intent route
    handler: str | None = None
    template: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> RouteSettings:
        triggers = [k for k in ("keywords", "pattern", "intent") if getattr(self, k) is not None]
        if len(triggers) != 1:
            raise ValueError(
                "expected exactly one of keywords, pattern or intent, "
                f"got {', '.join(triggers) or 'none'}"
            )
        if self.keywords == []:
            raise ValueError("keywords: expected at least one keyword")
        if self.handler is None and self.template is None:
            raise ValueError("expected a handler, a template, or both")
        if self.threshold is not None and self.intent is None:
            raise ValueError("threshold: only an intent route has a threshold")
        return self


class FallbackSettings(_Section):
    handler: str | None = None
    template: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> FallbackSettings:
        if self.handler is None and self.template is None:
            raise ValueError("expected a handler, a template, or both")
        return self


class Config(_Section):
    bot: BotSettings
    provider: ProviderSettings = ProviderSettings()
    server: ServerSettings = ServerSettings()
    storage: StorageSettings = StorageSettings()
    log: LogSettings = LogSettings()
    handlers: HandlerSettings = HandlerSettings()
    compliance: ComplianceSettings = ComplianceSettings()
    limits: LimitSettings = LimitSettings()
    plugins: list[str] = []
    templates: str = "templates"
    routes: list[RouteSettings] = []
    intents: dict[str, IntentSettings] = {}
    # An intent route answers when the classifier is at least this confident (0-1).
    intent_threshold: Annotated[float, Field(ge=0, le=1)] = 0.35
    fallback: FallbackSettings | None = None
    # Set by load_config: the folder relative paths are resolved against.
    root: Path = Path()
    source: str = DEFAULT_CONFIG

    @property
    def templates_dir(self) -> Path:
        return self.root / self.templates

    @property
    def sqlite_path(self) -> Path:
        path = Path(self.storage.url.removeprefix("sqlite:///"))
        return path if path.is_absolute() else self.root / path


def default_path() -> Path:
    return Path(os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG)


def load_config(path: Path | str | None = None) -> Config:
    """Read, interpolate and validate a config file; raise ConfigError listing every problem."""
    file = Path(path) if path is not None else default_path()
    label = str(file)
    try:
        with file.open(encoding="utf-8") as stream:  # a stream: YAML errors name the file
            raw = load_yaml(stream)
    except OSError as exc:
        raise ConfigError([f"{label}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{label}: not UTF-8 text (byte {exc.start})"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{label}: not valid YAML: {exc}"]) from None
    return parse_config(raw, root=file.resolve().parent, source=label)


INTERNAL_KEYS = frozenset({"root", "source"})  # Config's, set from where the file is


def parse_config(raw: object, *, root: Path, source: str = DEFAULT_CONFIG) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: expected a mapping at the top level"])
    problems: list[str] = []
    data = _interpolate(raw, "", problems, source)
    if problems:
        raise ConfigError(problems)
    if given := sorted(INTERNAL_KEYS & set(data)):
        raise ConfigError([f"{source}: {key}: unknown key" for key in given])
    try:
        return Config.model_validate({**data, "root": root, "source": source})
    except ValidationError as exc:
        errors = exc.errors()
        problems = [_describe(error, source, data) for error in errors]
        without = None
        if all(error["type"] == "extra_forbidden" for error in errors):
            rest = _without(data, [tuple(error["loc"]) for error in errors])
            try:
                without = Config.model_validate({**rest, "root": root, "source": source})
            except ValidationError as again:
                # What the unknown keys hid (a section's own checks run only once its
                # fields are right): said now too.
                problems += [_describe(error, source, rest) for error in again.errors()]
        raise ConfigError(problems, without_unknown_keys=without) from None


def _without(data: Any, paths: list[tuple[Any, ...]]) -> Any:
    """`data` (mappings and lists, as read from YAML) without the keys at `paths`."""
    if isinstance(data, dict):
        dropped = {path[0] for path in paths if len(path) == 1}
        return {
            key: _without(value, [path[1:] for path in paths if len(path) > 1 and path[0] == key])
            for key, value in data.items()
            if key not in dropped
        }
    if isinstance(data, list):
        return [
            _without(value, [path[1:] for path in paths if len(path) > 1 and path[0] == index])
            for index, value in enumerate(data)
        ]
    return data


def _interpolate(value: Any, where: str, problems: list[str], source: str) -> Any:
    if isinstance(value, str):
        if where.rpartition(".")[2] in _FROM_ENVIRONMENT and (
            bare := _BARE_VARIABLE.fullmatch(value)
        ):
            # A shell's $NAME, taken literally here: a token of "$GROUPBOT_API_TOKEN" would be
            # accepted as that very string.
            name = bare["name"]
            problems.append(
                f"{source}: {where}: {value!r} is not read from the environment: write ${{{name}}}"
            )
            return value

        def replace(found: re.Match[str]) -> str:
            name, default = found["name"], found["default"]
            value = os.environ.get(name)
            # As in the shell: `:-` takes the default when the variable is unset or empty.
            if default is not None and not value:
                return default
            if value is not None:
                return value
            problems.append(
                f"{source}: {where}: environment variable {name} is not set "
                f"(write ${{{name}:-}} to allow an empty value)"
            )
            return ""

        return _VARIABLE.sub(replace, value)
    if isinstance(value, dict):
        return {
            k: _interpolate(v, _join(where, str(k)), problems, source) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, f"{where}[{i}]", problems, source) for i, v in enumerate(value)]
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys the config allows at `loc` (list indexes and mapping keys skipped), or none
    when it cannot tell."""
    model: type[_Section] = Config
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            continue  # an index, or a mapping's key: its values are sections of this kind
        section = _section_in(field.annotation)
        if section is None:
            return []
        model = section
    return [key for key in model.model_fields if model is not Config or key not in INTERNAL_KEYS]


def _section_in(annotation: Any) -> type[_Section] | None:
    """The section a field holds, itself or in a list, a mapping or an optional."""
    if isinstance(annotation, type) and issubclass(annotation, _Section):
        return annotation
    for argument in typing.get_args(annotation):
        if (section := _section_in(argument)) is not None:
            return section
    return None


def _describe(error: Any, source: str, data: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    where = field_path(loc) if loc else "(top level)"
    if len(loc) >= 2 and loc[0] == "routes" and isinstance(loc[1], int):
        # Name the route as `groupbot check` does: routes[6] (van).
        routes = data.get("routes")
        route = routes[loc[1]] if isinstance(routes, list) and loc[1] < len(routes) else None
        if isinstance(route, dict) and route.get("name"):
            head = f"routes[{loc[1]}]"
            where = f"{head} ({route['name']}){where[len(head) :]}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
        known = _keys_at(loc[:-1])
        if nearest := difflib.get_close_matches(str(loc[-1]), known, n=1):
            message += f"; did you mean {nearest[0]}?"
    elif (
        error["type"] not in ("missing", "value_error")
        and "input" in error
        and not SECRET_KEYS & {str(part) for part in loc}  # never echo a secret back
    ):
        message = f"{message}, got {error['input']!r}"
        given = error["input"]
        if error["type"] == "string_type" and type(given) in (int, float):
            # YAML reads unquoted digits as a number: a phone number must be quoted.
            message += f" (YAML read it as a number: quote it, '{given}')"
    return f"{source}: {where}: {message}"
