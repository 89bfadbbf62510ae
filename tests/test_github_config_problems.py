"""A config that does not work with the GitHub it names is reported as the operator's problem, not as
every caller's token being invalid: `check_method: legacy` on a GitHub without the path forms, and
`gateway check-config --online`, which asks GitHub about each app without a real token."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.admin import Readiness, admin_app

from .support.headers import bearer
from .support.processes import REPO
from .support.world import BOTH_APPS, CLIENT_ID, SECOND_ID, GatewayFactory, World


async def test_legacy_on_a_github_without_path_forms_is_503_and_not_ready(
    start_gateway: GatewayFactory, world: World, aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway(
        github={"api_url": world.github_url, "apps": BOTH_APPS[:1], "retries": 0, "check_method": "legacy"}
    )
    admin = await aiohttp_client(admin_app(Readiness(lambda: gateway.app.github.problem)))
    assert (await gateway.client.get("/svc", headers=bearer("gho_never_issued"))).status == 401
    assert (await admin.get("/readyz")).status == 200  # an unknown token proves nothing
    token = world.github.add_token("alice", 7)
    with caplog.at_level(logging.ERROR):
        refused = await gateway.client.get("/svc", headers=bearer(token))
    assert refused.status == 503  # the gateway cannot check tokens: not the caller's fault
    assert "config: check_method: legacy, but GitHub at" in caplog.text and token not in caplog.text
    ready = await admin.get("/readyz")
    assert ready.status == 503
    (problem,) = (await ready.json())["problems"]
    assert problem.startswith("github: check_method: legacy") and problem.endswith("set check_method: token")


async def check_online(world: World, tmp_path: Path, **github: Any) -> tuple[int, str, str]:
    path = tmp_path / "gateway.yaml"
    settings = {"api_url": world.github_url, "apps": BOTH_APPS, "retries": 0, **github}
    config = {"github": settings, "routes": [{"path": "/", "upstream": "http://127.0.0.1:9"}]}
    path.write_text(yaml.safe_dump(config))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "check-config",
        "--online",
        "-c",
        str(path),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_check_config_online_finds_each_apps_answer_good(world: World, tmp_path: Path) -> None:
    code, out, err = await check_online(world, tmp_path)
    assert (code, err) == (0, "")
    assert f"github app {CLIENT_ID}: ok (its endpoint answered 404 for a token nobody has)" in out
    assert f"github app {SECOND_ID}: ok" in out
    world.github.legacy_paths = True
    assert (await check_online(world, tmp_path, check_method="legacy"))[0] == 0
    assert world.github.count("apps/check-token") == 2 and world.github.count("apps/check-authorization") == 2


async def test_check_config_online_names_wrong_credentials_and_a_missing_check_method(
    world: World, tmp_path: Path
) -> None:
    apps = [BOTH_APPS[0], {**BOTH_APPS[1], "client_secret": "wrong-secret"}]
    code, out, err = await check_online(world, tmp_path, apps=apps)
    assert code == 1 and f"github app {CLIENT_ID}: ok" in out
    assert f"github app {SECOND_ID}: GitHub rejected the credentials of app {SECOND_ID} (401)" in err
    assert "wrong-secret" not in out + err
    code, _, err = await check_online(world, tmp_path, check_method="legacy")
    assert code == 1
    assert f"github app {CLIENT_ID}: check_method: legacy, but GitHub at {world.github_url}" in err
