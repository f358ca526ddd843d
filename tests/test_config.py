"""bot.config: interpolation, strict keys, route shapes, paths, and every problem named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.config import Config, load_config, parse_config, without_password
from bot.exceptions import ConfigError

ROOT = Path("/srv/groupbot")
SOURCE = "cfg.yaml"
MINIMAL: dict[str, Any] = {"bot": {"number": "11234567890"}}


def with_(**sections: Any) -> dict[str, Any]:
    """The minimal config plus `sections`."""
    return {**MINIMAL, **sections}


def parse(raw: object) -> Config:
    return parse_config(raw, root=ROOT, source=SOURCE)


def problems_of(raw: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(raw)
    return caught.value.problems


def route(name: str = "r", **fields: Any) -> dict[str, Any]:
    return {"name": name, **fields}


# Interpolation


def test_variable_is_replaced_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GB_TEST_TOKEN", "s3cret")
    config = parse(with_(server={"api_token": "${GB_TEST_TOKEN}"}))
    assert config.server.api_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)  # secrets never print


def test_variable_is_replaced_inside_a_longer_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GB_TEST_HOST", "api.example.com")
    config = parse(with_(provider={"api_url": "https://${GB_TEST_HOST}/v1"}))
    assert config.provider.api_url == "https://api.example.com/v1"


def test_default_is_used_when_the_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GB_TEST_UNSET", raising=False)
    config = parse(with_(server={"host": "${GB_TEST_UNSET:-192.0.2.10}"}))
    assert config.server.host == "192.0.2.10"


def test_environment_wins_over_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GB_TEST_KIND", "vonage")
    monkeypatch.setenv("GB_TEST_KEY", "key")
    monkeypatch.setenv("GB_TEST_SECRET", "secret")
    config = parse(
        with_(
            provider={
                "kind": "${GB_TEST_KIND:-simulator}",
                "api_key": "${GB_TEST_KEY}",
                "api_secret": "${GB_TEST_SECRET}",
                "signature_secret": "${GB_TEST_SECRET}",
            }
        )
    )
    assert config.provider.kind == "vonage"
    assert config.provider.api_key == "key"


def test_empty_default_allows_an_empty_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GB_TEST_UNSET", raising=False)
    config = parse(with_(server={"api_token": "${GB_TEST_UNSET:-}"}))
    assert config.server.api_token.get_secret_value() == ""


def test_default_is_used_when_the_variable_is_set_but_empty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `${VAR:-default}` is the shell's (and Docker Compose's) syntax: the colon means the
    # default also replaces a variable that is set to the empty string.
    monkeypatch.setenv("GB_TEST_EMPTY", "")
    config = parse(with_(provider={"kind": "${GB_TEST_EMPTY:-simulator}"}))
    assert config.provider.kind == "simulator"


def test_interpolated_number_is_converted_to_the_field_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GB_TEST_PORT", "9090")
    config = parse(with_(server={"port": "${GB_TEST_PORT:-8080}"}))
    assert config.server.port == 9090


def test_variable_value_cannot_change_the_document_structure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GB_TEST_TOKEN", "x\nroutes: [{name: evil}]")
    config = parse(with_(server={"api_token": "${GB_TEST_TOKEN}"}))
    assert config.server.api_token.get_secret_value() == "x\nroutes: [{name: evil}]"
    assert config.routes == []


def test_unset_variable_without_default_names_key_path_and_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GB_TEST_MISSING", raising=False)
    problems = problems_of(with_(server={"api_token": "${GB_TEST_MISSING}"}))
    assert len(problems) == 1
    assert problems[0].startswith(f"{SOURCE}: server.api_token: ")
    assert "GB_TEST_MISSING" in problems[0]
    assert "not set" in problems[0]


def test_unset_variable_in_a_list_names_the_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GB_TEST_MISSING", raising=False)
    raw = with_(routes=[route("a", keywords=["ok", "${GB_TEST_MISSING}"], template="t.j2")])
    problems = problems_of(raw)
    assert problems[0].startswith(f"{SOURCE}: routes[0].keywords[1]: ")
    assert "GB_TEST_MISSING" in problems[0]


def test_every_unset_variable_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GB_TEST_A", raising=False)
    monkeypatch.delenv("GB_TEST_B", raising=False)
    problems = problems_of(with_(server={"api_token": "${GB_TEST_A}", "host": "${GB_TEST_B}"}))
    assert len(problems) == 2
    assert any("server.api_token" in p and "GB_TEST_A" in p for p in problems)
    assert any("server.host" in p and "GB_TEST_B" in p for p in problems)


# Unknown keys


def test_unknown_route_key_is_refused_with_its_path() -> None:
    raw = with_(
        routes=[
            route("a", keywords=["a"], template="t.j2"),
            route("b", keyword=["b"], template="t.j2"),
        ]
    )
    assert f"{SOURCE}: routes[1] (b).keyword: unknown key; did you mean keywords?" in problems_of(
        raw
    )


def test_unknown_top_level_key_is_refused_with_its_name() -> None:
    assert problems_of(with_(colour="blue")) == [f"{SOURCE}: colour: unknown key"]


def test_unknown_section_key_is_refused_with_its_path() -> None:
    assert f"{SOURCE}: provider.region: unknown key" in problems_of(
        with_(provider={"region": "us"})
    )


def test_an_unknown_key_within_a_mapping_of_sections_is_matched_to_its_own_keys() -> None:
    problems = problems_of(with_(intents={"book": {"examples": ["a"], "exampels": ["b"]}}))

    assert f"{SOURCE}: intents.book.exampels: unknown key; did you mean examples?" in problems


def test_the_keys_set_from_the_file_s_place_are_neither_suggested_nor_accepted() -> None:
    for typo in ("rot", "roots", "sourc"):
        [problem] = problems_of(with_(**{typo: "x"}))
        assert problem.startswith(f"{SOURCE}: {typo}: unknown key")
        assert "root?" not in problem
        assert "source?" not in problem
    assert problems_of(with_(root="/etc", source="x")) == [
        f"{SOURCE}: root: unknown key",
        f"{SOURCE}: source: unknown key",
    ]


def test_every_unknown_key_is_reported_at_once() -> None:
    problems = problems_of(
        {"bot": {"number": "11234567890", "nmber": "x"}, "server": {"prot": 1}, "extra": 1}
    )
    assert f"{SOURCE}: bot.nmber: unknown key; did you mean number?" in problems
    assert f"{SOURCE}: server.prot: unknown key; did you mean port?" in problems
    assert f"{SOURCE}: extra: unknown key" in problems


def test_a_config_wrong_only_by_unknown_keys_is_also_read_without_them() -> None:
    hi = route("r", keywords=["hi"], template="hi.txt.j2", x=1)
    raw = with_(server={"prot": 1, "port": 9000}, routes=[hi])

    with pytest.raises(ConfigError) as caught:
        parse(raw)

    without = caught.value.without_unknown_keys
    assert isinstance(without, Config)
    assert without.server.port == 9000
    assert [r.keywords for r in without.routes] == [["hi"]]


@pytest.mark.parametrize("setting", ["rate_limit_per_second", "rate_limit_per_number"])
def test_a_send_rate_too_slow_to_keep_is_refused(setting: str) -> None:
    problems = problems_of(with_(provider={setting: 0.04}))
    assert problems == [
        f"{SOURCE}: provider.{setting}: expected at least 0.05 sends a second (one every "
        "20 s), or null for no limit, got 0.04"
    ]
    assert parse(with_(provider={setting: 0.05})).provider.model_dump()[setting] == 0.05


def test_what_unknown_keys_hid_in_their_own_section_is_said_too() -> None:
    both = route("r", keywords=["hi"], pattern="^hi$", template="t.j2", colour="red")

    problems = problems_of(with_(routes=[both]))

    assert len(problems) == 2
    assert problems[0].endswith("routes[0] (r).colour: unknown key")
    assert "routes[0] (r)" in problems[1]
    assert "keywords" in problems[1]
    assert "pattern" in problems[1]


def test_a_config_with_other_problems_too_is_not_read_without_its_unknown_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(with_(server={"prot": 1, "port": "not a port"}))

    assert len(caught.value.problems) == 2
    assert caught.value.without_unknown_keys is None


# Route shapes


def test_route_with_both_keywords_and_pattern_is_refused_naming_it() -> None:
    raw = with_(
        routes=[
            route("a", keywords=["a"], template="t.j2"),
            route("b", keywords=["b"], pattern="^b", template="t.j2"),
        ]
    )
    problems = problems_of(raw)
    assert len(problems) == 1
    assert problems[0].startswith(f"{SOURCE}: routes[1] (b): ")
    assert "keywords, pattern" in problems[0]


def test_route_with_no_trigger_is_refused_naming_it() -> None:
    problems = problems_of(with_(routes=[route("a", template="t.j2")]))
    assert len(problems) == 1
    assert problems[0].startswith(f"{SOURCE}: routes[0] (a): ")
    assert "got none" in problems[0]


def test_route_with_neither_handler_nor_template_is_refused_naming_it() -> None:
    raw = with_(
        routes=[
            route("a", keywords=["a"], template="t.j2"),
            route("b", pattern="^b"),
        ]
    )
    problems = problems_of(raw)
    assert len(problems) == 1
    assert problems[0].startswith(f"{SOURCE}: routes[1] (b): ")
    assert "handler" in problems[0]
    assert "template" in problems[0]


def test_route_with_an_empty_keyword_list_is_refused() -> None:
    problems = problems_of(with_(routes=[route("a", keywords=[], template="t.j2")]))
    assert len(problems) == 1
    assert problems[0].startswith(f"{SOURCE}: routes[0] (a): ")
    assert "at least one keyword" in problems[0]


def test_route_without_a_name_is_refused() -> None:
    problems = problems_of(with_(routes=[{"keywords": ["a"], "template": "t.j2"}]))
    assert problems[0].startswith(f"{SOURCE}: routes[0].name: ")


def test_fallback_with_neither_handler_nor_template_is_refused() -> None:
    problems = problems_of(with_(fallback={}))
    assert problems[0].startswith(f"{SOURCE}: fallback: ")


def test_valid_routes_keep_their_order_and_fields() -> None:
    config = parse(
        with_(
            routes=[
                route("one", keywords=["a", "b c"], handler="h"),
                route("two", pattern="^x", template="t.j2"),
            ]
        )
    )
    assert [r.name for r in config.routes] == ["one", "two"]
    assert config.routes[0].keywords == ["a", "b c"]
    assert config.routes[1].pattern == "^x"
    assert config.routes[1].handler is None


# Paths


def test_relative_sqlite_path_and_templates_resolve_against_the_root() -> None:
    config = parse(with_(storage={"url": "sqlite:///var/groupbot.db"}, templates="tpl"))
    assert config.sqlite_path == ROOT / "var" / "groupbot.db"
    assert config.templates_dir == ROOT / "tpl"


def test_absolute_sqlite_path_and_templates_stay_absolute() -> None:
    config = parse(with_(storage={"url": "sqlite:////data/bot.db"}, templates="/opt/tpl"))
    assert config.sqlite_path == Path("/data/bot.db")
    assert config.templates_dir == Path("/opt/tpl")


def test_storage_url_other_than_sqlite_is_refused() -> None:
    problems = problems_of(with_(storage={"url": "mysql://db/bot"}))
    assert problems[0].startswith(f"{SOURCE}: storage.url: ")


def test_load_config_resolves_relative_paths_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "deploy"
    folder.mkdir()
    (folder / "bot.yaml").write_text(
        'bot: {number: "11234567890"}\n'
        'storage: {url: "sqlite:///state/bot.db"}\n'
        "templates: my-templates\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)  # a relative config path, read from another folder
    config = load_config("deploy/bot.yaml")
    assert config.sqlite_path == folder.resolve() / "state" / "bot.db"
    assert config.templates_dir == folder.resolve() / "my-templates"
    assert config.source == "deploy/bot.yaml"


def test_load_config_keeps_absolute_paths(tmp_path: Path) -> None:
    file = tmp_path / "config.yaml"
    file.write_text(
        'bot: {number: "11234567890"}\n'
        "storage: {url: 'sqlite:////var/lib/groupbot/bot.db'}\n"
        f"templates: {tmp_path / 'elsewhere'}\n",
        encoding="utf-8",
    )
    config = load_config(file)
    assert config.sqlite_path == Path("/var/lib/groupbot/bot.db")
    assert config.templates_dir == tmp_path / "elsewhere"


def test_load_config_reads_the_path_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "from-env.yaml"
    file.write_text('bot: {number: "+1 (123) 456-7899"}\n', encoding="utf-8")
    monkeypatch.setenv("GROUPBOT_CONFIG", str(file))
    assert load_config().bot.number == "11234567899"


def test_load_config_interpolates_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GB_TEST_NUMBER", "11234567891")
    file = tmp_path / "config.yaml"
    file.write_text('bot: {number: "${GB_TEST_NUMBER}"}\n', encoding="utf-8")
    assert load_config(file).bot.number == "11234567891"


# Numbers and providers


@pytest.mark.parametrize("number", ["+1 (123) 456-7890", "0011234567890", "1 123 456 7890"])
def test_bot_number_is_normalised(number: str) -> None:
    assert parse({"bot": {"number": number}}).bot.number == "11234567890"


def test_invalid_bot_number_is_refused_naming_bot_number() -> None:
    problems = problems_of({"bot": {"number": "not a number"}})
    assert len(problems) == 1
    assert problems[0].startswith(f"{SOURCE}: bot.number: ")
    assert "'not a number'" in problems[0]


def test_a_number_yaml_read_as_a_number_is_refused_with_how_to_quote_it() -> None:
    assert problems_of({"bot": {"number": 12025550100}}) == [
        f"{SOURCE}: bot.number: Input should be a valid string, got 12025550100 (YAML read it "
        "as a number: quote it, '12025550100')"
    ]
    # Not said of what YAML reads as something else: true is no number.
    [problem] = problems_of({"bot": {"number": True}})
    assert "quote it" not in problem


@pytest.mark.parametrize(
    ("api_url", "expected"),
    [
        ("api.nexmo.com", "expected an https:// URL"),
        ("ftp://api.nexmo.com", "expected an https:// URL"),
        ("https://", "expected an https:// URL"),
        ("https://api.nexmo.com:port", "expected a port number"),
        ("https://user:pw@api.nexmo.com", "no user or password"),
        ("https://api.nexmo.com/?x=1", "scheme, host and path only"),
        ("https://api.nexmo.com/base?", "scheme, host and path only"),
        ("https://proxy.example.com/vonage proxy", "ASCII without spaces"),
        ("https://proxy.example.com/café", "ASCII without spaces"),
        ("https://api.nexmo.com/a\x00b", "control characters"),
        ("https://api.nexmo.com/a\x01b", "control characters"),
        ("https://api.nexmo.com:0", "a port from 1 to 65535"),
        ("https://api.nexmo.com%20", "a host name or IP address"),
        ("http://junk[::1]:8091", "a host name or IP address"),
        ("http://[::1]junk:8091", "a host name or IP address"),
        ("https://[v1.fe]", "a host name or IP address"),
        ("https://a..b", "a host name or IP address"),
        ("https://-", "a host name or IP address"),
        ("https://api.nexmo.com/v1/messages", "base URL (groupbot adds /v1/messages)"),
    ],
)
def test_provider_api_url_must_be_an_http_url(api_url: str, expected: str) -> None:
    problems = problems_of(with_(provider={"api_url": api_url}))
    assert len(problems) == 1
    assert problems[0].startswith(f"{SOURCE}: provider.api_url: ")
    assert expected in problems[0]
    assert "pw" not in problems[0]


@pytest.mark.parametrize(
    "api_url",
    [
        "https://api.nexmo.com",
        "http://127.0.0.1:8091",
        "https://[::1]:8443/base",
        "https://API.Nexmo.com/",
        "http://vonage_mock:8080",
        "https://api.nexmo.com./",
    ],
)
def test_provider_api_url_accepts_http_and_https(api_url: str) -> None:
    assert parse(with_(provider={"api_url": api_url})).provider.api_url == api_url


def test_missing_bot_section_is_refused_naming_it() -> None:
    problems = problems_of({"routes": []})
    assert problems[0].startswith(f"{SOURCE}: bot: ")


def test_vonage_provider_without_credentials_is_refused() -> None:
    problems = problems_of(with_(provider={"kind": "vonage"}))
    assert len(problems) == 1
    assert problems[0].startswith(f"{SOURCE}: provider: ")
    assert "application_id" in problems[0]
    assert "api_key" in problems[0]


def test_vonage_provider_with_only_half_the_jwt_credentials_is_refused() -> None:
    problems = problems_of(with_(provider={"kind": "vonage", "application_id": "app"}))
    assert problems[0].startswith(f"{SOURCE}: provider: ")


@pytest.mark.parametrize(
    "credentials",
    [
        {"application_id": "app", "private_key": "-----BEGIN PRIVATE KEY-----"},
        {"api_key": "key", "api_secret": "secret"},
    ],
)
def test_vonage_provider_with_either_kind_of_credentials_is_accepted(
    credentials: dict[str, str],
) -> None:
    config = parse(with_(provider={"kind": "vonage", "signature_secret": "s", **credentials}))
    assert config.provider.kind == "vonage"


def test_vonage_provider_without_a_signature_secret_is_refused_unless_switched_off() -> None:
    jwt = {"kind": "vonage", "application_id": "app", "private_key": "pem"}
    problems = problems_of(with_(provider=jwt))
    assert problems == [
        f"{SOURCE}: provider: signature_secret is required to verify Vonage's signed webhooks "
        "(from the dashboard's settings); set verify_signatures: false only if something in "
        "front of the bot verifies them"
    ]
    assert parse(with_(provider={**jwt, "verify_signatures": False})).provider.kind == "vonage"


def test_simulator_provider_needs_no_credentials() -> None:
    assert parse(MINIMAL).provider.kind == "simulator"


def test_unknown_provider_kind_is_refused_naming_provider_kind() -> None:
    problems = problems_of(with_(provider={"kind": "twilio"}))
    assert problems[0].startswith(f"{SOURCE}: provider.kind: ")


# Files


def test_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{missing}: cannot read")


def test_invalid_yaml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    file = tmp_path / "broken.yaml"
    file.write_text("bot: {number: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(file)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{file}: not valid YAML")


def test_file_that_is_not_utf8_is_a_config_error_naming_it(tmp_path: Path) -> None:
    file = tmp_path / "latin1.yaml"
    file.write_bytes('bot: {number: "11234567890"}\n# café\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(file)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{file}: ")


def test_empty_file_is_a_config_error(tmp_path: Path) -> None:
    file = tmp_path / "empty.yaml"
    file.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(file)
    assert "expected a mapping at the top level" in caught.value.problems[0]


def test_top_level_list_is_refused() -> None:
    assert problems_of([MINIMAL]) == [f"{SOURCE}: expected a mapping at the top level"]


def test_config_error_message_lists_every_problem_one_a_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse({"bot": {"number": "junk"}, "extra": 1})
    assert str(caught.value).splitlines() == caught.value.problems
    assert len(caught.value.problems) == 2


def test_shipped_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROUPBOT_PROVIDER", raising=False)
    config = load_config(Path(__file__).resolve().parent.parent / "config.yaml")
    assert config.bot.number == "11234567890"
    assert config.provider.kind == "simulator"
    assert {"ticket", "escalate", "update"} <= {r.name for r in config.routes}


def test_yes_no_on_off_stay_words(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        'bot: {number: "11234567890"}\n'
        "routes: [{name: lights, keywords: [on, off, yes], template: t.j2}]\n"
        "intents: {no: {examples: [nope, no thanks]}}\n"
        "log: {mask_numbers: true}\n"
    )

    config = load_config(path)

    assert config.routes[0].keywords == ["on", "off", "yes"]
    assert list(config.intents) == ["no"]
    assert config.log.mask_numbers is True


def test_an_error_about_a_secret_never_shows_its_value() -> None:
    problems = problems_of(with_(server={"api_token": ["s3cr3t-value"]}))
    assert problems[0].startswith(f"{SOURCE}: server.api_token: ")
    assert "s3cr3t-value" not in problems[0]


def test_the_bot_number_must_reach_group_mms() -> None:
    problems = problems_of({"bot": {"number": "447700900000"}})
    assert problems == [
        f"{SOURCE}: bot.number: expected a US or Canadian number (+1): group MMS reaches only "
        "those, got 447700900000"
    ]


def test_a_bare_dollar_variable_is_refused_with_how_to_write_it() -> None:
    # Taken literally it would be accepted: a bearer token of "$GROUPBOT_API_TOKEN".
    assert problems_of(with_(server={"api_token": "$GROUPBOT_API_TOKEN"})) == [
        f"{SOURCE}: server.api_token: '$GROUPBOT_API_TOKEN' is not read from the environment: "
        "write ${GROUPBOT_API_TOKEN}"
    ]
    # A dollar inside a value is the value's own; and so is a whole $NAME where a value is
    # not usually taken from the environment (a ticker as a keyword).
    named = parse(with_(compliance={"business_name": "Fix-It $5 Repairs"}))
    assert named.compliance.business_name == "Fix-It $5 Repairs"
    ticker = parse(with_(routes=[route("stock", keywords=["$TSLA"], template="t.j2")]))
    assert ticker.routes[0].keywords == ["$TSLA"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bot:hunter2@db:5432/gb", "postgresql://bot:***@db:5432/gb"),
        (
            "postgresql://bot@db/gb?password=hunter2&sslmode=require",  # asyncpg takes this too
            "postgresql://bot@db/gb?password=***&sslmode=require",
        ),
        ("postgresql://bot:hunter2@[::1/gb", "postgresql://bot:***@[::1/gb"),  # unparsable
        ("postgres://bot:pa#ss/w?rd@db/gb", "postgres://bot:***@db/gb"),  # not encoded
        ("postgresql://bot@db/gb?sslpassword=key", "postgresql://bot@db/gb?sslpassword=***"),
        ("sqlite:///var/groupbot.db", "sqlite:///var/groupbot.db"),
    ],
)
def test_a_store_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert without_password(url) == shown


def test_max_attempts_fits_the_stores_integer() -> None:
    # Past it, PostgreSQL's claim would fail on every call: the outbox would stop.
    [problem] = problems_of(with_(provider={"retry": {"max_attempts": 3_000_000_000}}))
    assert problem.startswith(f"{SOURCE}: provider.retry.max_attempts: ")
    assert "2147483647" in problem
    assert (
        parse(with_(provider={"retry": {"max_attempts": None}})).provider.retry.max_attempts is None
    )
