"""Running the gateway: the event loop, the listener, TLS, workers, signals and draining (README: Workers).

With `workers: N > 1` the parent binds the listening socket once and hands it to a supervisor
(supervisor.py) that forks N workers accepting on it (the kernel hands each connection to one of
them); each worker runs the loop below. A drain frees the main and admin ports as it begins, so a
replacement on the same host starts while requests in flight finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiohttp import web

from .admin import Readiness, admin_app
from .app import Gateway, open_gateway
from .config import Config, load
from .errors import ConfigError
from .listener import Request, Response, make_runner
from .responses import refusal_response
from .stopping import stop_event
from .supervisor import Supervisor

log = logging.getLogger("gateway.server")


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    tls = config.server.tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional where it does not build
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _listen(config: Config) -> socket.socket:
    """The listening socket, bound once (so every worker shares one accept queue)."""
    host = config.server.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, config.server.port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


# what a reload cannot change: the sockets, and the bounds of the connections accepted on them
_LISTENER = (
    *("host", "port", "workers", "tls"),
    *("header_timeout", "keepalive_timeout", "max_header_size", "max_connections"),
)


def _reread(path: Path, running: Config) -> Config | None:
    """The config to reload to: the file read again, with `running`'s listener (`_LISTENER`), which
    only changes with a restart. None if the file has any problem: each is logged, the running config
    stays."""
    try:
        config = load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("reload refused, the running config stays: %s", problem)
        return None
    kept = {k: getattr(running.server, k) for k in _LISTENER}
    changed = [f"server.{k}" for k, v in kept.items() if getattr(config.server, k) != v]
    if config.admin != running.admin:  # every worker's admin listener is bound once, at its start
        changed.append("admin")
    if changed:
        log.warning("reload: %s only change with a restart; kept as they were", ", ".join(changed))
    server = config.server.model_copy(update=kept)
    return config.model_copy(update={"server": server, "admin": running.admin})


class _Reloader:
    """The gateway serving now, and the swaps to one built from a new config.

    The whole config is one immutable object: a reload builds a new Gateway from it and swaps it in
    for new requests, while requests in flight finish on the one they started with (its sessions
    close after `shutdown_timeout`). Swaps happen one at a time, in the order their configs came.
    New configs come from the file on SIGHUP in a single process, from the supervisor in a worker.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._stack = contextlib.AsyncExitStack()
        self._swapping = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.current: Gateway | None = None

    async def __aenter__(self) -> _Reloader:
        self.current = await self._stack.enter_async_context(open_gateway(self._config))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stack.aclose()

    async def handle(self, request: Request) -> Response:
        """Serve a request with the gateway of the config in force when it arrived."""
        assert self.current is not None
        return await self.current.handle(request)

    def follow_sighup(self, path: Path) -> None:
        """Reload from `path` on each SIGHUP: a single process, with no supervisor, reads it itself."""

        def reread() -> None:
            if (config := _reread(path, self._config)) is not None:
                self.reload(config)

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reread)

    def follow_supervisor(self, configs: Connection) -> None:
        """Reload to each config the supervisor sends down `configs`; one sent before this worker
        read it (while it was starting) waits in the pipe until now."""
        # no EOF to watch for: this process has held a copy of the pipe's write end since its fork
        asyncio.get_running_loop().add_reader(configs.fileno(), lambda: self.reload(configs.recv()))

    def reload(self, config: Config) -> None:
        """Swap `config` in for new requests, once the swaps before it are done."""
        self._run(self._swap(config))

    async def _swap(self, config: Config) -> None:
        async with self._swapping:
            stack = contextlib.AsyncExitStack()
            fresh = await stack.enter_async_context(open_gateway(config))
            old_stack, self._stack = self._stack, stack
            self.current = fresh
        self._run(self._retire(old_stack, config.server.shutdown_timeout))
        log.info("config reloaded (pid %d)", os.getpid())

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)  # cancelled on the way out, not left pending
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _retire(stack: contextlib.AsyncExitStack, grace: float) -> None:
        try:
            await asyncio.sleep(grace)  # requests in flight on the old config finish first
        finally:
            await stack.aclose()


async def _serve(config: Config, sock: socket.socket, follow: Callable[[_Reloader], None]) -> None:
    """Serve on `sock` until SIGINT/SIGTERM, then drain; `follow` hooks up where new configs come from."""
    stop = stop_event()
    async with _Reloader(config) as live, contextlib.AsyncExitStack() as listeners:
        follow(live)
        readiness = Readiness(lambda: "not started" if live.current is None else live.current.github.problem)
        runner = make_runner(
            live.handle,
            config.server,
            refuse=refusal_response,
            shutdown_timeout=config.server.shutdown_timeout,
        )
        await runner.setup()
        # on the way out: stop accepting, then wait up to shutdown_timeout for requests in flight
        listeners.push_async_callback(runner.cleanup)
        site = web.SockSite(runner, sock, ssl_context=_ssl_context(config))
        await site.start()
        if config.admin is not None:
            admin = web.AppRunner(admin_app(readiness), access_log=None)
            await admin.setup()
            # closed first, as the drain begins: a replacement on this host can take the admin port
            # (and the main one) while requests in flight here finish
            listeners.push_async_callback(admin.cleanup)
            # reuse_port: with workers, each one answers on the admin port (metrics are summed over all)
            shared = config.server.worker_count > 1
            await web.TCPSite(admin, config.admin.host, config.admin.port, reuse_port=shared).start()
        # everything built at start-up lives as long as the process: keep it out of every future
        # collection, so a full collection scans only what requests left behind (tail latency)
        gc.collect()
        gc.freeze()
        log.info("gateway listening on %s (pid %d)", site.name, os.getpid())
        await stop.wait()
        readiness.draining = True
        log.info("draining: no new connections, requests in flight finish within shutdown_timeout")
    log.info("stopped (pid %d)", os.getpid())


def serve(path: Path, config: Config) -> None:
    """Serve `config` (read from `path`) until SIGINT/SIGTERM, then stop accepting and let in-flight
    requests finish; SIGHUP reads `path` again."""
    sock = _listen(config)
    workers = config.server.worker_count
    if workers == 1:
        _install_uvloop()
        asyncio.run(_serve(config, sock, lambda live: live.follow_sighup(path)))
        return
    Supervisor(config, sock, workers, work=_work, reread=lambda running: _reread(path, running)).run()


def _work(config: Config, sock: socket.socket, configs: Connection) -> None:
    """A worker's life: serve `config`, swapping in each one the supervisor sends down `configs`."""
    _install_uvloop()
    asyncio.run(_serve(config, sock, lambda live: live.follow_supervisor(configs)))
