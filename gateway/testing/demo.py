"""`gateway demo`: the embedded default. A fake GitHub with the config's apps and demo tokens, an echo
upstream, and the gateway from `gateway.yaml` pointed at both; no GitHub account, no network.

The config names one app of each kind (`gateway.yaml`: a GitHub App, then an OAuth App), and each demo
token belongs to the app that could issue it: octocat's `oauth` token (scopes repo, read:org), the
revoked one and the organisation's member and outsider (read:org) to the OAuth App; monalisa's
`github_app` token (no scopes, 8 hours) to the GitHub App. The fake GitHub also serves the device
and web flows at its own URL, with octocat signed in at the browser.

The fake GitHub also holds the organisation of the first org-gated route and the team of the first
team-gated route, with people on both sides of each gate: octocat on the team (and so in its
organisation), defunkt in the organisations only, mallory in none.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .. import config as config_module
from ..app import open_gateway
from ..config import Config, IdentityTokenConfig, Route
from ..listener import make_runner
from ..responses import refusal_response
from ..stopping import stop_event
from .echo import echo_app
from .fake_github import GITHUB_APP, OAUTH_APP, FakeGitHub

# What `gateway.yaml` reads from the environment, filled with demo values when unset
DEMO_ENV = {
    "GITHUB_CLIENT_SECRET": "demo-secret",
    "GITHUB_OAUTH_CLIENT_SECRET": "demo-oauth-secret",
    "GATEWAY_COOKIE_SECRET": "the demo's cookie secret: never use a known one",
}


async def _start(runner: web.BaseRunner, host: str, port: int) -> tuple[web.BaseRunner, int]:
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, runner.addresses[0][1]


def demo_config(config: Config, *, github_url: str, upstream_url: str) -> Config:
    """The config with GitHub pointed at the fake and every route at the echo upstream."""
    github = config.github.model_copy(update={"api_url": github_url})
    routes = tuple(r.model_copy(update={"upstream": upstream_url}) for r in config.routes)
    return config.model_copy(update={"github": github, "routes": routes})


def with_identity_token(config: Config, directory: Path) -> Config:
    """The config signing identity tokens: with its own `identity_token`, else with a new EC P-256 key
    written to `directory` (DESIGN §11)."""
    if config.identity_token is not None:
        return config
    key = directory / "identity-token.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key.chmod(0o600)
    signing = IdentityTokenConfig(signing_key_file=str(key), issuer="gateway-demo")
    return config.model_copy(update={"identity_token": signing})


def gated_routes(config: Config) -> tuple[Route | None, Route | None]:
    """The first route that admits an organisation's members, and the first that admits a team's."""
    required = [r for r in config.routes if r.auth == "required"]
    return next((r for r in required if r.orgs), None), next((r for r in required if r.teams), None)


def demo_tokens(fake: FakeGitHub, config: Config) -> dict[str, str]:
    """Register the demo tokens, and the organisation and team the gated routes name; returns the
    tokens by what they show."""
    oauth_app, github_app = (_first_app(fake, kind) for kind in (OAUTH_APP, GITHUB_APP))
    tokens = {
        "oauth": fake.add_token("octocat", 583231, ["repo", "read:org"], client_id=oauth_app),
        "github_app": fake.add_token("monalisa", 2, client_id=github_app),
        "revoked": fake.add_token("hubot", 3, ["repo"], client_id=oauth_app),
        "org_member": fake.add_token("defunkt", 4, ["read:org"], client_id=oauth_app),
        "outsider": fake.add_token("mallory", 5, ["read:org"], client_id=oauth_app),
    }
    fake.revoke(tokens["revoked"])
    by_org, by_team = gated_routes(config)
    if by_org is not None:
        _organisation(fake, by_org.orgs[0])
    if by_team is not None:
        org, _, slug = by_team.teams[0].partition("/")
        _organisation(fake, org)
        fake.add_team(org, slug)
        fake.add_team_member(org, slug, "octocat")
    return tokens


def _first_app(fake: FakeGitHub, kind: str) -> str:
    """The client id of the config's first app of this kind; ValueError when it has none."""
    found = next((cid for cid, app in fake.settings.items() if app.kind == kind), None)
    if found is None:
        named = "an OAuth App" if kind == OAUTH_APP else "a GitHub App (client id Iv1.… or Iv23…)"
        raise ValueError(f"github.apps: the demo needs {named} beside the other kind")
    return found


def _organisation(fake: FakeGitHub, login: str) -> None:
    """An organisation octocat and defunkt are active members of, made once."""
    if login.casefold() not in fake.orgs:
        fake.add_org(login)
        for member in ("octocat", "defunkt"):
            fake.add_member(login, member)


def instructions(base: str, tokens: Mapping[str, str], config: Config, *, github_url: str = "") -> str:
    """Ready-to-paste curl commands for each case."""
    required = [r for r in config.routes if r.auth == "required"]
    restricted = ("scopes", "users", "user_ids", "orgs", "teams", "repos")
    open_to_all = next(
        (r.path for r in required if not r.browser_login and not any(getattr(r, k) for k in restricted)), "/"
    )
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
    by_org, by_team = gated_routes(config)
    header = config.identity_headers.groups

    def admitted(login: str, group: str) -> str:
        seen = f", the upstream sees {group} in {header}" if header else ""
        return f"# {login} is one: 200{seen}"

    if by_org is not None:
        org = by_org.orgs[0]
        lines += [
            f"# {by_org.path} admits the members of the organisation {org}.",
            admitted("defunkt", org),
            f"curl -s {base}{by_org.path} -H 'Authorization: Bearer {tokens['org_member']}'",
            "# mallory is not (the token may read:org; GitHub's answer is no): 403 forbidden",
            f"curl -si {base}{by_org.path} -H 'Authorization: Bearer {tokens['outsider']}'",
        ]
    if by_team is not None:
        team = by_team.teams[0]
        lines += [
            f"# {by_team.path} admits the members of the team {team}.",
            admitted("octocat", team),
            f"curl -s {base}{by_team.path} -H 'Authorization: Bearer {oauth}'",
            f"# defunkt is in {team.partition('/')[0]} but not on {team}: 403 forbidden",
            f"curl -si {base}{by_team.path} -H 'Authorization: Bearer {tokens['org_member']}'",
        ]
    if config.identity_token is not None:
        lines += [
            f"# each upstream answer above with a caller shows {config.identity_token.header}: the"
            " gateway's signed JWT of them;",
            "# upstreams verify it with the public keys published here (README: The identity token)",
            f"curl -s {base}{config.server.control_prefix}/jwks.json",
        ]
    if github_url:
        lines += [
            "",
            f"The fake GitHub is at {github_url} (octocat is signed in there): its device flow's page is",
            f"{github_url}/login/device, its web flow's {github_url}/login/oauth/authorize.",
        ]
    browser = next((r.path for r in required if r.browser_login), None)
    if browser is not None and config.sessions is not None:
        lines += [
            f"Sign in from a browser: open {base}{browser}/ , approve on the fake GitHub's page",
            "(as octocat), and the browser comes back with a session cookie and shows the echo upstream's",
            "answer.",
        ]
    lines += ["", "Ctrl-C stops the demo."]
    return "\n".join(lines)


async def run_demo(path: str | None) -> int:
    """Start the fake GitHub, the echo upstream and the gateway; serve until SIGINT or SIGTERM."""
    config = config_module.load(path, env={**DEMO_ENV, **os.environ})
    host = config.server.host
    fake = FakeGitHub({a.client_id: a.client_secret.get_secret_value() for a in config.github.apps})
    try:
        tokens = demo_tokens(fake, config)
    except ValueError as exc:
        print(f"gateway demo: {exc}", file=sys.stderr)
        return 2
    fake.flows.signed_in = "octocat"
    stop = stop_event()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback((await fake.start()).cleanup)
        runner, echo_port = await _start(web.AppRunner(echo_app(), access_log=None), "127.0.0.1", 0)
        stack.push_async_callback(runner.cleanup)
        github_url = fake.web_url or ""
        config = demo_config(config, github_url=github_url, upstream_url=f"http://127.0.0.1:{echo_port}")
        keys = stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-demo-"))
        config = with_identity_token(config, Path(keys))
        gateway = await stack.enter_async_context(open_gateway(config))
        runner = make_runner(gateway.handle, config.server, refuse=refusal_response)
        runner, port = await _start(runner, host, config.server.port)
        stack.push_async_callback(runner.cleanup)
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        print(instructions(f"http://{shown}:{port}", tokens, config, github_url=github_url), flush=True)
        await stop.wait()
    print("gateway demo: stopped", flush=True)
    return 0


def main(path: str | None) -> int:
    """Run the demo until Ctrl-C."""
    return asyncio.run(run_demo(path))
