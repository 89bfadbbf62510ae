"""Clients nobody here wrote against `gateway fake-github` in a process of its own: githubkit (generated
from GitHub's OpenAPI description, its pydantic models strict about every answer) and octokit's OAuth
methods (node). What they see is what they would see against github.com."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from githubkit import GitHub, OAuthAppAuthStrategy
from githubkit.exception import PrimaryRateLimitExceeded, RequestFailed, SecondaryRateLimitExceeded
from githubkit_schemas.latest.models import Authorization

from gateway.testing.fake_github import DEMO_APP, DEMO_OAUTH_APP

from .support.clients import CLIENTS, Served, fake_github, octokit

OAUTH_ID, OAUTH_SECRET = DEMO_OAUTH_APP
APP_ID, APP_SECRET = DEMO_APP
TOKENS = [
    f"{login}:{uid}:repo,read:org" for uid, login in enumerate(["check", "reset", "delete", "grant"], 1)
]
APP_TOKENS = ["scope:5", "scopeAgain:6"]
ARGV = [a for t in TOKENS for a in ("--token", t)] + [a for t in APP_TOKENS for a in ("--app-token", t)]
ARGV += ["--account", "octo-org:100:api,web", "--auto-approve", "check", "--device-interval", "0"]


@pytest.fixture  # a process per test: the operations use its tokens up
def served() -> Iterator[Served]:
    with fake_github(*ARGV) as served:
        yield served


@pytest.fixture
def legacy() -> Iterator[Served]:
    with fake_github(*ARGV, "--legacy-paths") as served:
        yield served


def githubkit(served: Served, *, app: tuple[str, str] = DEMO_OAUTH_APP) -> GitHub[Any]:
    return GitHub(OAuthAppAuthStrategy(*app), base_url=served.url, auto_retry=False, http_cache=False)


# ---------------------------------------------------------------------------------------------------
# githubkit


def test_githubkit_runs_every_oauth_apps_operation(served: Served) -> None:
    gh, t = githubkit(served), served.tokens
    checked = gh.rest.apps.check_token(OAUTH_ID, data={"access_token": t["check"]}).parsed_data
    assert (checked.user and checked.user.login, checked.scopes) == ("check", ["repo", "read:org"])
    reset = gh.rest.apps.reset_token(OAUTH_ID, data={"access_token": t["reset"]}).parsed_data
    assert reset.token != t["reset"] and reset.token.startswith("gho_")
    assert gh.rest.apps.delete_token(OAUTH_ID, data={"access_token": t["delete"]}).status_code == 204
    assert gh.rest.apps.delete_authorization(OAUTH_ID, data={"access_token": t["grant"]}).status_code == 204
    for gone in (t["reset"], t["delete"], t["grant"]):
        with pytest.raises(RequestFailed) as failed:
            gh.rest.apps.check_token(OAUTH_ID, data={"access_token": gone})
        assert failed.value.response.status_code == 404
    as_app = githubkit(served, app=DEMO_APP)
    scoped = as_app.rest.apps.scope_token(
        APP_ID, data={"access_token": t["scope"], "target": "octo-org", "repositories": ["web"]}
    ).parsed_data
    assert scoped.installation and scoped.installation.repository_selection == "selected"
    assert scoped.expires_at is not None  # a GitHub App user token's


def test_githubkit_reads_the_deprecated_path_forms_of_an_old_ghes(legacy: Served) -> None:
    gh, t = githubkit(legacy), legacy.tokens
    base = f"/applications/{OAUTH_ID}"
    checked = gh.request("GET", f"{base}/tokens/{t['check']}", response_model=Authorization).parsed_data
    assert checked.user and checked.user.login == "check"
    reset = gh.request("POST", f"{base}/tokens/{t['reset']}", response_model=Authorization).parsed_data
    assert reset.token != t["reset"]
    assert gh.request("DELETE", f"{base}/tokens/{t['delete']}").status_code == 204
    assert gh.request("DELETE", f"{base}/grants/{t['grant']}").status_code == 204
    # and the body forms, whose answers an old GHES gives without installation
    again = gh.rest.apps.check_token(OAUTH_ID, data={"access_token": reset.token}).parsed_data
    assert again.user and again.user.login == "reset"


@pytest.mark.parametrize(
    ("kind", "error"), [("primary", PrimaryRateLimitExceeded), ("secondary:429", SecondaryRateLimitExceeded)]
)
def test_githubkit_tells_githubs_rate_limits_apart(kind: str, error: type[Exception]) -> None:
    with (
        fake_github("--token", TOKENS[0], "--exhaust-rate-limit", kind) as served,
        pytest.raises(error) as limited,
    ):
        gh = githubkit(served)  # kept: githubkit's namespaces hold their client weakly
        gh.rest.apps.check_token(OAUTH_ID, data={"access_token": served.tokens["check"]})
    assert "rate limit: exhausted" in "\n".join(served.banner)
    assert limited.value.retry_after.total_seconds() > 0  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------------
# octokit


def run_octokit(served: Served) -> dict[str, Any]:
    directory, node = octokit(), shutil.which("node") or "node"
    script = directory / "octokit.mjs"  # beside its node_modules, where node's imports look
    shutil.copyfile(CLIENTS / "octokit.mjs", script)
    given = {"url": served.url, "oauth": DEMO_OAUTH_APP, "app": DEMO_APP, "tokens": served.tokens}
    done = subprocess.run(
        [node, str(script), json.dumps(given)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    seen: dict[str, Any] = json.loads(done.stdout)
    return seen


def test_octokit_runs_its_oauth_methods_and_flows(served: Served) -> None:
    seen = run_octokit(served)
    assert seen["checkToken"] == {"ok": True, "login": "check", "scopes": ["repo", "read:org"]}
    assert seen["resetToken"] == {"ok": True, "changed": True, "login": "reset"}
    assert seen["deleteToken"] == {"ok": True, "status": 204}
    assert (seen["deletedTokenChecked"]["ok"], seen["deletedTokenChecked"]["status"]) == (False, 404)
    assert seen["deleteAuthorization"] == {"ok": True, "status": 204}
    assert seen["scopeToken"] == {"ok": True, "selection": "selected", "account": "octo-org"}
    assert (seen["scopeTokenUnknownTarget"]["ok"], seen["scopeTokenUnknownTarget"]["status"]) == (False, 404)
    without_body = seen["requestWithoutBody"]
    assert (without_body["status"], without_body["data"]["errors"][0]["code"]) == (422, "missing_field")
    assert seen["exchangeWebFlowCode"] == {"ok": True, "prefix": "gho_"}
    assert seen["deviceFlowAndRefresh"] == {
        "ok": True,
        "userCode": True,
        "prefixes": ["ghu_", "ghr_", "ghu_"],
        "expires": True,
    }
    assert not seen["refreshTwice"]["ok"] and "bad_refresh_token" in seen["refreshTwice"]["message"]
