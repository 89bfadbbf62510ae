"""`gateway token …` as an operator runs it, against the fake GitHub over real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .support.processes import REPO
from .support.world import BOTH_APPS, CLIENT_ID, SECOND_ID, World


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Run = Callable[..., Awaitable[Result]]


@pytest.fixture
def gateway_token(world: World, tmp_path: Path) -> Run:
    """Run `python -m gateway token ARGS` with a config pointing at the world's fake GitHub."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "github": {
                    "api_url": world.github_url,
                    "apps": [{**app, "client_secret": f"${{SECRET_{n}}}"} for n, app in enumerate(BOTH_APPS)],
                    "retries": 0,
                },
                "routes": [{"path": "/", "upstream": "http://127.0.0.1:9"}],
            }
        )
    )

    async def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
        full_env = {k: v for k, v in os.environ.items() if k != "GATEWAY_TOKEN"}
        secrets = {f"SECRET_{n}": str(app["client_secret"]) for n, app in enumerate(BOTH_APPS)}
        full_env.update({**secrets, "GATEWAY_CONFIG": str(config), **(env or {})})
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "token",
            *args,
            cwd=REPO,
            env=full_env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(None if stdin is None else stdin.encode())
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(), err.decode())

    return run


async def test_check_prints_the_identity_with_the_token_redacted(gateway_token: Run, world: World) -> None:
    token = world.github.add_token("alice", 7, ["repo"])
    result = await gateway_token("check", stdin=token + "\n")
    assert result.code == 0, result.err
    body = result.json()
    assert body["valid"] is True
    assert body["identity"]["login"] == "alice"
    assert body["token"] == f"gho_****{token[-4:]}"
    assert token not in result.out + result.err


async def test_check_reads_gateway_token_from_the_environment(gateway_token: Run, world: World) -> None:
    token = world.github.add_token("alice", 7)
    result = await gateway_token("check", env={"GATEWAY_TOKEN": token})
    assert result.code == 0


async def test_check_of_an_unknown_token_exits_1(gateway_token: Run) -> None:
    result = await gateway_token("check", stdin="gho_" + "4" * 36)
    assert result.code == 1
    assert result.json()["valid"] is False


async def test_a_token_is_never_taken_from_the_command_line(gateway_token: Run, world: World) -> None:
    token = world.github.add_token("alice", 7)
    result = await gateway_token("check", token, stdin="")
    assert result.code == 2
    result = await gateway_token("check", stdin="")
    assert result.code == 2
    assert "GATEWAY_TOKEN" in result.err


async def test_reset_prints_the_new_token_once_and_the_old_one_stops_working(
    gateway_token: Run, world: World
) -> None:
    old = world.github.add_token("alice", 7, ["repo"])
    result = await gateway_token("reset", stdin=old)
    assert result.code == 0, result.err
    new = result.json()["token"]
    assert result.out.count(new) == 1 and new != old
    assert old not in result.out + result.err
    assert world.github.live(old, CLIENT_ID) is None
    assert world.github.live(new, CLIENT_ID) is not None


async def test_delete_revokes_and_a_second_delete_reports_not_found(gateway_token: Run, world: World) -> None:
    token = world.github.add_token("alice", 7)
    assert (await gateway_token("delete", stdin=token)).code == 0
    assert world.github.live(token, CLIENT_ID) is None
    assert (await gateway_token("check", stdin=token)).code == 1


async def test_delete_grant_revokes_every_token_of_the_user_for_the_app(
    gateway_token: Run, world: World
) -> None:
    first = world.github.add_token("alice", 7)
    second = world.github.add_token("alice", 7)
    other = world.github.add_token("bob", 8)
    assert (await gateway_token("delete-grant", stdin=first)).code == 0
    assert world.github.live(first, CLIENT_ID) is None
    assert world.github.live(second, CLIENT_ID) is None
    assert world.github.live(other, CLIENT_ID) is not None


async def test_github_unavailable_exits_3(gateway_token: Run, world: World) -> None:
    token = world.github.add_token("alice", 7)
    world.github.outage = 503
    result = await gateway_token("check", stdin=token)
    assert result.code == 3
    assert json.loads(result.err)["error"] == "github_unavailable"
    assert token not in result.err


async def test_a_broken_config_exits_2(gateway_token: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("nonsense: true\n")
    result = await gateway_token("check", "-c", str(bad), stdin="gho_abc")
    assert result.code == 2
    assert "nonsense" in result.err


@pytest.mark.parametrize("operation", ["check", "reset", "delete", "delete-grant", "scope"])
async def test_every_operation_has_help(gateway_token: Run, operation: str) -> None:
    result = await gateway_token(operation, "--help")
    assert result.code == 0
    assert "GATEWAY_TOKEN" in result.out


async def test_scope_mints_a_scoped_token_from_a_github_app_user_token(
    gateway_token: Run, world: World
) -> None:
    world.github.add_account("octo-org", 100, ["api", "web"])
    token = world.github.add_token("monalisa", 2, client_id=SECOND_ID, expires_in=3600)
    result = await gateway_token(
        "scope", "--target", "octo-org", "--repository", "api", "--permission", "contents=read", stdin=token
    )
    assert result.code == 0, result.err
    body = result.json()
    assert body["token"].startswith("ghu_") and body["token"] != token
    assert body["permissions"] == {"contents": "read"}
    assert token not in result.out


async def test_scope_from_an_oauth_app_token_is_refused_with_githubs_reasons(
    gateway_token: Run, world: World
) -> None:
    world.github.add_account("octo-org", 100, ["api"])
    token = world.github.add_token("alice", 7, ["repo"])
    result = await gateway_token("scope", "--target", "octo-org", stdin=token)
    assert result.code == 1
    assert json.loads(result.err)["error"] == "validation_failed"


async def test_scope_to_an_unknown_target_says_so_and_asks_no_other_app(
    gateway_token: Run, world: World
) -> None:
    token = world.github.add_token("monalisa", 2, client_id=SECOND_ID)
    result = await gateway_token("scope", "--target", "nope", stdin=token)
    assert result.code == 1
    error = json.loads(result.err)
    assert (
        error["error"] == "target_not_found" and "no target 'nope' to scope the token to" in error["message"]
    )
    assert token not in result.err
    # each app was asked to scope it once, and to check it once: the second knew it, and no more
    assert world.github.count("apps/scope-token") == world.github.count("apps/check-token") == 2
