"""`gateway demo`: the embedded default. A fake GitHub with a demo app and demo tokens, an echo
upstream, and the gateway from `gateway.yaml` pointed at both; no GitHub account, no network.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping

from aiohttp import web

from .. import config as config_module
from ..app import open_gateway
from ..config import Config
from ..stopping import stop_event
from ..wire import make_server
from .echo import echo_app
from .fake_github import FakeGitHub

# What `gateway.yaml` reads from the environment, filled with demo values when unset
DEMO_ENV = {"GITHUB_CLIENT_SECRET": "demo-secret"}
EIGHT_HOURS = 8 * 3600


async def _start(runner: web.BaseRunner, host: str, port: int) -> tuple[web.BaseRunner, int]:
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, runner.addresses[0][1]


def demo_config(config: Config, *, github_url: str, upstream_url: str) -> Config:
    """The config with GitHub pointed at the fake and every route at the echo upstream."""
    github = config.github.model_copy(update={"api_url": github_url})
    routes = tuple(r.model_copy(update={"upstream": upstream_url}) for r in config.routes)
    return config.model_copy(update={"github": github, "routes": routes})


def demo_tokens(fake: FakeGitHub) -> dict[str, str]:
    """Register the demo tokens; returns them by what they show."""
    tokens = {
        "oauth": fake.add_token("octocat", 583231, ["repo", "read:org"], prefix="gho_"),
        "github_app": fake.add_token("monalisa", 2, [], prefix="ghu_", expires_in=EIGHT_HOURS),
        "revoked": fake.add_token("hubot", 3, ["repo"], prefix="gho_"),
    }
    fake.revoke(tokens["revoked"])
    return tokens


def instructions(base: str, tokens: Mapping[str, str], config: Config) -> str:
    """Ready-to-paste curl commands for each case."""
    required = [r for r in config.routes if r.auth == "required"]
    open_to_all = next((r.path for r in required if not (r.scopes or r.users or r.user_ids)), "/")
    scoped = next((r for r in required if r.scopes), None)
    public = next((r.path for r in config.routes if r.auth == "none"), None)
    oauth, app_token = tokens["oauth"], tokens["github_app"]
    lines = [
        f"gateway demo: the gateway listens on {base}",
        "",
        "# an OAuth App token (scopes repo, read:org): 200, the upstream sees X-Auth-User: octocat",
        f"curl -s {base}{open_to_all} -H 'Authorization: Bearer {oauth}'",
        "# a GitHub App user token (no scopes, expires in 8 hours): 200, X-Auth-User: monalisa",
        f"curl -s {base}{open_to_all} -H 'Authorization: Bearer {app_token}'",
        "# a revoked token: 401 invalid_token",
        f"curl -si {base}{open_to_all} -H 'Authorization: Bearer {tokens['revoked']}'",
        "# no token: 401 with a Bearer challenge",
        f"curl -si {base}{open_to_all}",
        "# who am I",
        f"curl -s {base}{config.server.control_prefix}/whoami -H 'Authorization: Bearer {oauth}'",
    ]
    if public is not None:
        lines += ["# a public route: no token needed", f"curl -s {base}{public}"]
    if scoped is not None:
        need = ", ".join(scoped.scopes)
        lines += [
            f"# {scoped.path} requires scopes {need}: the GitHub App token has none: 403 insufficient_scope",
            f"curl -si {base}{scoped.path} -H 'Authorization: Bearer {app_token}'",
        ]
    lines += ["", "Ctrl-C stops the demo."]
    return "\n".join(lines)


async def run_demo(path: str | None) -> None:
    """Start the fake GitHub, the echo upstream and the gateway; serve until SIGINT or SIGTERM."""
    config = config_module.load(path, env={**DEMO_ENV, **os.environ})
    host = config.server.host
    fake = FakeGitHub({a.client_id: a.client_secret.get_secret_value() for a in config.github.apps})
    tokens = demo_tokens(fake)
    stop = stop_event()
    async with contextlib.AsyncExitStack() as stack:
        runner, github_port = await _start(web.AppRunner(fake.app(), access_log=None), "127.0.0.1", 0)
        stack.push_async_callback(runner.cleanup)
        runner, echo_port = await _start(web.AppRunner(echo_app(), access_log=None), "127.0.0.1", 0)
        stack.push_async_callback(runner.cleanup)
        config = demo_config(
            config, github_url=f"http://127.0.0.1:{github_port}", upstream_url=f"http://127.0.0.1:{echo_port}"
        )
        gateway = await stack.enter_async_context(open_gateway(config))
        server = make_server(gateway.handle, config.server)
        runner, port = await _start(web.ServerRunner(server), host, config.server.port)
        stack.push_async_callback(runner.cleanup)
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        print(instructions(f"http://{shown}:{port}", tokens, config), flush=True)
        await stop.wait()
    print("gateway demo: stopped", flush=True)


def main(path: str | None) -> int:
    """Run the demo until Ctrl-C."""
    asyncio.run(run_demo(path))
    return 0
