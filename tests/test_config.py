"""Loading `gateway.yaml` (README: Configuration): what a user writes, what they get, and what every
mistake says."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from openapi_schema_validator import OAS31Validator

from gateway.config import Config, IdentityHeaders, json_schema, load, parse, parse_duration, resolve_path
from gateway.errors import ConfigError

from .support.processes import REPO

SCHEMA_FILE = REPO / "config" / "gateway.schema.json"
REGENERATE = (
    ".venv/bin/python -c \"from gateway.config import json_schema; print(json_schema(), end='')\""
    " > config/gateway.schema.json"
)
# shaped like a real client secret (40 hex), so that finding it in any output means a leak
SECRET = "4f1c2b8e9d0a7c6b5e4d3c2b1a0f9e8d7c6b5a49"

# The example configuration of the product's design, verbatim: every value in it is also the default
DESIGN_EXAMPLE = """\
server:
  host: 0.0.0.0
  port: 8080
  workers: 1                # processes sharing the port; "auto" = CPU count
  tls: null                 # {cert_file: ..., key_file: ...}
  trusted_proxies: []       # CIDRs whose X-Forwarded-For is believed for the client address
  shutdown_timeout: 30s     # SIGTERM: stop accepting, let in-flight requests finish
  max_body_size: null       # bytes; 413 beyond (streamed, never buffered whole)
  control_prefix: /_gateway # the gateway's own endpoints on the main port (§5)
admin:                      # separate listener, loopback by default; null disables it
  host: 127.0.0.1
  port: 9090
github:
  api_url: https://api.github.com   # GHES: https://HOSTNAME/api/v3
  apps:                              # tried in order; a 404 from one means "try the next"
    - client_id: Iv1.8a61f9b3a7aba766
      client_secret: ${GITHUB_CLIENT_SECRET}
  check_method: token       # token: POST /applications/{client_id}/token (body access_token)
                            # legacy: GET /applications/{client_id}/tokens/{access_token} (old GHES)
  timeout: 5s
  retries: 1                # on connection errors and 5xx only, with jittered backoff
  max_concurrent_checks: 32 # cap on check calls in flight; the rest wait (a flood never spams GitHub)
cache:
  ttl: 5m                   # never past the token's own expires_at
  negative_ttl: 30s         # how long a 404 (invalid token) is remembered
  max_entries: 100000
  stale_if_error: 0s        # serve a cached identity this long past ttl while GitHub is unreachable
  redis_url: null           # redis://host:6379/0 : shared cache across workers and replicas
identity_headers:           # header name for each identity field; null omits it
  user: X-Auth-User
  user_id: X-Auth-User-Id
  scopes: X-Auth-Scopes     # comma-separated, GitHub's order; empty for GitHub App user tokens
  expires_at: X-Auth-Token-Expires-At   # omitted when the token does not expire
  client_id: X-Auth-Client-Id
  groups: X-Auth-Groups     # the configured organisations and teams (§10) the caller is an active
                            #   member of, comma-separated: "acme,acme/sre"; omitted when none are configured
pass_authorization: false   # forward the caller's Authorization header upstream
rate_limit:
  failed_auth_per_minute: 30  # per client address; 429 with Retry-After beyond; 0 disables
routes:                     # longest matching path prefix wins, on whole segments
  - path: /                 # "/api" matches /api and /api/x, never /apix
    upstream: http://127.0.0.1:8081
    auth: required          # required | none | optional (no credentials: forwarded anonymously;
                            #   credentials present: they must be valid)
    scopes: []              # all required; GitHub's scope hierarchy applies (repo ⊇ public_repo …)
    users: []               # allowed logins (empty = anyone with a valid token)
    user_ids: []
    methods: []             # allowed methods (empty = any)
    skip_auth_preflight: false  # let CORS preflight OPTIONS through without credentials
    strip_prefix: false
    timeout: 60s            # upstream response timeout
    upstream_token: null    # {target: org-or-user, repositories: [...], permissions: {...}}: send
                            #   upstream a scoped token minted from the caller's GitHub App user token
                            #   instead of the caller's
"""


def route(path: str = "/", **keys: Any) -> dict[str, Any]:
    return {"path": path, "upstream": "http://127.0.0.1:8081", **keys}


def minimal(**sections: Any) -> dict[str, Any]:
    """The smallest valid config as a YAML tree, with `sections` replacing its top-level keys."""
    tree: dict[str, Any] = {
        "github": {"apps": [{"client_id": "Iv1.8a61f9b3a7aba766", "client_secret": SECRET}]},
        "routes": [route()],
    }
    tree.update(sections)
    return tree


def with_server(**keys: Any) -> dict[str, Any]:
    return minimal(server=keys)


def with_github(**keys: Any) -> dict[str, Any]:
    return minimal(github={"apps": [{"client_id": "Iv1.8a61f9b3a7aba766", "client_secret": SECRET}], **keys})


def with_routes(*routes: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return minimal(routes=list(routes), **sections)


def load_tree(tree: dict[str, Any] | str, env: dict[str, str] | None = None) -> Config:
    text = tree if isinstance(tree, str) else yaml.safe_dump(tree, sort_keys=False)
    return parse(text, source="gateway.yaml", env={} if env is None else env)


def problems(tree: dict[str, Any] | str, env: dict[str, str] | None = None) -> list[str]:
    """The lines of the ConfigError the config raises (failing the test if it loads)."""
    with pytest.raises(ConfigError) as info:
        load_tree(tree, env)
    return list(info.value.problems)


def only_problem(tree: dict[str, Any] | str, env: dict[str, str] | None = None) -> str:
    lines = problems(tree, env)
    assert len(lines) == 1, lines
    return lines[0]


def assert_says(line: str, path: str, *fragments: str) -> None:
    """`line` names the file and `path`, says what was expected, and contains each fragment."""
    assert line.startswith(f"gateway.yaml: {path}: "), line
    assert "expected" in line.removeprefix(f"gateway.yaml: {path}: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)


# ---------------------------------------------------------------------------------------------------
# The documented example and its defaults


def test_design_example_loads_with_every_documented_value() -> None:
    config = load_tree(DESIGN_EXAMPLE, env={"GITHUB_CLIENT_SECRET": SECRET})

    server = config.server
    assert (server.host, server.port, server.workers, server.worker_count) == ("0.0.0.0", 8080, 1, 1)
    assert (server.tls, server.trusted_proxies, server.max_body_size) == (None, (), None)
    assert (server.shutdown_timeout, server.control_prefix) == (30.0, "/_gateway")
    assert config.admin is not None
    assert (config.admin.host, config.admin.port) == ("127.0.0.1", 9090)
    github = config.github
    assert github.api_url == "https://api.github.com"
    assert [a.client_id for a in github.apps] == ["Iv1.8a61f9b3a7aba766"]
    assert github.apps[0].client_secret.get_secret_value() == SECRET
    assert (github.check_method, github.timeout, github.retries, github.max_concurrent_checks) == (
        "token",
        5.0,
        1,
        32,
    )
    cache = config.cache
    assert (cache.ttl, cache.negative_ttl, cache.max_entries, cache.stale_if_error) == (
        300.0,
        30.0,
        100000,
        0.0,
    )
    assert cache.redis_url is None
    assert config.identity_headers.model_dump() == {
        "user": "X-Auth-User",
        "user_id": "X-Auth-User-Id",
        "scopes": "X-Auth-Scopes",
        "expires_at": "X-Auth-Token-Expires-At",
        "client_id": "X-Auth-Client-Id",
        "groups": "X-Auth-Groups",
    }
    assert config.pass_authorization is False
    assert config.rate_limit.failed_auth_per_minute == 30
    (only,) = config.routes
    assert (only.path, only.upstream, only.auth, only.timeout) == (
        "/",
        "http://127.0.0.1:8081",
        "required",
        60.0,
    )
    assert (only.scopes, only.users, only.user_ids, only.methods) == ((), (), (), ())
    assert (only.skip_auth_preflight, only.strip_prefix, only.upstream_token) == (False, False, None)


def test_a_config_of_github_and_routes_only_takes_the_documented_defaults() -> None:
    documented = load_tree(DESIGN_EXAMPLE, env={"GITHUB_CLIENT_SECRET": SECRET})

    assert load_tree(minimal()) == documented


def test_admin_null_disables_the_admin_listener() -> None:
    assert load_tree(minimal(admin=None)).admin is None


def test_an_empty_file_reports_both_required_sections() -> None:
    lines = problems("")

    assert len(lines) == 2, lines
    assert_says(lines[0], "github", "required")
    assert_says(lines[1], "routes", "required")


# ---------------------------------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("0s", 0.0),
        ("7", 7.0),
        (5, 5.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_durations_are_seconds_or_a_number_with_a_unit(written: object, seconds: float) -> None:
    assert parse_duration(written) == seconds
    assert load_tree(minimal(cache={"ttl": written})).cache.ttl == seconds
    assert load_tree(with_routes(route(timeout=written))).routes[0].timeout == seconds


@pytest.mark.parametrize("written", ["5 minutes", "1d", "5sec", "s", "", "ms5", "1h30m", True, [5], {"s": 5}])
def test_a_duration_in_another_form_is_an_error_showing_the_accepted_forms(written: object) -> None:
    line = only_problem(minimal(cache={"ttl": written}))

    assert_says(line, "cache.ttl")
    if not isinstance(written, list | dict):
        assert "500ms, 5s, 10m, 1h" in line


@pytest.mark.parametrize("written", [-1, -0.5, "-5s", "-1h"])
def test_a_negative_duration_is_an_error(written: object) -> None:
    assert_says(only_problem(minimal(cache={"negative_ttl": written})), "cache.negative_ttl", repr(written))


@pytest.mark.parametrize("written", [".inf", ".nan"])
def test_an_infinite_or_nan_duration_is_an_error(written: str) -> None:
    line = only_problem(f"{yaml.safe_dump(minimal())}server:\n  shutdown_timeout: {written}\n")

    assert_says(line, "server.shutdown_timeout", "finite")


def test_github_timeout_must_be_greater_than_zero() -> None:
    assert_says(only_problem(with_github(timeout="0s")), "github.timeout", "greater than zero")


def test_server_header_timeout_is_10s_unless_set_and_null_turns_it_off() -> None:
    assert load_tree(minimal()).server.header_timeout == 10.0
    assert load_tree(with_server(header_timeout="300ms")).server.header_timeout == 0.3
    assert load_tree(with_server(header_timeout=None)).server.header_timeout is None


def test_server_header_timeout_must_be_greater_than_zero() -> None:
    line = only_problem(with_server(header_timeout=0))
    assert_says(line, "server.header_timeout", "greater than zero")


def test_server_connection_bounds_default_as_design_says() -> None:
    server = load_tree(minimal()).server
    assert (server.keepalive_timeout, server.body_timeout) == (75.0, 60.0)
    assert (server.max_header_size, server.max_connections) == (65536, 10000)
    assert load_tree(with_server(body_timeout=None)).server.body_timeout is None


@pytest.mark.parametrize(
    ("key", "written", "fragment"),
    [
        ("keepalive_timeout", 0, "greater than zero"),
        ("body_timeout", "0s", "greater than zero"),
        ("max_header_size", 100, "at least 1024"),
        ("max_connections", 0, "at least 1"),
    ],
)
def test_server_connection_bounds_refuse_what_would_shut_every_client_out(
    key: str, written: object, fragment: str
) -> None:
    assert_says(only_problem(with_server(**{key: written})), f"server.{key}", fragment)


# ---------------------------------------------------------------------------------------------------
# ${VAR} and ${VAR:-default}

INTERPOLATED = """\
server:
  port: ${PORT:-8080}
  workers: ${WORKERS:-auto}
github:
  api_url: https://${GHE_HOST}/api/v3
  apps:
    - client_id: ${CLIENT_ID:-Iv1.8a61f9b3a7aba766}
      client_secret: ${GITHUB_CLIENT_SECRET}
routes:
  - path: /
    upstream: http://${UPSTREAM_HOST:-127.0.0.1}:${UPSTREAM_PORT:-8081}/base
    users: [octocat, "${ADMIN_LOGIN}"]
    user_ids: ["${ADMIN_ID:-583231}"]
"""


def test_variables_are_replaced_in_nested_values_and_in_lists() -> None:
    env = {"GITHUB_CLIENT_SECRET": SECRET, "GHE_HOST": "ghe.example.com", "ADMIN_LOGIN": "monalisa"}

    config = load_tree(INTERPOLATED, env=env)

    assert config.github.api_url == "https://ghe.example.com/api/v3"
    assert config.github.apps[0].client_secret.get_secret_value() == SECRET
    assert config.routes[0].users == ("octocat", "monalisa")


def test_defaults_apply_to_unset_variables_and_become_typed_values() -> None:
    env = {"GITHUB_CLIENT_SECRET": SECRET, "GHE_HOST": "ghe.example.com", "ADMIN_LOGIN": "monalisa"}

    config = load_tree(INTERPOLATED, env=env)

    assert (config.server.port, config.server.workers) == (8080, "auto")
    assert config.github.apps[0].client_id == "Iv1.8a61f9b3a7aba766"
    assert config.routes[0].upstream == "http://127.0.0.1:8081/base"
    assert config.routes[0].user_ids == (583231,)


def test_a_set_variable_wins_over_its_default() -> None:
    env = {
        "GITHUB_CLIENT_SECRET": SECRET,
        "GHE_HOST": "ghe.example.com",
        "ADMIN_LOGIN": "monalisa",
        "PORT": "9000",
        "WORKERS": "4",
        "UPSTREAM_HOST": "svc.internal",
        "UPSTREAM_PORT": "80",
    }

    config = load_tree(INTERPOLATED, env=env)

    assert (config.server.port, config.server.workers) == (9000, 4)
    assert config.routes[0].upstream == "http://svc.internal:80/base"


def test_a_default_also_applies_to_a_variable_set_empty_as_in_the_shell() -> None:
    tree = minimal(cache={"redis_url": "${REDIS_URL:-redis://127.0.0.1:6379/0}"})

    assert load_tree(tree, env={"REDIS_URL": ""}).cache.redis_url == "redis://127.0.0.1:6379/0"


def test_an_empty_default_is_a_value() -> None:
    tree = with_routes(route(users=["${EXTRA:-}octocat"]))

    assert load_tree(tree).routes[0].users == ("octocat",)


def test_a_value_from_the_environment_is_not_interpolated_again_and_a_bare_dollar_is_kept() -> None:
    tree = minimal(github={"apps": [{"client_id": "Iv1.abc", "client_secret": "${SECRET}"}]})

    config = load_tree(tree, env={"SECRET": "pa$$word-${NOT_A_VAR}"})

    assert config.github.apps[0].client_secret.get_secret_value() == "pa$$word-${NOT_A_VAR}"


def test_the_process_environment_is_used_when_no_env_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TEST_UPSTREAM", "http://10.1.2.3:8000")
    text = yaml.safe_dump(with_routes(route(upstream="${GATEWAY_TEST_UPSTREAM}")))

    assert parse(text, source="gateway.yaml").routes[0].upstream == "http://10.1.2.3:8000"


def test_an_unset_variable_without_default_is_an_error_naming_it_and_its_key_path() -> None:
    env = {"GITHUB_CLIENT_SECRET": SECRET, "GHE_HOST": "ghe.example.com"}

    line = only_problem(INTERPOLATED, env=env)

    assert_says(line, "routes[0].users[1]", "ADMIN_LOGIN")


def test_every_unset_variable_is_reported_once_and_nothing_else_about_its_key() -> None:
    tree = with_server(port="${PORT}", shutdown_timeout="${GRACE}")

    lines = problems(tree)

    assert len(lines) == 2, lines
    assert_says(lines[0], "server.port", "environment variable PORT")
    assert_says(lines[1], "server.shutdown_timeout", "environment variable GRACE")


# ---------------------------------------------------------------------------------------------------
# Unknown keys


@pytest.mark.parametrize(
    ("tree", "path", "suggestion"),
    [
        ({**minimal(), "servers": {"port": 1}}, "servers", "did you mean server?"),
        (with_server(prot=8080), "server.prot", "did you mean port?"),
        (
            with_routes(route(), route("/a"), route("/b", upstrem="http://x")),
            "routes[2].upstrem",
            "upstream?",
        ),
        (with_server(tls={"cert_file": "c", "key_file": "k", "ca_file": "ca"}), "server.tls.ca_file", ""),
        (
            minimal(github={"apps": [{"client_id": "Iv1.abc", "client_secret": SECRET, "app_id": 1}]}),
            "github.apps[0].app_id",
            "",
        ),
        (
            with_routes(route(upstream_token={"target": "org", "scope": "x"})),
            "routes[0].upstream_token.scope",
            "",
        ),
    ],
)
def test_an_unknown_key_at_any_level_is_an_error_naming_its_path(
    tree: dict[str, Any], path: str, suggestion: str
) -> None:
    line = only_problem(tree)

    assert_says(line, path, "unknown key", suggestion)


def test_an_unknown_key_error_lists_the_keys_allowed_there() -> None:
    line = only_problem(minimal(admin={"host": "127.0.0.1", "bind": "x"}))

    assert_says(line, "admin.bind", "expected one of host, port")


# ---------------------------------------------------------------------------------------------------
# Every problem at once, one line each


def test_several_problems_are_reported_at_once_in_one_error_one_line_each() -> None:
    tree = minimal(
        server={"port": "eighty", "bogus": True},
        github={"apps": [{"client_id": "Iv1.abc", "client_secret": SECRET}], "check_method": "post"},
        routes=[route(), route("/api", upstream="ftp://files.internal", auth="maybe")],
    )
    tree["cache"] = {"ttl": "${TTL}"}

    with pytest.raises(ConfigError) as info:
        load_tree(tree)

    lines = info.value.problems
    assert len(lines) == 6, lines
    assert_says(lines[0], "server.port", "whole number", "'eighty'")
    assert_says(lines[1], "server.bogus", "unknown key")
    assert_says(lines[2], "github.check_method", "'token' or 'legacy'", "'post'")
    assert_says(lines[3], "cache.ttl", "TTL")
    assert_says(lines[4], "routes[1].upstream", "http://", "'ftp://files.internal'")
    assert_says(lines[5], "routes[1].auth", "'required', 'none' or 'optional'", "'maybe'")
    assert str(info.value) == "\n".join(lines)


def test_problems_in_list_items_come_in_item_order() -> None:
    tree = with_routes(*[route(f"/r{i}", timeout="soon") for i in range(12)])

    lines = problems(tree)

    assert [line.split(":")[1].strip() for line in lines] == [f"routes[{i}].timeout" for i in range(12)]


def test_problems_name_the_file_they_were_read_from(tmp_path: Path) -> None:
    file = tmp_path / "prod.yaml"
    file.write_text(yaml.safe_dump(with_server(port=-1)), encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load(file)

    assert info.value.problems == (f"{file}: server.port: expected a number of at least 0, got -1",)


# ---------------------------------------------------------------------------------------------------
# Files that are not a config at all


def test_a_yaml_syntax_error_is_one_problem_with_its_line() -> None:
    line = only_problem("server:\n  port: 8080\nroutes: [\n  {path: /}\n  oops: 1\n")

    assert re.match(r"gateway\.yaml: line \d+, column \d+: expected valid YAML", line), line


def test_a_yaml_error_never_quotes_the_line_it_is_on() -> None:
    text = f"github:\n  apps:\n    - client_id: Iv1.abc\n      client_secret: '{SECRET}\nroutes: []\n"

    line = only_problem(text)

    assert line.startswith("gateway.yaml: line "), line
    assert SECRET not in line
    assert "\n" not in line


def test_a_key_given_twice_in_one_mapping_is_an_error_instead_of_silently_winning() -> None:
    text = yaml.safe_dump(minimal(routes=[])).replace("routes: []\n", "")
    text += "routes:\n  - path: /admin\n    upstream: http://x\n    auth: required\n    auth: none\n"

    line = only_problem(text)

    assert re.match(
        r"gateway\.yaml: line \d+, column 5: expected valid YAML, found key 'auth' again", line
    ), line


def test_the_routes_section_given_twice_is_an_error() -> None:
    text = yaml.safe_dump(minimal()) + "routes:\n  - {path: /x, upstream: 'http://x'}\n"

    assert "found key 'routes' again (first on line" in only_problem(text)


@pytest.mark.parametrize(("text", "kind"), [("- server\n- routes\n", "list"), ("just text\n", "str")])
def test_a_top_level_that_is_not_a_mapping_is_an_error(text: str, kind: str) -> None:
    assert only_problem(text) == f"gateway.yaml: (top level): expected a mapping of sections, got {kind}"


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError) as info:
        load(missing)

    (line,) = info.value.problems
    assert line == f"{missing}: cannot read (No such file or directory): expected a readable UTF-8 YAML file"


def test_a_directory_or_a_binary_file_is_an_error(tmp_path: Path) -> None:
    binary = tmp_path / "gateway.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")

    for path in (tmp_path, binary):
        with pytest.raises(ConfigError) as info:
            load(path)
        (line,) = info.value.problems
        assert line.startswith(f"{path}: cannot read ("), line
        assert line.endswith("): expected a readable UTF-8 YAML file"), line


# ---------------------------------------------------------------------------------------------------
# Which file: -c, $GATEWAY_CONFIG, ./gateway.yaml


def test_an_explicit_path_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CONFIG", "/etc/gateway/from-env.yaml")

    assert resolve_path("given.yaml") == Path("given.yaml")


def test_gateway_config_is_used_without_an_explicit_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CONFIG", "/etc/gateway/from-env.yaml")

    assert resolve_path(None) == Path("/etc/gateway/from-env.yaml")


@pytest.mark.parametrize("env_value", [None, ""])
def test_gateway_yaml_in_the_working_directory_is_the_last_resort(
    monkeypatch: pytest.MonkeyPatch, env_value: str | None
) -> None:
    if env_value is None:
        monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    else:
        monkeypatch.setenv("GATEWAY_CONFIG", env_value)

    assert resolve_path(None) == Path("gateway.yaml")


def test_load_without_a_path_reads_gateway_config_then_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(with_server(port=1111)), encoding="utf-8")
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(with_server(port=2222)), encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    monkeypatch.setenv("GATEWAY_CONFIG", str(tmp_path / "other.yaml"))
    assert load().server.port == 2222
    monkeypatch.delenv("GATEWAY_CONFIG")
    assert load().server.port == 1111


# ---------------------------------------------------------------------------------------------------
# Routes


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        ("/", "/"),
        ("/api", "/api"),
        ("/api/", "/api"),
        ("/api/v1/", "/api/v1"),
        ("/~user/a-b_c.d", "/~user/a-b_c.d"),
    ],
)
def test_route_paths_are_normalised_without_a_trailing_slash(written: str, normalised: str) -> None:
    assert load_tree(with_routes(route(written))).routes[0].path == normalised


@pytest.mark.parametrize(
    "written",
    ["api", "", "/a/../b", "/..", "/a/./b", "//x", "/a//b", "/a b", "/a?x=1", "/a#frag", "/a%2Fb", "/é"],
)
def test_a_route_path_that_is_not_a_clean_absolute_path_is_an_error(written: str) -> None:
    assert_says(only_problem(with_routes(route(written))), "routes[0].path", repr(written))


def test_route_paths_must_be_distinct_ignoring_case_and_trailing_slash() -> None:
    line = only_problem(with_routes(route("/api"), route("/other"), route("/API/")))

    assert_says(line, "routes[2].path", "'/API' is also routes[0].path")


@pytest.mark.parametrize("written", ["/_gateway", "/_gateway/", "/_gateway/auth", "/_GATEWAY/whoami"])
def test_a_route_under_the_control_prefix_is_refused(written: str) -> None:
    line = only_problem(with_routes(route(), route(written)))

    assert_says(line, "routes[1].path", "control_prefix '/_gateway'")


def test_the_control_prefix_covers_whole_segments_only_and_can_be_moved() -> None:
    assert load_tree(with_routes(route("/_gatewayx"))).routes[0].path == "/_gatewayx"

    moved = with_routes(route("/_gateway"), route("/-/gw/x"), server={"control_prefix": "/-/gw/"})
    assert_says(only_problem(moved), "routes[1].path", "control_prefix '/-/gw'")


def test_the_control_prefix_cannot_be_the_root() -> None:
    assert_says(only_problem(with_server(control_prefix="/")), "server.control_prefix", "other than /")


def test_a_config_needs_at_least_one_route() -> None:
    assert_says(only_problem(with_routes()), "routes", "at least 1")


def test_route_problems_are_all_reported_with_their_index() -> None:
    tree = with_routes(route("/api"), route("/api"), route("/_gateway/x"), route("/api/"))

    lines = problems(tree)

    assert [line.split(": ")[1] for line in lines] == ["routes[1].path", "routes[2].path", "routes[3].path"]


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("http://127.0.0.1:8081", "http://127.0.0.1:8081"),
        ("https://svc.internal/base/", "https://svc.internal/base"),
        ("http://[::1]:8081", "http://[::1]:8081"),
    ],
)
def test_upstreams_are_http_or_https_urls_kept_without_a_trailing_slash(written: str, kept: str) -> None:
    assert load_tree(with_routes(route(upstream=written))).routes[0].upstream == kept


@pytest.mark.parametrize(
    "written",
    ["ftp://files.internal", "127.0.0.1:8081", "http://", "unix:///run/svc.sock", "http://x:99999", "svc"],
)
def test_an_upstream_that_is_not_an_http_url_is_an_error(written: str) -> None:
    assert_says(
        only_problem(with_routes(route(upstream=written))), "routes[0].upstream", "http://", repr(written)
    )


@pytest.mark.parametrize("written", ["http://svc/?debug=1", "http://svc/path?", "http://svc/#top"])
def test_an_upstream_with_a_query_or_fragment_is_an_error(written: str) -> None:
    assert_says(only_problem(with_routes(route(upstream=written))), "routes[0].upstream", "without query")


def test_methods_are_uppercased() -> None:
    assert load_tree(with_routes(route(methods=["get", "Post", "m-search"]))).routes[0].methods == (
        "GET",
        "POST",
        "M-SEARCH",
    )


@pytest.mark.parametrize("written", ["G T", "GET,POST", "", "GET/1"])
def test_a_method_that_is_not_a_method_name_is_an_error_naming_its_index(written: str) -> None:
    line = only_problem(with_routes(route(methods=["GET", written])))

    assert_says(line, "routes[0].methods[1]", "HTTP method", repr(written))


def test_methods_written_as_one_string_are_an_error() -> None:
    assert_says(only_problem(with_routes(route(methods="GET"))), "routes[0].methods", "a list")


@pytest.mark.parametrize(
    ("key", "value"),
    [("scopes", ["repo"]), ("users", ["octocat"]), ("user_ids", [1]), ("upstream_token", {"target": "org"})],
)
def test_auth_none_with_an_identity_requirement_is_refused(key: str, value: object) -> None:
    public = route(auth="none")
    public[key] = value

    line = only_problem(with_routes(public))

    assert_says(line, f"routes[0].{key}", "auth: none")


def test_auth_none_and_optional_routes_load() -> None:
    config = load_tree(
        with_routes(route("/public", auth="none"), route(auth="optional", scopes=["read:org"]))
    )

    assert [(r.auth, r.scopes) for r in config.routes] == [("none", ()), ("optional", ("read:org",))]


def test_upstream_token_needs_a_target_or_a_target_id() -> None:
    line = only_problem(with_routes(route(upstream_token={"repositories": ["api"]})))
    assert_says(line, "routes[0].upstream_token", "target")

    by_login = load_tree(
        with_routes(route(upstream_token={"target": "octo-org", "permissions": {"contents": "read"}}))
    )
    assert by_login.routes[0].upstream_token is not None
    assert dict(by_login.routes[0].upstream_token.permissions) == {"contents": "read"}
    by_id = load_tree(with_routes(route(upstream_token={"target_id": 9919})))
    assert by_id.routes[0].upstream_token is not None
    assert by_id.routes[0].upstream_token.target_id == 9919


def test_upstream_token_permission_levels_are_read_write_or_admin() -> None:
    tree = with_routes(route(upstream_token={"target": "org", "permissions": {"contents": "rw"}}))

    assert_says(
        only_problem(tree), "routes[0].upstream_token.permissions.contents", "'read', 'write' or 'admin'"
    )


# ---------------------------------------------------------------------------------------------------
# Identity headers


def test_identity_headers_can_be_renamed_or_omitted() -> None:
    headers = load_tree(
        minimal(identity_headers={"user": "X-Remote-User", "expires_at": None})
    ).identity_headers

    assert (headers.user, headers.expires_at, headers.scopes) == ("X-Remote-User", None, "X-Auth-Scopes")


@pytest.mark.parametrize("written", ["X Auth User", "X-Auth-User:", "", "X-Auth-Üser"])
def test_an_identity_header_that_is_not_a_header_name_is_an_error(written: str) -> None:
    line = only_problem(minimal(identity_headers={"user": written}))

    assert_says(line, "identity_headers.user", "header name", repr(written))


@pytest.mark.parametrize(
    ("written", "why"),
    [
        ("Authorization", "credentials"),
        ("Cookie", "credentials"),
        ("host", "set or removed by the gateway"),
        ("X-Forwarded-For", "set or removed by the gateway"),
        ("x_request_id", "set or removed by the gateway"),
        ("X-Real-IP", "set or removed by the gateway"),  # the upstream would get two X-Real-IP
        ("Connection", "hop-by-hop"),
        ("X-Original-URL", "another method or path"),  # the gateway would send what it strips
        ("X-HTTP-Method-Override", "another method or path"),
        ("X-Original-URI", "forward-auth input"),
        ("Forwarded", "trusted proxies"),
        ("True-Client-IP", "trusted proxies"),
        ("Content-Type", "message body"),
        ("Sec-WebSocket-Protocol", "WebSocket handshake"),
    ],
)
def test_an_identity_header_cannot_be_one_the_gateway_sets_or_strips_itself(written: str, why: str) -> None:
    line = only_problem(minimal(identity_headers={"user": written}))
    assert_says(line, "identity_headers.user", repr(written), why)


@pytest.mark.parametrize("other", ["X-Auth-User", "x-auth-user", "x_auth_user", "X_AUTH_USER"])
def test_identity_headers_must_be_distinct_in_any_case_and_with_underscores(other: str) -> None:
    line = only_problem(minimal(identity_headers={"user": "X-Auth-User", "user_id": other}))

    assert_says(line, "identity_headers.user_id", "distinct from identity_headers.user", repr(other))


def test_several_omitted_identity_headers_do_not_collide() -> None:
    headers = load_tree(minimal(identity_headers={"user_id": None, "scopes": None, "client_id": None}))

    assert headers.identity_headers == IdentityHeaders(user_id=None, scopes=None, client_id=None)


# ---------------------------------------------------------------------------------------------------
# Server, GitHub, cache


@pytest.mark.parametrize(("written", "workers"), [(1, 1), (8, 8), ("4", 4), ("auto", "auto")])
def test_workers_is_a_count_of_one_or_more_or_auto(written: object, workers: object) -> None:
    assert load_tree(with_server(workers=written)).server.workers == workers


def test_auto_workers_means_one_per_cpu() -> None:
    assert load_tree(with_server(workers="auto")).server.worker_count == (os.cpu_count() or 1)
    assert load_tree(with_server(workers=3)).server.worker_count == 3


@pytest.mark.parametrize("written", [0, -1, "many", "AUTO", True, 1.5, None])
def test_workers_other_than_a_positive_count_or_auto_is_an_error(written: object) -> None:
    assert_says(only_problem(with_server(workers=written)), "server.workers", '1 or more, or "auto"')


def test_trusted_proxies_are_networks_or_single_addresses() -> None:
    config = load_tree(with_server(trusted_proxies=["10.0.0.0/8", "192.168.1.7", "fd00::/8"]))

    assert config.server.trusted_proxies == (
        ipaddress.IPv4Network("10.0.0.0/8"),
        ipaddress.IPv4Network("192.168.1.7/32"),
        ipaddress.IPv6Network("fd00::/8"),
    )


@pytest.mark.parametrize("written", ["10.0.0.1/8", "10.0.0.0/33", "nope", "*", 10])
def test_a_trusted_proxy_that_is_not_a_network_is_one_error_naming_its_index(written: object) -> None:
    line = only_problem(with_server(trusted_proxies=["127.0.0.0/8", written]))

    assert_says(line, "server.trusted_proxies[1]", "10.0.0.0/8", repr(written))


@pytest.mark.parametrize(("key", "value"), [("port", 70000), ("port", -1), ("port", "http"), ("port", False)])
def test_ports_are_numbers_from_0_to_65535(key: str, value: object) -> None:
    assert_says(only_problem(with_server(**{key: value})), f"server.{key}", repr(value))


def test_a_yaml_no_is_not_taken_for_zero() -> None:
    line = only_problem(f"{yaml.safe_dump(minimal())}server:\n  max_body_size: no\n")

    assert_says(line, "server.max_body_size", "whole number", "False")


def test_tls_needs_both_files() -> None:
    assert_says(only_problem(with_server(tls={"cert_file": "cert.pem"})), "server.tls.key_file", "required")


def test_check_method_is_token_or_legacy() -> None:
    assert load_tree(with_github(check_method="legacy")).github.check_method == "legacy"


def test_the_ghes_api_url_is_kept_without_a_trailing_slash() -> None:
    assert load_tree(with_github(api_url="https://ghe.example.com/api/v3/")).github.api_url == (
        "https://ghe.example.com/api/v3"
    )


def test_at_least_one_app_with_a_client_id_and_a_secret_is_needed() -> None:
    assert_says(only_problem(minimal(github={"apps": []})), "github.apps", "at least 1")
    assert_says(only_problem(minimal(github={})), "github.apps", "required")
    empty_secret = minimal(github={"apps": [{"client_id": "Iv1.abc", "client_secret": ""}]})
    assert_says(only_problem(empty_secret), "github.apps[0].client_secret", "non-empty")
    bad_id = minimal(github={"apps": [{"client_id": "Iv1 abc", "client_secret": SECRET}]})
    assert_says(only_problem(bad_id), "github.apps[0].client_id", "client ID", "'Iv1 abc'")


def test_each_app_is_listed_once() -> None:
    app = {"client_id": "Iv1.abc", "client_secret": SECRET}

    line = only_problem(minimal(github={"apps": [app, {**app, "client_id": "Ov23li"}, app]}))

    assert_says(line, "github.apps[2].client_id", "'Iv1.abc' is also apps[0].client_id")


@pytest.mark.parametrize(
    "written", ["redis://127.0.0.1:6379/0", "rediss://cache.internal:6380/1", "unix:///run/r.sock"]
)
def test_redis_url_takes_the_redis_schemes(written: str) -> None:
    assert load_tree(minimal(cache={"redis_url": written})).cache.redis_url == written


@pytest.mark.parametrize("written", ["http://127.0.0.1:6379", "127.0.0.1:6379", "memcached://x"])
def test_another_redis_url_is_an_error(written: str) -> None:
    assert_says(
        only_problem(minimal(cache={"redis_url": written})), "cache.redis_url", "redis://", repr(written)
    )


def test_a_redis_password_is_shown_neither_in_errors_nor_in_the_config_repr() -> None:
    line = only_problem(minimal(cache={"redis_url": "http://:hunter2-redis@cache:6379"}))
    assert_says(line, "cache.redis_url", "'http://***@cache:6379'")
    assert "hunter2" not in line

    config = load_tree(minimal(cache={"redis_url": "rediss://:hunter2-redis@cache:6380/0"}))
    assert "hunter2" not in repr(config) + str(config)


# ---------------------------------------------------------------------------------------------------
# Immutability and secrets


def test_the_loaded_config_cannot_be_changed() -> None:
    config = load_tree(
        with_routes(route(upstream_token={"target": "org", "permissions": {"contents": "read"}}))
    )

    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.pass_authorization = True  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.server.port = 1  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.routes[0].path = "/admin"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.routes[0] = config.routes[0]  # type: ignore[index]
    token = config.routes[0].upstream_token
    assert token is not None
    with pytest.raises(TypeError):
        token.permissions["administration"] = "admin"  # type: ignore[index]


def test_the_client_secret_is_never_in_the_config_repr_or_str() -> None:
    config = load_tree(minimal())

    for text in (repr(config), str(config), repr(config.github), repr(config.github.apps[0])):
        assert SECRET not in text
    assert SECRET not in config.model_dump_json()


@pytest.mark.parametrize(
    "tree",
    [
        pytest.param(with_server(port="eighty"), id="another-key-wrong"),
        pytest.param(minimal(routes="everything"), id="a-section-wrong"),
        pytest.param(
            minimal(github={"apps": [{"client_id": "Iv1 abc", "client_secret": SECRET, "extra": 1}]}),
            id="the-app-wrong",
        ),
        pytest.param(
            minimal(github={"apps": [{"client_id": "Iv1.abc", "client_secret": int(SECRET[:18], 16)}]}),
            id="the-secret-a-number",
        ),
        pytest.param(
            minimal(github={"apps": [{"client_id": "Iv1.abc", "client_secret": [SECRET]}]}),
            id="the-secret-a-list",
        ),
        pytest.param(
            minimal(
                github={"api_url": SECRET, "apps": [{"client_id": "Iv1.abc", "client_secret": SECRET}]},
                routes=[route(upstream=f"http://x/?{SECRET}")],
            ),
            id="the-secret-pasted-into-other-keys",
        ),
    ],
)
def test_the_client_secret_never_appears_in_a_config_error(tree: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        load_tree(tree)

    message = str(info.value) + repr(info.value)
    assert SECRET not in message
    assert str(int(SECRET[:18], 16)) not in message


def test_a_secret_from_the_environment_never_appears_in_a_config_error() -> None:
    text = DESIGN_EXAMPLE.replace("api_url: https://api.github.com", "api_url: ${GITHUB_CLIENT_SECRET}")

    line = only_problem(text, env={"GITHUB_CLIENT_SECRET": SECRET})

    assert_says(line, "github.api_url", "http://")
    assert SECRET not in line


# ---------------------------------------------------------------------------------------------------
# Shipped configs and the JSON Schema

# OpenAPI 3.1's schema dialect is JSON Schema 2020-12, plus keywords this schema does not use
SchemaValidator = OAS31Validator
_REQUIRED_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# gateway.yaml examples; the forward-auth, Kubernetes and Prometheus files are other programs' configs
SHIPPED = sorted(
    p
    for p in (REPO / "config").glob("*.yaml")
    if not p.name.startswith(("forward-auth", "kubernetes", "prometheus"))
)


def _placeholders(text: str) -> dict[str, str]:
    """A value for every variable the file needs (those without a default)."""
    return {name: f"placeholder-{name.lower()}" for name in _REQUIRED_VAR.findall(text)}


def test_config_directory_holds_the_documented_examples() -> None:
    assert {p.name for p in SHIPPED} >= {"ghes.yaml", "multi-app.yaml", "redis.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_example_config_loads(path: Path) -> None:
    load(path, env=_placeholders(path.read_text(encoding="utf-8")))


def test_the_repository_gateway_yaml_loads() -> None:
    path = REPO / "gateway.yaml"
    load(path, env=_placeholders(path.read_text(encoding="utf-8")))


def test_the_example_configs_show_what_they_are_for() -> None:
    ghes = load(REPO / "config/ghes.yaml", env={"GHES_CLIENT_SECRET": SECRET})
    assert ghes.github.api_url == "https://ghe.example.com/api/v3"
    assert "legacy" in (REPO / "config/ghes.yaml").read_text(encoding="utf-8")

    multi = load(
        REPO / "config/multi-app.yaml", env=_placeholders((REPO / "config/multi-app.yaml").read_text())
    )
    assert len(multi.github.apps) == 2

    redis = load(REPO / "config/redis.yaml", env={"GITHUB_CLIENT_SECRET": SECRET})
    assert redis.server.workers == "auto"
    assert redis.cache.redis_url is not None


def test_the_kubernetes_example_carries_a_gateway_yaml_that_loads_and_probes_the_admin_port() -> None:
    docs = list(yaml.safe_load_all((REPO / "config/kubernetes.yaml").read_text(encoding="utf-8")))
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    env = {"GITHUB_CLIENT_SECRET": SECRET, "REDIS_URL": "rediss://:pw@redis:6380/0"}
    config = parse(config_map["data"]["gateway.yaml"], source="kubernetes.yaml", env=env)
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert config.admin is not None
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"GITHUB_CLIENT_SECRET", "REDIS_URL"} <= {e["name"] for e in container["env"]}
    assert config.cache.redis_url == env["REDIS_URL"]


@pytest.mark.parametrize("name", ["forward-auth-traefik.yaml", "Caddyfile.forward-auth"])
def test_the_traefik_and_caddy_examples_ask_the_gateway_and_copy_every_identity_header(name: str) -> None:
    text = (REPO / "config" / name).read_text(encoding="utf-8")
    assert "/_gateway/auth" in text
    for header in IdentityHeaders().model_dump().values():
        assert header in text, header


def test_the_nginx_example_asks_the_gateway_and_copies_every_identity_header() -> None:
    conf = (REPO / "config/forward-auth-nginx.conf").read_text(encoding="utf-8")
    prefix = Config.model_fields["server"].get_default().control_prefix

    assert f"auth_request {prefix}/auth;" in conf
    assert "X-Original-URI    $request_uri" in conf
    assert "X-Original-Method $request_method" in conf
    for name in IdentityHeaders().model_dump().values():
        variable = "$upstream_http_" + name.lower().replace("-", "_")
        copied = re.search(rf"auth_request_set \$(\w+)\s+{re.escape(variable)};", conf)
        assert copied is not None, name
        assert re.search(rf"proxy_set_header {name}\s+\${copied.group(1)};", conf), name


def test_the_committed_json_schema_is_the_generated_one() -> None:
    committed = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.exists() else ""

    assert committed == json_schema(), (
        f"config/gateway.schema.json is stale: regenerate it with\n  {REGENERATE}"
    )


@pytest.mark.parametrize(
    "path",
    [*SHIPPED, REPO / "gateway.yaml"],
    ids=lambda p: p.name,
)
def test_the_json_schema_accepts_the_shipped_configs_as_written(path: Path) -> None:
    schema = json.loads(json_schema())

    SchemaValidator(schema).validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def test_the_json_schema_accepts_the_design_example_and_refuses_what_load_refuses() -> None:
    schema = json.loads(json_schema())
    SchemaValidator.check_schema(schema)
    validator = SchemaValidator(schema)
    validator.validate(yaml.safe_load(DESIGN_EXAMPLE))

    for tree in (
        with_server(prot=8080),
        with_server(shutdown_timeout="5 minutes"),
        with_github(check_method="post"),
        minimal(routes=[]),
    ):
        assert not validator.is_valid(tree), tree


# ---------------------------------------------------------------------------------------------------
# Sign-in (DESIGN §12): sessions, public_url, web_url, browser_login

COOKIE_SECRET = "a cookie secret of thirty-two characters or more"


def test_sessions_need_public_url_and_a_long_enough_secret() -> None:
    lines = problems(minimal(sessions={"cookie_secret": "short", "previous_cookie_secrets": ["also short"]}))

    assert len(lines) == 2, lines
    assert_says(lines[0], "sessions.cookie_secret", "at least 32 characters")
    assert_says(lines[1], "sessions.previous_cookie_secrets[0]", "at least 32 characters")
    assert "short" not in lines[0] + lines[1]  # SECURITY: a secret is never echoed
    assert_says(
        only_problem(minimal(sessions={"cookie_secret": COOKIE_SECRET})), "server.public_url", "sessions"
    )


def test_browser_login_needs_sessions_and_a_route_that_checks_tokens() -> None:
    route = {"path": "/", "upstream": "http://127.0.0.1:8081", "browser_login": True}
    assert_says(only_problem(with_routes(route)), "routes[0].browser_login", "sessions")
    assert_says(only_problem(with_routes({**route, "auth": "none"})), "routes[0].browser_login", "auth: none")


def test_public_url_is_an_origin_and_web_url_defaults_from_api_url() -> None:
    assert_says(
        only_problem(with_server(public_url="https://gw.example.com/app")), "server.public_url", "path"
    )
    assert load_tree(with_github()).github.web == "https://github.com"
    assert (
        load_tree(with_github(api_url="https://ghe.example.com/api/v3")).github.web
        == "https://ghe.example.com"
    )
    assert load_tree(with_github(web_url="https://sso.example.com")).github.web == "https://sso.example.com"
    config = load_tree(
        minimal(server={"public_url": "https://gw.example.com/"}, sessions={"cookie_secret": COOKIE_SECRET})
    )
    assert config.server.public_url == "https://gw.example.com"
    assert config.sessions is not None and config.sessions.max_age == 8 * 3600
    assert COOKIE_SECRET not in repr(config)


def test_the_identity_tokens_issuer_defaults_to_public_url_else_gateway(tmp_path: Path) -> None:
    key = tmp_path / "jwt.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    signing = {"signing_key_file": str(key)}
    public = minimal(identity_token=signing, server={"public_url": "https://gw.example.com"})
    named = minimal(
        identity_token={**signing, "issuer": "urn:gw"}, server={"public_url": "https://gw.example.com"}
    )

    tokens = [load_tree(t).identity_token for t in (minimal(identity_token=signing), public, named)]
    assert [t.issuer if t else None for t in tokens] == [
        "gateway",
        "https://gw.example.com",
        "urn:gw",
    ]
