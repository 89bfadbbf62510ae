"""The `gateway` command: a thin layer that parses arguments and hands them on (README)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

import aiohttp

from . import __version__, auth_cli, config, linewriter, token_cli
from .accesslog import configure_logging
from .errors import ConfigError
from .github import GitHubClient
from .multiprocess import share_metrics_between_workers
from .testing import fake_github_cli


def _with_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        help=f"config file (default: ${config.ENV_PATH}, else ./{config.DEFAULT_PATH})",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _with_config(sub.add_parser("serve", help="run the gateway"))
    check = sub.add_parser("check-config", help="validate a config file; exit 1 listing every problem")
    _with_config(check)
    check.add_argument("--schema", action="store_true", help="print the JSON Schema of gateway.yaml instead")
    check.add_argument(
        "--online",
        action="store_true",
        help="then ask GitHub once per app whether its credentials and check_method work (no token needed)",
    )
    _with_config(sub.add_parser("demo", help="the gateway with a fake GitHub and an echo upstream"))
    token_cli.add_arguments(
        sub.add_parser("token", help="check, reset, delete, delete-grant or scope a token (read from stdin)"),
        _with_config,
    )
    fake_github_cli.add_arguments(sub.add_parser("fake-github", help="serve the fake GitHub alone"))
    auth_cli.add_arguments(
        sub.add_parser(
            "auth",
            help="sign in with GitHub, print a token of the gateway's app, show who you are, sign out",
            description="For the people behind the tokens: get one with GitHub's device flow (login),"
            " print it for scripts (token), show who you are (status), sign out (logout).",
        )
    )
    return parser


def _check_config(args: argparse.Namespace) -> int:
    if args.schema:
        sys.stdout.write(config.json_schema())
        return 0
    path = config.resolve_path(args.config)
    try:
        loaded = config.load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    print(f"{path}: ok ({len(loaded.routes)} routes, {len(loaded.github.apps)} GitHub apps)")
    return _check_online(loaded.github) if args.online else 0


def _check_online(github: config.GitHubConfig) -> int:
    """Ask GitHub about each app (`GitHubClient.verify`); one line per app, exit 1 on any problem."""
    logging.disable(logging.CRITICAL)  # each app's line says what went wrong; log lines would repeat it
    found = asyncio.run(_verify(github))
    for client_id, problem in found.items():
        if problem is None:
            print(f"github app {client_id}: ok (its endpoint answered 404 for a token nobody has)")
        else:
            print(f"github app {client_id}: {problem}", file=sys.stderr)
    return 1 if any(found.values()) else 0


async def _verify(github: config.GitHubConfig) -> dict[str, str | None]:
    async with aiohttp.ClientSession(trust_env=True, cookie_jar=aiohttp.DummyCookieJar()) as session:
        return await GitHubClient(github, session).verify()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `gateway` and `python -m gateway`."""
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args)
    if args.command == "token":
        # its one JSON answer says what went wrong; log lines would only garble it
        logging.disable(logging.CRITICAL)
        return token_cli.run(args)
    if args.command == "auth":
        logging.disable(logging.CRITICAL)  # its one line on stderr says what went wrong
        return auth_cli.run(args)
    configure_logging()
    try:
        return _serving(args)
    finally:
        linewriter.drain()  # what stdout and stderr have buffered is written before the process ends


def _serving(args: argparse.Namespace) -> int:
    """The commands that serve until they are stopped, logging as they go."""
    if args.command == "fake-github":
        return fake_github_cli.run(args)
    try:
        if args.command == "demo":
            from .testing import demo

            return demo.main(args.config)
        path = config.resolve_path(args.config)
        loaded = config.load(path)
        if loaded.server.worker_count > 1:
            share_metrics_between_workers()
        from . import server  # after the line above: prometheus-client picks its mode on import

        server.serve(path, loaded)
    except ConfigError as exc:
        for problem in exc.problems:
            logging.getLogger("gateway").error("config: %s", problem)
        return 2
    return 0
