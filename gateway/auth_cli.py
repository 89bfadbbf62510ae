"""`gateway auth login|token|status|logout [--gateway URL]`: an end user's token of the gateway's app,
from GitHub's device flow (DESIGN §12).

`login` reads `{gateway}/_gateway/sign-in/config`, runs the device flow at GitHub (`DeviceFlow`),
stores the token in the credentials file (`gateway.credentials`) and asks `whoami` whose it is.
`token` prints a valid token on stdout and nothing else, renewing a GitHub App token that expires
within 5 minutes through `POST {gateway}/_gateway/refresh` first (the gateway holds the app's secret,
this program never does). `status` shows `whoami`. `logout` revokes the token
(`POST {gateway}/_gateway/logout`) and forgets it; when it cannot be revoked it is forgotten all the
same, and the user is told where to revoke it by hand. Which gateway: `--gateway URL`, else
$GATEWAY_URL, else the only one in the credentials file.

No token is ever printed but by `token`, nor put in a message. Every failure is one line on stderr
and an exit code (`auth_client.Failure` draws them): 0 ok, 1 not signed in or credentials unusable,
2 usage, 3 access denied at GitHub, 4 the device code expired, 5 the gateway unreachable or
answering unusably, 6 GitHub unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import webbrowser
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TextIO

import aiohttp

from .auth_client import (
    AccessDenied,
    CodeExpired,
    Failure,
    GatewayClient,
    GatewayFailed,
    GitHubFailed,
    NotSignedIn,
    UsageError,
    Whoami,
    shown,
)
from .credentials import Credentials, CredentialsFile, CredentialsUnreadable, credentials_path, normal_url
from .errors import GitHubError, GrantRefused
from .github.web import DeviceCode, DeviceFlow, UserToken

RENEW_BEFORE = 300.0  # seconds: a token expiring sooner is renewed before it is handed out
HTTP_SECONDS = 15.0  # for each call to the gateway or GitHub
GATEWAY_ENV = "GATEWAY_URL"
EXIT_CODES = """exit codes:
  0  ok
  1  not signed in, or the credentials are unusable (run gateway auth login)
  2  usage
  3  access denied at GitHub
  4  the device code expired before it was approved
  5  the gateway unreachable or answering unusably
  6  GitHub unreachable"""


@dataclass(frozen=True)
class Terminal:
    """What the command talks to besides the network: passed in, so tests can run it in-process."""

    out: TextIO
    err: TextIO
    env: Mapping[str, str]
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.time
    browser: Callable[[str], object] | None = field(default=None)  # None: never open one

    @classmethod
    def system(cls) -> Terminal:
        """The real one: stdout, stderr, the environment, and a browser when one can be shown."""
        return cls(sys.stdout, sys.stderr, os.environ, browser=_system_browser(os.environ, sys.stderr))


def _system_browser(env: Mapping[str, str], err: TextIO) -> Callable[[str], object] | None:
    if not err.isatty():
        return None  # nobody is watching: a script, a CI job
    if sys.platform.startswith("linux") and not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        return None  # webbrowser would start a text browser, taking this terminal over
    return webbrowser.open


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `auth` subcommand and its operations."""
    parser.epilog = EXIT_CODES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    ops = parser.add_subparsers(dest="operation", required=True, metavar="OPERATION")
    helps = {
        "login": "sign in with GitHub (device flow) and keep the token for this gateway",
        "token": "print a valid token, and nothing else, on stdout (renewed first when it expires soon)",
        "status": "who you are signed in as: user, id, scopes, groups, expiry",
        "logout": "revoke the token and forget it",
    }
    for name, text in helps.items():
        op = ops.add_parser(
            name,
            help=text,
            description=f"{text}.",
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        op.add_argument(
            "--gateway",
            metavar="URL",
            help=f"the gateway (default: ${GATEWAY_ENV}, else the only one signed in to)",
        )
        if name == "login":
            op.add_argument("--no-browser", action="store_true", help="do not open a browser")
        if name == "status":
            op.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    """Carry out one `gateway auth` operation; returns the exit code."""
    terminal = Terminal.system()
    try:
        return asyncio.run(main(args, terminal))
    except KeyboardInterrupt:
        print("gateway auth: interrupted", file=terminal.err)
        return 130


async def main(args: argparse.Namespace, terminal: Terminal) -> int:
    """One operation, with its output on `terminal`; the exit code."""
    try:
        files = CredentialsFile(credentials_path(terminal.env))
        url = _which_gateway(args.gateway, terminal.env, files)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=True) as session:
            command = Command(terminal, files, GatewayClient(session, url, timeout=HTTP_SECONDS), session)
            await OPERATIONS[args.operation](command, args)
    except CredentialsUnreadable as exc:
        return _failed(terminal, NotSignedIn(f"{exc}: delete it and run `gateway auth login`"))
    except OSError as exc:  # the credentials file's directory, lock or file could not be written
        return _failed(terminal, NotSignedIn(f"{shown(exc.filename)}: {exc.strerror}"))
    except Failure as exc:
        return _failed(terminal, exc)
    return 0


def _failed(terminal: Terminal, failure: Failure) -> int:
    print(f"gateway auth: {failure}", file=terminal.err)
    return failure.exit_code


def _which_gateway(given: str | None, env: Mapping[str, str], files: CredentialsFile) -> str:
    """`--gateway`, else $GATEWAY_URL, else the only gateway signed in to."""
    chosen = given or env.get(GATEWAY_ENV)
    if not chosen:
        known = sorted(files.entries())
        if len(known) == 1:
            return known[0]
        listed = f" (signed in to: {', '.join(known)})" if known else ""
        raise UsageError(f"which gateway? pass --gateway URL or set ${GATEWAY_ENV}{listed}")
    try:
        return normal_url(chosen)
    except ValueError as exc:
        raise UsageError(f"--gateway: {exc}") from exc


@dataclass(frozen=True)
class Command:
    """What an operation works with: the terminal, the credentials file, the gateway."""

    terminal: Terminal
    files: CredentialsFile
    gateway: GatewayClient
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.gateway.url

    def say(self, line: str) -> None:
        """A line for the person (stderr): progress and warnings, never a token."""
        print(line, file=self.terminal.err, flush=True)

    def stored(self) -> Credentials:
        """This gateway's credentials, or NotSignedIn."""
        found = self.files.get(self.url)
        if found is None:
            raise NotSignedIn(
                f"no credentials for {self.url} yet: run `gateway auth login --gateway {self.url}`"
            )
        return found

    def keep(self, credentials: Credentials | None) -> None:
        """Store this gateway's credentials, or forget them (None)."""
        with self.files.locked():
            self.files.put(self.url, credentials)


def _credentials(issued: UserToken, *, client_id: str, web_url: str, now: float) -> Credentials:
    """What to keep of a token GitHub (or the gateway, refreshing) issued `now`."""
    return Credentials(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_at=None if issued.expires_in is None else now + issued.expires_in,
        refresh_token_expires_at=(
            None if issued.refresh_token_expires_in is None else now + issued.refresh_token_expires_in
        ),
        client_id=client_id,
        web_url=web_url,
    )


# ---------------------------------------------------------------------------------------------------
# login


async def _login(command: Command, args: argparse.Namespace) -> None:
    with command.files.locked():
        pass  # a credentials file that cannot be written fails now, not after the person approved
    config = await command.gateway.sign_in_config()
    terminal = command.terminal
    flow = DeviceFlow(
        command.session,
        web_url=config.web_url,
        client_id=config.client_id,
        timeout=HTTP_SECONDS,
        sleep=terminal.sleep,
        clock=terminal.clock,
    )
    with _at_github(command.url, config.web_url):
        code = await flow.start(config.scopes)
        _show_code(command, code, open_browser=not args.no_browser)
        issued = await flow.token(code)
    kept = _credentials(issued, client_id=config.client_id, web_url=config.web_url, now=terminal.clock())
    command.keep(kept)
    try:
        who = await command.gateway.whoami(kept.access_token)
    except NotSignedIn as exc:
        raise GatewayFailed(
            f"signed in at GitHub, but {command.url} does not accept the token: ask its operator"
        ) from exc
    print(f"Signed in to {command.url} as {who.login}", file=terminal.out)


def _show_code(command: Command, code: DeviceCode, *, open_browser: bool) -> None:
    command.say(
        f"To sign in to {command.url}, open {code.verification_uri} and enter the code {code.user_code}"
    )
    command.say(f"Waiting for you at GitHub (the code expires in {_duration(code.expires_in)}; Ctrl-C stops)")
    if open_browser and command.terminal.browser is not None:
        command.terminal.browser(code.verification_uri)


@contextlib.contextmanager
def _at_github(url: str, web_url: str) -> Iterator[None]:
    """Turns GitHub's refusals and failures during the device flow into this command's Failures."""
    try:
        yield
    except GrantRefused as exc:
        raise _refusal(exc, url) from exc
    except GitHubError as exc:
        raise GitHubFailed(f"GitHub ({web_url}) could not be used: {exc}") from exc


def _refusal(exc: GrantRefused, url: str) -> Failure:
    said = f" ({shown(exc.description)})" if exc.description else ""
    again = f"run `gateway auth login --gateway {url}` to try again"
    if exc.code == "access_denied":
        return AccessDenied(f"the sign-in was declined at GitHub: {again}")
    if exc.code == "unverified_user_email":
        return AccessDenied(f"GitHub refused the sign-in: your primary email is not verified{said}")
    if exc.code == "expired_token":
        return CodeExpired(f"the code expired before it was approved: {again}")
    return GatewayFailed(
        f"GitHub refused to sign you in with {url}'s app ({shown(exc.code)}){said}: ask the gateway's"
        " operator (is the device flow enabled for the app?)"
    )


# ---------------------------------------------------------------------------------------------------
# token, status, logout


async def _valid(command: Command) -> Credentials:
    """The stored credentials, renewed through the gateway first when the token expires soon. A
    renewal that fails while the token still works is a warning, and the token is used."""
    now = command.terminal.clock
    held = command.stored()
    if not _expiring(held, now()):
        return held
    with command.files.locked():
        held = command.stored()  # another `gateway auth` may have renewed it while this one waited
        if not _expiring(held, now()):
            return held
        try:
            renewed = await _renewed(command, held)
        except Failure as exc:
            assert held.expires_at is not None
            if held.expires_at - now() <= 0:
                raise
            command.say(
                f"gateway auth: warning: {exc} (the token works {_duration(held.expires_at - now())} more)"
            )
            return held
        command.files.put(command.url, renewed)
        return renewed


def _expiring(held: Credentials, now: float) -> bool:
    return held.expires_at is not None and held.expires_at - now <= RENEW_BEFORE


async def _renewed(command: Command, held: Credentials) -> Credentials:
    now = command.terminal.clock()
    if held.refresh_token is None or (
        held.refresh_token_expires_at is not None and held.refresh_token_expires_at <= now
    ):
        raise NotSignedIn(
            f"the token for {command.url} has expired: run `gateway auth login --gateway {command.url}`"
        )
    issued = await command.gateway.refresh(held.refresh_token, held.client_id)
    return _credentials(issued, client_id=held.client_id, web_url=held.web_url, now=now)


async def _token(command: Command, _args: argparse.Namespace) -> None:
    print((await _valid(command)).access_token, file=command.terminal.out)


async def _status(command: Command, args: argparse.Namespace) -> None:
    held = await _valid(command)
    who = await command.gateway.whoami(held.access_token)
    expires_at = who.expires_at if who.expires_at is not None else held.expires_at
    if args.json:
        shown_json = {
            "gateway": command.url,
            "login": who.login,
            "id": who.id,
            "scopes": list(who.scopes),
            "groups": None if who.groups is None else list(who.groups),
            "client_id": who.client_id,
            "expires_at": expires_at,
            "refresh_token_expires_at": held.refresh_token_expires_at,
        }
        print(json.dumps(shown_json, indent=2), file=command.terminal.out)
        return
    for line in _status_lines(command.url, who, expires_at, held, command.terminal.clock()):
        print(line, file=command.terminal.out)


def _status_lines(
    url: str, who: Whoami, expires_at: float | None, held: Credentials, now: float
) -> list[str]:
    lines = [
        f"Signed in to {url} as {who.login} (id {who.id})",
        f"  scopes:  {', '.join(who.scopes) or '(none)'}",
    ]
    if who.groups is not None:
        lines.append(f"  groups:  {', '.join(who.groups) or '(none)'}")
    if expires_at is None:
        lines.append("  expires: never")
    else:
        lines.append(f"  expires: {_when(expires_at)} (in {_duration(expires_at - now)})")
    if held.refresh_token is not None:
        until = (
            "" if held.refresh_token_expires_at is None else f" until {_when(held.refresh_token_expires_at)}"
        )
        lines.append(f"  renewed: through the gateway, automatically{until}")
    lines.append(f"  app:     {who.client_id}")
    return lines


async def _logout(command: Command, _args: argparse.Namespace) -> None:
    held = command.stored()
    try:
        revoked = await command.gateway.logout(held.access_token)
    except (GatewayFailed, GitHubFailed) as exc:
        # the person asked for the token to be gone from this machine: it is, whatever the network says
        command.keep(None)
        raise type(exc)(
            f"the token could NOT be revoked ({exc}); it is forgotten here but stays valid until you"
            f" revoke it at {_revoke_page(held)}"
        ) from exc
    command.keep(None)
    done = "the token is revoked" if revoked else "the token was already invalid"
    print(f"Signed out of {command.url}: {done} and forgotten", file=command.terminal.out)


def _revoke_page(held: Credentials) -> str:
    """Where on GitHub a person revokes their authorization of the app by hand."""
    if held.access_token.startswith("ghu_"):
        return f"{held.web_url}/settings/apps/authorizations"
    return f"{held.web_url}/settings/applications"


OPERATIONS: dict[str, Callable[[Command, argparse.Namespace], Awaitable[None]]] = {
    "login": _login,
    "token": _token,
    "status": _status,
    "logout": _logout,
}


def _when(unix_time: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(unix_time))


def _duration(seconds: float) -> str:
    """`7 h 59 min`, `4 min`, `30 s`, `179 days`: roughly, for a person."""
    seconds = max(0, int(seconds))
    if seconds >= 2 * 86400:
        return f"{seconds // 86400} days"
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min" if seconds >= 60 else f"{seconds} s"
