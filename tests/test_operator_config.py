"""The operators' artifacts in config/ (README: Operating it): the Prometheus alerting rules pass promtool
and their unit tests, one per alert at least; the Grafana dashboard's queries are PromQL promtool accepts;
every metric (and label) the dashboard and the rules ask for is one a live `gateway serve` exports; the
systemd unit passes `systemd-analyze verify` and is sandboxed. The tools come from Debian's packages
(`make servers` installs them as root); where one is missing, the tests that need it are skipped."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.testing.echo import echo_app
from gateway.testing.fake_github import FakeGitHub

from .support.headers import bearer
from .support.processes import REPO, serving
from .support.sockets import free_port
from .support.world import CLIENT_ID, CLIENT_SECRET

CONFIG = REPO / "config"
RULES = CONFIG / "prometheus-rules.yaml"
RULE_TESTS = CONFIG / "prometheus-rules.test.yaml"
DASHBOARD = CONFIG / "grafana-dashboard.json"
UNIT = CONFIG / "gateway.service"
PROMETHEUS_OWN = {"up"}  # what Prometheus records of a scrape itself, not the gateway
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series

# What a Grafana dashboard writes in a query that PromQL does not know: its variables, by what they
# stand for when checked here
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (make servers installs it with apt-get as root)")
    return found


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


# ---------------------------------------------------------------------------------------------------
# PromQL, read for what it selects


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_WORD = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


def selected(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """The metric names a PromQL expression selects, each with the label names its matchers name; and
    the label names its `by`/`without`/`on`/`ignoring` clauses name."""
    text = _STRING.sub('""', expr)
    grouped = {label.strip() for clause in _GROUPING.findall(text) for label in clause.split(",")}
    text = _RANGE.sub(" ", _GROUPING.sub(" ", text))
    names: dict[str, set[str]] = {}

    def selector(match: re.Match[str]) -> str:
        assert match.group(1), f"a selector without a metric name: {expr}"
        names.setdefault(match.group(1), set()).update(_MATCHER_LABEL.findall(match.group(2)))
        return " "

    text = _SELECTOR.sub(selector, text)
    for word, call in _WORD.findall(text):
        if not call and word.lower() not in _KEYWORDS:  # a function or aggregation is followed by "("
            names.setdefault(word, set())
    return names, grouped - {""}


def test_reading_promql_finds_names_and_labels() -> None:
    names, grouped = selected(
        "histogram_quantile(0.99, sum by (route, le) (rate(gateway_request_duration_seconds_bucket"
        '{job=~"a|b", code!="5.."}[5m]))) / on (instance) group_left max(up) > bool 1'
        " and gateway_connections_open"
    )
    assert names == {
        "gateway_request_duration_seconds_bucket": {"job", "code"},
        "up": set(),
        "gateway_connections_open": set(),
    }
    assert grouped == {"route", "le", "instance"}


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: its panels' queries and its variables' label_values,
    with Grafana's variables put as PromQL reads them."""
    dashboard = json.loads(DASHBOARD.read_text())

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    exprs = [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            found = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert found, query
            exprs.append(found.group(1))
    out = []
    for expr in exprs:
        for name, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(name, value)
        out.append(_VARIABLE.sub(".*", expr))  # $job, $instance, $route: a regex matcher's "all"
    return out


def rule_queries() -> dict[str, str]:
    """Each alert's expression, by the alert's name."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


# ---------------------------------------------------------------------------------------------------
# The alerting rules


def test_the_rules_pass_promtool_check() -> None:
    checked = run(tool("promtool"), "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rule_queries())} rules found" in checked.stdout


def test_the_rules_pass_their_unit_tests() -> None:
    tested = run(tool("promtool"), "test", "rules", RULE_TESTS.name, cwd=CONFIG)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() -> None:
    cases = [
        case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]
    ]
    for alert in rule_queries():
        mine = [case for case in cases if case["alertname"] == alert]
        assert any(case["exp_alerts"] for case in mine), f"{alert}: no unit test where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{alert}: no unit test where it is quiet"


def test_the_issue_asks_for_these_alerts() -> None:
    watched = {name for expr in rule_queries().values() for name in selected(expr)[0]}
    # GitHub failing or backing off, error ratio, latency, readiness, log lines dropped
    assert {
        "gateway_github_calls_total",
        "gateway_auth_decisions_total",
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "up",
        "gateway_log_lines_dropped_total",
    } <= watched


# ---------------------------------------------------------------------------------------------------
# The dashboard


def test_the_dashboard_queries_are_promql_that_promtool_accepts(tmp_path: Path) -> None:
    # promtool has no query linter of its own: each query becomes a recording rule, which it parses
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(dashboard_queries())]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = run(tool("promtool"), "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_shows_what_operators_watch() -> None:
    queried = {name for expr in dashboard_queries() for name in selected(expr)[0]}
    # request rate and latency by route, auth decisions, cache hit ratio by tier, GitHub call latency
    # and errors, membership lookups, rate-limit budget, connections
    assert {
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_auth_decisions_total",
        "gateway_cache_lookups_total",
        "gateway_github_calls_total",
        "gateway_github_call_duration_seconds_bucket",
        "gateway_membership_lookups_total",
        "gateway_github_rate_limit_remaining",
        "gateway_connections_open",
    } <= queried
    titles = [p["title"] for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    assert len(titles) == len(set(titles)), titles


# ---------------------------------------------------------------------------------------------------
# What they ask for, against what a live gateway exports


def exported(text: str) -> dict[str, set[str] | None]:
    """Every sample name a scrape offers (from its TYPE lines: a counter's `_total`, a histogram's
    `_bucket`, `_sum` and `_count`), with the label names seen on its samples (None: none yet)."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    names: dict[str, set[str] | None] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            base = name.removesuffix("_total") if kind == "counter" else name
            for suffix in suffixes.get(kind, [""]):
                names.setdefault(base + suffix, None)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names[sample.name] = (names.get(sample.name) or set()) | set(sample.labels)
    return names


@pytest.fixture
async def live_metrics(tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]) -> str:
    """What `gateway serve` answers on /metrics, once it has served a good and a bad token, and met an
    upstream that is not there."""
    github = FakeGitHub({CLIENT_ID: CLIENT_SECRET})
    gh = await aiohttp_server(github.app())
    echo = await aiohttp_server(echo_app())
    port, admin = free_port(), free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin},
        "github": {
            "api_url": str(gh.make_url("")).rstrip("/"),
            "apps": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}],
        },
        "routes": [
            {"path": "/gone", "upstream": f"http://127.0.0.1:{free_port()}", "auth": "none"},  # nothing there
            {"path": "/", "upstream": str(echo.make_url("")).rstrip("/")},
        ],
    }
    token = github.add_token("alice", 7)
    async with serving(config, tmp_path), aiohttp.ClientSession() as session:
        for path, credential in (("/svc", token), ("/svc", "gho_bogus"), ("/gone", token)):
            async with session.get(f"http://127.0.0.1:{port}{path}", headers=bearer(credential)):
                pass
        async with session.get(f"http://127.0.0.1:{admin}/metrics") as resp:
            assert resp.status == 200
            return await resp.text()


async def test_every_metric_and_label_the_dashboard_and_rules_ask_for_is_exported(live_metrics: str) -> None:
    offered = exported(live_metrics)
    assert "gateway_requests_total" in offered and "gateway_github_calls_total" in offered
    queries = [(f"dashboard: {q}", q) for q in dashboard_queries()]
    queries += [(f"alert {alert}: {q}", q) for alert, q in rule_queries().items()]
    for where, query in queries:
        names, grouped = selected(query)
        assert names, f"{where}: selects no metric"
        labels_of_query: set[str] | None = set(TARGET_LABELS) | {"le"}  # None: some are not known
        for name, matched in names.items():
            if name in PROMETHEUS_OWN:
                assert where.startswith("alert"), f"{where}: a dashboard of the gateway's own metrics"
                continue
            assert name in offered, f"{where}: {name} is not exported"
            sampled = offered[name]
            if sampled is None:  # no sample yet (the rate-limit gauge without membership.as: app)
                labels_of_query = None
                continue
            labels = sampled | TARGET_LABELS
            if labels_of_query is not None:
                labels_of_query |= labels
            assert matched <= labels, f"{where}: {name} has no label {matched - labels}"
        if labels_of_query is not None:
            assert grouped <= labels_of_query, f"{where}: no label {grouped - labels_of_query}"


# ---------------------------------------------------------------------------------------------------
# The systemd unit


def unit_as_installed(tmp_path: Path) -> Path:
    """The unit with ExecStart naming where `pip install .` put the gateway here (verify checks the
    command is executable)."""
    here = Path(sys.executable).parent / "gateway"
    path = tmp_path / "gateway.service"
    path.write_text(UNIT.read_text().replace("/usr/local/bin/gateway", str(here)))
    return path


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    verified = run(tool("systemd-analyze"), "verify", str(unit_as_installed(tmp_path)))
    # an unknown key or a bad value is a warning on stderr, not an exit code
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stdout + verified.stderr


def test_the_systemd_unit_is_sandboxed_and_reloads_and_stops_as_the_gateway_does(tmp_path: Path) -> None:
    service = dict(
        line.split("=", 1)
        for line in UNIT.read_text().split("[Service]")[1].split("[Install]")[0].splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert service["DynamicUser"] == service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillSignal"] == "SIGTERM" and service["KillMode"] == "mixed"
    assert float(service["TimeoutStopSec"].removesuffix("s")) >= 30 + 10  # shutdown_timeout's default
    assert service["Restart"] == "on-failure"
    analyzed = run(tool("systemd-analyze"), "security", "--offline=yes", str(unit_as_installed(tmp_path)))
    found = re.search(r"Overall exposure level for gateway\.service: ([\d.]+)", analyzed.stdout)
    assert found, analyzed.stdout + analyzed.stderr
    assert float(found.group(1)) <= 2.0, analyzed.stdout  # "OK" starts below 4.0; this unit is at 1.4
