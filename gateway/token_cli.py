"""`gateway token check|reset|delete|delete-grant|scope`: ops helpers over the OAuth Apps API.

The token is read from `$GATEWAY_TOKEN` or standard input, never from the command line (argv is
visible to every user of the machine). Output is one JSON object on stdout, with the given token
redacted; a newly minted token is printed once. Exit codes: 0 ok, 1 invalid or not found, 2 usage or
config error, 3 GitHub unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

import aiohttp

from . import config as config_module
from .errors import (
    AppCredentialsRejected,
    ConfigError,
    GitHubError,
    GitHubMisconfigured,
    GitHubValidationFailed,
    TargetNotFound,
)
from .github import GitHubClient, IssuedToken
from .identity import Identity

OK, NOT_FOUND, USAGE, UNAVAILABLE = 0, 1, 2, 3
TOKEN_ENV = "GATEWAY_TOKEN"  # noqa: S105 - the name of a variable, not a secret


_TOKEN_SOURCE = f"The token is read from ${TOKEN_ENV} or standard input, never from the command line."
_EXIT_CODES = "exit codes: 0 ok, 1 invalid or not found, 2 usage or config error, 3 GitHub unavailable"


class UsageError(Exception):
    """A problem with how the command was called."""


def redact(token: str) -> str:
    """A token as safe to print: its prefix and last four characters."""
    prefix = token[: token.index("_") + 1] if "_" in token[:12] else ""
    return f"{prefix}****{token[-4:]}" if len(token) >= len(prefix) + 12 else "****"


def read_token(stdin: TextIO, env: dict[str, str]) -> str:
    """The token from $GATEWAY_TOKEN, else the first line of standard input."""
    token = env.get(TOKEN_ENV, "").strip()
    if not token and not stdin.isatty():
        token = stdin.readline().strip()
    if not token:
        raise UsageError(
            f"no token: pipe it on standard input or set ${TOKEN_ENV} (never pass it as an argument)"
        )
    return token


def add_arguments(
    parser: argparse.ArgumentParser, with_config: Callable[[argparse.ArgumentParser], None]
) -> None:
    """The `token` subcommand and its operations."""
    ops = parser.add_subparsers(dest="operation", required=True, metavar="OPERATION")
    helps = {
        "check": "whose token this is (exit 1 when GitHub does not know it)",
        "reset": "replace the token with a new one; the old one stops working; prints the new one once",
        "delete": "revoke the token",
        "delete-grant": "revoke the user's whole grant to the app: every token of theirs for it",
        "scope": "mint a scoped token from a GitHub App user token; prints it once",
    }
    for name, text in helps.items():
        op = ops.add_parser(name, help=text, description=f"{text}. {_TOKEN_SOURCE}", epilog=_EXIT_CODES)
        with_config(op)
        op.add_argument(
            "--app", metavar="CLIENT_ID", help="the configured app to use (default: each in order)"
        )
        if name == "scope":
            target = op.add_mutually_exclusive_group(required=True)
            target.add_argument("--target", help="the organization or user login to scope the token to")
            target.add_argument("--target-id", type=int, help="the id of that organization or user")
            op.add_argument(
                "--repository", action="append", default=[], help="a repository name (repeatable)"
            )
            op.add_argument("--repository-id", action="append", type=int, default=[], help="a repository id")
            op.add_argument(
                "--permission", action="append", default=[], metavar="NAME=LEVEL", help="e.g. contents=read"
            )


def _spec(args: argparse.Namespace) -> config_module.UpstreamTokenConfig:
    permissions = {}
    for item in args.permission:
        name, sep, level = item.partition("=")
        if not sep:
            raise UsageError(f"--permission expects NAME=LEVEL such as contents=read, got {item!r}")
        permissions[name] = level
    try:
        return config_module.UpstreamTokenConfig.model_validate(
            {
                "target": args.target,
                "target_id": args.target_id,
                "repositories": args.repository,
                "repository_ids": args.repository_id,
                "permissions": permissions,
            }
        )
    except ValueError as exc:
        raise UsageError(f"invalid scope: {exc}") from exc


def _issued(issued: IssuedToken, given: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "token": issued.token,
        "replaces": redact(given),
        "identity": issued.identity.as_json(),
    }
    if issued.permissions:
        out["permissions"] = dict(issued.permissions)
    if issued.repositories:
        out["repositories"] = list(issued.repositories)
    return out


async def _operate(client: GitHubClient, args: argparse.Namespace, token: str) -> tuple[int, dict[str, Any]]:
    app = args.app
    shown = redact(token)
    if args.operation == "check":
        identity: Identity | None = await client.check(token)
        if identity is None or (app is not None and identity.client_id != app):
            return NOT_FOUND, {"token": shown, "valid": False}
        return OK, {"token": shown, "valid": True, "identity": identity.as_json()}
    if args.operation in ("reset", "scope"):
        if args.operation == "reset":
            issued = await client.reset(token, client_id=app)
        else:
            issued = await client.scoped(token, _spec(args), client_id=app)
        if issued is None:
            return NOT_FOUND, {
                "token": shown,
                "error": "not_found",
                "message": "no configured app knows this token",
            }
        return OK, _issued(issued, token)
    if args.operation == "delete":
        done = await client.delete(token, client_id=app)
        return (OK if done else NOT_FOUND), {"token": shown, "deleted": done}
    done = await client.delete_grant(token, client_id=app)
    return (OK if done else NOT_FOUND), {"token": shown, "grant_deleted": done}


async def _run(args: argparse.Namespace, token: str) -> tuple[int, dict[str, Any]]:
    config = config_module.load(args.config)
    if args.app is not None and args.app not in {a.client_id for a in config.github.apps}:
        raise UsageError(f"--app {args.app} is not one of the apps in the config")
    async with aiohttp.ClientSession(trust_env=True, cookie_jar=aiohttp.DummyCookieJar()) as session:
        return await _operate(GitHubClient(config.github, session), args, token)


def run(args: argparse.Namespace) -> int:
    """Carry out one `gateway token` operation; prints JSON, returns the exit code."""
    try:
        token = read_token(sys.stdin, dict(os.environ))
        code, out = asyncio.run(_run(args, token))
    except UsageError as exc:
        return _fail(USAGE, "usage", str(exc))
    except ConfigError as exc:
        return _fail(USAGE, "config", "; ".join(exc.problems))
    except AppCredentialsRejected as exc:
        return _fail(USAGE, "app_credentials", str(exc))
    except GitHubMisconfigured as exc:
        return _fail(USAGE, "config", str(exc))
    except TargetNotFound as exc:
        return _fail(NOT_FOUND, "target_not_found", str(exc))
    except GitHubValidationFailed as exc:
        return _fail(NOT_FOUND, "validation_failed", str(exc), details=exc.details)
    except GitHubError as exc:
        return _fail(UNAVAILABLE, "github_unavailable", str(exc))
    print(json.dumps(out, indent=2))
    return code


def _fail(code: int, error: str, message: str, *, details: object = None) -> int:
    out: dict[str, object] = {"error": error, "message": message}
    if details:
        out["details"] = details
    print(json.dumps(out, indent=2), file=sys.stderr)
    return code
