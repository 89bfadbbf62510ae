"""`gateway fake-github`: serve the fake GitHub alone, with apps, tokens, accounts and an
organisation to try it with, and the device and web flows people sign in with.

    --app CLIENT_ID:SECRET        an app (repeatable); its kind from the client id's shape: Iv1.…/Iv23…
                                  a GitHub App, anything else an OAuth App (default: both demo apps,
                                  DEMO_APP a GitHub App and DEMO_OAUTH_APP an OAuth App)
    --token LOGIN:ID:SCOPES[:CLIENT_ID]
                                  an OAuth App token (gho_, with scopes; default: the first OAuth App)
    --app-token LOGIN:ID[:CLIENT_ID]
                                  a GitHub App user token (ghu_, 8 hours; default: the first GitHub App)
    --user LOGIN:ID               someone who can sign in, without a token yet
    --account, --org, --team      what the membership API knows (see --help)
    --callback-url CLIENT_ID=URL  a callback URL of an app: a web flow's redirect_uri must match one
                                  (or, for an OAuth App, be under one); without any, any is accepted
    --no-device-flow CLIENT_ID    the app has the device flow disabled (device_flow_disabled)
    --device-interval SECONDS     the device flow's polling interval (GitHub's 5; 0 for tests)
    --auto-approve LOGIN          approve every device code and authorize request at once, for LOGIN
    --signed-in LOGIN             who is signed in at the browser: the login the approve pages prefill
    --legacy-paths, --latency     the deprecated token paths (an old GHES); a delay before each answer
    --exhaust-rate-limit KIND[:STATUS]
                                  every authenticated API call refused for an hour as past a spent
                                  budget: `primary` (403, X-RateLimit-Remaining: 0 and the reset) or
                                  `secondary` (403, Retry-After: 60); `:429` answers 429 instead

It prints the URL it serves (the web flows at URL/login/…, the API at URL and URL/api/v3), the apps with
their kinds, and each token issued.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys

from ..stopping import stop_event
from .fake_github import DEMO_APP, DEMO_OAUTH_APP, GITHUB_APP, OAUTH_APP, FakeGitHub
from .fake_github_apps import Kind
from .fake_github_oauth import DEVICE_INTERVAL

__all__ = ["add_arguments", "run"]

_SCOPES = re.compile(r"[a-z0-9:_-]+(,[a-z0-9:_-]+)*")


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
        help=f"an app the fake knows (repeatable; Iv1./Iv23 client ids are GitHub Apps, others OAuth Apps;"
        f" default: {':'.join(DEMO_APP)} and {':'.join(DEMO_OAUTH_APP)})",
    )
    parser.add_argument(
        "--token",
        dest="tokens",
        action="append",
        metavar="LOGIN:ID:SCOPES[:CLIENT_ID]",
        help="issue an OAuth App token (gho_; default: the first OAuth App), print it (repeatable);"
        " SCOPES comma-separated, may be empty",
    )
    parser.add_argument(
        "--app-token",
        dest="app_tokens",
        action="append",
        metavar="LOGIN:ID[:CLIENT_ID]",
        help="issue a GitHub App user token (ghu_, expires in 8 hours; default: the first GitHub App) and"
        " print it (repeatable)",
    )
    parser.add_argument(
        "--user",
        dest="users",
        action="append",
        metavar="LOGIN:ID",
        help="someone who can sign in through the flows, without a token yet (repeatable)",
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
    _add_flow_arguments(parser)
    parser.add_argument(
        "--legacy-paths", action="store_true", help="serve the deprecated …/tokens/{token} paths"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, metavar="SECONDS", help="delay before each answer"
    )
    parser.add_argument(
        "--exhaust-rate-limit",
        type=_rate_limit_arg,
        metavar="KIND[:STATUS]",
        help="refuse every authenticated API call for an hour, as GitHub does once a budget is spent:"
        " primary (X-RateLimit-Remaining: 0) or secondary (Retry-After: 60); STATUS 403 (default) or 429",
    )


_SECONDARY_RETRY_AFTER = 60  # seconds, GitHub's usual wait after a secondary limit


def _rate_limit_arg(value: str) -> tuple[int, int | None]:
    """(status, retry_after) of an --exhaust-rate-limit spec."""
    kind, _, status = value.partition(":")
    if kind not in ("primary", "secondary") or status not in ("", "403", "429"):
        raise argparse.ArgumentTypeError(f"expected primary or secondary, then :403 or :429, got {value!r}")
    return int(status or 403), _SECONDARY_RETRY_AFTER if kind == "secondary" else None


def _add_flow_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the device and web flows."""
    parser.add_argument(
        "--callback-url",
        dest="callback_urls",
        action="append",
        type=_callback_arg,
        metavar="CLIENT_ID=URL",
        help="a callback URL of an app, that a web flow's redirect_uri must match (repeatable; none: any)",
    )
    parser.add_argument(
        "--no-device-flow",
        dest="no_device_flow",
        action="append",
        metavar="CLIENT_ID",
        help="an app with the device flow disabled (repeatable)",
    )
    parser.add_argument(
        "--device-interval",
        type=int,
        default=DEVICE_INTERVAL,
        metavar="SECONDS",
        help="seconds a device-flow client must wait between polls (default: %(default)s, GitHub's)",
    )
    parser.add_argument(
        "--auto-approve",
        metavar="LOGIN",
        help="approve every device code and authorize request at once, as this user",
    )
    parser.add_argument(
        "--signed-in", metavar="LOGIN", help="who is signed in at the browser (default: the first user)"
    )


def _callback_arg(value: str) -> tuple[str, str]:
    client_id, _, url = value.partition("=")
    if not client_id or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected CLIENT_ID=URL, got {value!r}")
    return client_id, url


def _first(fake: FakeGitHub, kind: Kind, option: str) -> str:
    """The client id of the fake's first app of this kind."""
    found = next((cid for cid, app in fake.settings.items() if app.kind == kind), None)
    if found is None:
        raise ValueError(f"{option}: no {'GitHub App' if kind == GITHUB_APP else 'OAuth App'} among --app")
    return found


def _issue(fake: FakeGitHub, spec: str) -> tuple[str, str]:
    """Issue the token a --token spec describes; returns (description, token)."""
    parts = spec.split(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit():
        raise ValueError(f"--token: expected LOGIN:ID:SCOPES[:CLIENT_ID], got {spec!r}")
    login, uid, scopes = parts
    head, _, tail = scopes.rpartition(":")
    if tail in fake.apps:  # scopes contain ':' too (read:org): a trailing known client_id is the app
        scopes, client_id = head, tail
    else:
        client_id = _first(fake, OAUTH_APP, "--token")
    if fake.settings[client_id].kind != OAUTH_APP:
        raise ValueError(f"--token: {client_id} is a GitHub App: --app-token issues its tokens")
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
    client_id = client_id or _first(fake, GITHUB_APP, "--app-token")
    token = fake.add_token(login, int(uid), client_id=client_id)
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


def _add_user(fake: FakeGitHub, spec: str) -> str:
    """Register the person a --user spec describes; returns its description."""
    login, _, uid = spec.partition(":")
    if not login or not uid.isdigit() or int(uid) == 0:
        raise ValueError(f"--user: expected LOGIN:ID, got {spec!r}")
    fake.add_user(login, int(uid))
    return f"{login} (id {uid})"


def _configure_flows(fake: FakeGitHub, args: argparse.Namespace) -> None:
    """The apps' callback URLs and device-flow switches, and who approves at the browser."""
    callbacks: dict[str, list[str]] = {}
    for client_id, url in args.callback_urls or ():
        callbacks.setdefault(client_id, []).append(url)
    for client_id in [*callbacks, *(args.no_device_flow or ())]:
        fake.app_of(client_id)  # ValueError naming the known apps
    for client_id, app in list(fake.settings.items()):
        fake.register_app(
            client_id,
            app.secret,
            kind=app.kind,
            callback_urls=callbacks.get(client_id, ()),
            device_flow=client_id not in (args.no_device_flow or ()),
        )
    for option, login in (("--auto-approve", args.auto_approve), ("--signed-in", args.signed_in)):
        if login is not None and fake.user(login) is None:
            raise ValueError(f"{option}: unknown user {login!r}: name one of --user, --token or --app-token")
    fake.flows.auto_approve, fake.flows.signed_in = args.auto_approve, args.signed_in


def run(args: argparse.Namespace) -> int:
    """Serve a fake GitHub until SIGINT or SIGTERM; returns the exit status."""
    apps = dict(args.apps or [DEMO_APP, DEMO_OAUTH_APP])
    fake = FakeGitHub(apps, legacy_paths=args.legacy_paths, device_interval=args.device_interval)
    fake.latency = args.latency
    if args.exhaust_rate_limit is not None:
        status, retry_after = args.exhaust_rate_limit
        fake.exhaust_rate_limit(reset_in=3600, status=status, retry_after=retry_after)
    try:
        registered = [f"account {_add_account(fake, spec)}" for spec in args.accounts or ()]
        registered += [f"user {_add_user(fake, spec)}" for spec in args.users or ()]
        issued = [_issue(fake, spec) for spec in args.tokens or ()]
        issued += [_issue_app_token(fake, spec) for spec in args.app_tokens or ()]
        registered += [f"organisation {_add_org(fake, spec)}" for spec in args.orgs or ()]
        registered += [f"team {_add_team(fake, spec)}" for spec in args.teams or ()]
        _configure_flows(fake, args)
    except ValueError as exc:
        print(f"gateway fake-github: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve_until_signal(fake, args.host, args.port, issued, registered))
    return 0


def _banner(fake: FakeGitHub, issued: list[tuple[str, str]], registered: list[str]) -> str:
    url = fake.web_url
    kinds = {GITHUB_APP: "GitHub App", OAUTH_APP: "OAuth App"}
    lines = [f"fake GitHub serving on {url} (GHES style under {url}/api/v3)"]
    lines.append(f"  web flows at {url}/login/device and {url}/login/oauth/authorize")
    lines += [f"  app {cid} ({kinds[app.kind]})" for cid, app in fake.settings.items()]
    lines += [f"  {what}" for what in registered]
    lines += [f"  token for {who}: {token}" for who, token in issued]
    approver = fake.flows.auto_approve
    lines.append(f"  device interval {fake.flows.interval}s; auto-approve: {approver or 'off'}")
    lines.append(f"  deprecated …/tokens/{{access_token}} paths: {'on' if fake.legacy_paths else 'off'}")
    if fake.rate_limited is not None:
        lines.append(f"  rate limit: exhausted, every authenticated API call answered {fake.rate_limited}")
    lines.append("stop it with Ctrl-C or SIGTERM")
    return "\n".join(lines)


async def _serve_until_signal(
    fake: FakeGitHub, host: str, port: int, issued: list[tuple[str, str]], registered: list[str]
) -> None:
    runner = await fake.start(host, port)
    try:
        stop = stop_event()
        print(_banner(fake, issued, registered), flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
