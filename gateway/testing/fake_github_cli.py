"""`gateway fake-github`: serve the fake GitHub alone, with apps, tokens, accounts and an
organisation to try it with."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys

from aiohttp import web

from ..stopping import stop_event
from .fake_github import DEMO_APP, FakeGitHub

__all__ = ["add_arguments", "run"]

_SCOPES = re.compile(r"[a-z0-9:_-]+(,[a-z0-9:_-]+)*")
_EIGHT_HOURS = 8 * 3600.0  # GitHub App user tokens expire after 8 hours


def _app_arg(value: str) -> tuple[str, str]:
    client_id, _, secret = value.partition(":")
    if not client_id or not secret:
        raise argparse.ArgumentTypeError(f"expected CLIENT_ID:SECRET, got {value!r}")
    return client_id, secret


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `gateway fake-github`."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=9100, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--app",
        dest="apps",
        action="append",
        type=_app_arg,
        metavar="CLIENT_ID:SECRET",
        help=f"an app the fake knows (repeatable; default: {':'.join(DEMO_APP)})",
    )
    parser.add_argument(
        "--token",
        dest="tokens",
        action="append",
        metavar="LOGIN:ID:SCOPES[:CLIENT_ID]",
        help="issue an OAuth App token (gho_), print it (repeatable); SCOPES comma-separated, may be empty",
    )
    parser.add_argument(
        "--app-token",
        dest="app_tokens",
        action="append",
        metavar="LOGIN:ID[:CLIENT_ID]",
        help="issue a GitHub App user token (ghu_, expires in 8 hours) and print it (repeatable)",
    )
    parser.add_argument(
        "--account",
        dest="accounts",
        action="append",
        metavar="LOGIN:ID[:REPO,...]",
        help="an organization the GitHub App is installed on, a target for scoped tokens (repeatable)",
    )
    parser.add_argument(
        "--org",
        dest="orgs",
        action="append",
        metavar="ORG[:LOGIN,...]",
        help="an organisation and its active members, users of --token/--app-token (repeatable)",
    )
    parser.add_argument(
        "--team",
        dest="teams",
        action="append",
        metavar="ORG/SLUG[:LOGIN,...]",
        help="a team of an --org and its active members (repeatable)",
    )
    parser.add_argument(
        "--legacy-paths", action="store_true", help="serve the deprecated …/tokens/{token} paths"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, metavar="SECONDS", help="delay before each answer"
    )


def _issue(fake: FakeGitHub, spec: str) -> tuple[str, str]:
    """Issue the token a --token spec describes; returns (description, token)."""
    parts = spec.split(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit():
        raise ValueError(f"--token: expected LOGIN:ID:SCOPES[:CLIENT_ID], got {spec!r}")
    login, uid, scopes = parts
    client_id = next(iter(fake.apps))
    head, _, tail = scopes.rpartition(":")
    if tail in fake.apps:  # scopes contain ':' too (read:org): a trailing known client_id is the app
        scopes, client_id = head, tail
    if scopes and not _SCOPES.fullmatch(scopes):
        raise ValueError(f"--token: expected comma-separated scopes and a known CLIENT_ID, got {spec!r}")
    token = fake.add_token(login, int(uid), scopes.split(",") if scopes else (), client_id=client_id)
    return f"{login} (id {uid}, app {client_id}, scopes: {scopes or '-'})", token


def _issue_app_token(fake: FakeGitHub, spec: str) -> tuple[str, str]:
    """Issue the GitHub App user token an --app-token spec describes; returns (description, token)."""
    login, _, rest = spec.partition(":")
    uid, _, client_id = rest.partition(":")
    if not login or not uid.isdigit() or (client_id and client_id not in fake.apps):
        raise ValueError(f"--app-token: expected LOGIN:ID[:CLIENT_ID] with a known CLIENT_ID, got {spec!r}")
    client_id = client_id or next(iter(fake.apps))
    token = fake.add_token(login, int(uid), client_id=client_id, prefix="ghu_", expires_in=_EIGHT_HOURS)
    return f"{login} (id {uid}, app {client_id}, GitHub App user token)", token


def _add_account(fake: FakeGitHub, spec: str) -> str:
    """Register the account an --account spec describes; returns its description."""
    login, _, rest = spec.partition(":")
    account_id, _, repos = rest.partition(":")
    if not login or not account_id.isdigit() or int(account_id) == 0:
        raise ValueError(f"--account: expected LOGIN:ID[:REPO,...], got {spec!r}")
    names = [name for name in repos.split(",") if name]
    fake.add_account(login, int(account_id), names)
    return f"{login} (id {account_id}, repositories: {', '.join(names) or '-'})"


def _add_org(fake: FakeGitHub, spec: str) -> str:
    """Register the organisation an --org spec describes; returns its description."""
    login, _, members = spec.partition(":")
    logins = [name for name in members.split(",") if name]
    if not login or "/" in login:
        raise ValueError(f"--org: expected ORG[:LOGIN,...], got {spec!r}")
    fake.add_org(login)
    for member in logins:
        fake.add_member(login, member)
    return f"{login} (members: {', '.join(logins) or '-'})"


def _add_team(fake: FakeGitHub, spec: str) -> str:
    """Register the team a --team spec describes; returns its description."""
    name, _, members = spec.partition(":")
    org, slash, slug = name.partition("/")
    logins = [login for login in members.split(",") if login]
    if not org or not slash or not slug:
        raise ValueError(f"--team: expected ORG/SLUG[:LOGIN,...], got {spec!r}")
    fake.add_team(org, slug)
    for member in logins:
        fake.add_team_member(org, slug, member)
    return f"{org}/{slug} (members: {', '.join(logins) or '-'})"


def run(args: argparse.Namespace) -> int:
    """Serve a fake GitHub until SIGINT or SIGTERM; returns the exit status."""
    fake = FakeGitHub(dict(args.apps or [DEMO_APP]), legacy_paths=args.legacy_paths)
    fake.latency = args.latency
    try:
        registered = [f"account {_add_account(fake, spec)}" for spec in args.accounts or ()]
        issued = [_issue(fake, spec) for spec in args.tokens or ()]
        issued += [_issue_app_token(fake, spec) for spec in args.app_tokens or ()]
        registered += [f"organisation {_add_org(fake, spec)}" for spec in args.orgs or ()]
        registered += [f"team {_add_team(fake, spec)}" for spec in args.teams or ()]
    except ValueError as exc:
        print(f"gateway fake-github: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve_until_signal(fake, args.host, args.port, issued, registered))
    return 0


async def _serve_until_signal(
    fake: FakeGitHub, host: str, port: int, issued: list[tuple[str, str]], registered: list[str]
) -> None:
    runner = web.AppRunner(fake.app(), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        stop = stop_event()
        bound = runner.addresses[0]
        url = f"http://{f'[{bound[0]}]' if ':' in bound[0] else bound[0]}:{bound[1]}"
        lines = [f"fake GitHub serving on {url} (GHES style under {url}/api/v3)"]
        lines += [f"  app {cid}" for cid in fake.apps]
        lines += [f"  {what}" for what in registered]
        lines += [f"  token for {who}: {token}" for who, token in issued]
        lines.append(f"  deprecated …/tokens/{{access_token}} paths: {'on' if fake.legacy_paths else 'off'}")
        lines.append("stop it with Ctrl-C or SIGTERM")
        print("\n".join(lines), flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
