"""Running the gateway: the event loop, the listener, TLS, workers, signals and draining (DESIGN §9).

With `workers: N > 1` the parent binds the listening socket once, forks N workers that accept on
it (the kernel hands each connection to one of them), restarts a worker that dies, and on
SIGTERM/SIGINT passes the signal on and waits for every worker to drain. A drain frees the main and
admin ports as it begins, so a replacement on the same host starts while requests in flight finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import ssl
import time
from multiprocessing.process import BaseProcess
from pathlib import Path

from aiohttp import web

from . import linewriter, metrics
from .admin import Readiness, admin_app
from .app import Gateway, make_server, open_gateway
from .config import Config, load
from .errors import ConfigError
from .stopping import stop_event

log = logging.getLogger("gateway.server")

RESTART_BACKOFF_MAX = 30.0  # seconds between restarts of a worker that keeps dying
STABLE_AFTER = 60.0  # a worker death this long after the last one starts the backoff afresh


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


class _Reloader:
    """The gateway serving now, and SIGHUP's swap to one built from the file read again.

    The whole config is one immutable object: a reload builds a new Gateway from it and swaps it in
    for new requests, while requests in flight finish on the one they started with (its sessions
    close after `shutdown_timeout`). A file with any problem is refused and logged; the running
    config stays. The listener (`_LISTENER`: its sockets, and the bounds of the connections it accepts)
    only changes with a restart.
    """

    def __init__(self, path: Path, config: Config) -> None:
        self._path = path
        self.config = config
        self._stack = contextlib.AsyncExitStack()
        self._retiring: set[asyncio.Task[None]] = set()
        self.current: Gateway | None = None

    async def __aenter__(self) -> _Reloader:
        self.current = await self._stack.enter_async_context(open_gateway(self.config))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._retiring:
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self._stack.aclose()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Serve a request with the gateway of the config in force when it arrived."""
        assert self.current is not None
        return await self.current.handle(request)

    async def reload(self) -> None:
        """Read the file again; swap in its config, or log why not and keep the running one."""
        try:
            config = load(self._path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused, the running config stays: %s", problem)
            return
        fixed = [k for k in _LISTENER if getattr(config.server, k) != getattr(self.config.server, k)]
        if fixed:
            log.warning(
                "reload: server.%s only change with a restart; kept as they were", ", server.".join(fixed)
            )
        stack = contextlib.AsyncExitStack()
        fresh = await stack.enter_async_context(open_gateway(config))
        old_stack, self._stack = self._stack, stack
        self.current, self.config = fresh, config
        task = asyncio.ensure_future(self._retire(old_stack, self.config.server.shutdown_timeout))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        log.info("reloaded %s", self._path)

    @staticmethod
    async def _retire(stack: contextlib.AsyncExitStack, grace: float) -> None:
        try:
            await asyncio.sleep(grace)  # requests in flight on the old config finish first
        finally:
            await stack.aclose()


async def _serve(path: Path, config: Config, sock: socket.socket) -> None:
    stop = stop_event()
    loop = asyncio.get_running_loop()
    async with _Reloader(path, config) as live, contextlib.AsyncExitStack() as listeners:
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(live.reload()))
        readiness = Readiness(lambda: live.current is not None and live.current.github.usable)
        server = make_server(live.handle, config.server)
        runner = web.ServerRunner(server, shutdown_timeout=config.server.shutdown_timeout)
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


def _worker(path: Path, config: Config, sock: socket.socket) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which passes SIGTERM on
    # the parent's handler came with the fork and would swallow SIGTERM: until the event loop
    # installs its own, SIGTERM ends a worker that has nothing in flight yet
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _install_uvloop()
    try:
        asyncio.run(_serve(path, config, sock))
    finally:
        linewriter.drain()  # a worker ends with os._exit, without returning to the command's own drain


def serve(path: Path, config: Config) -> None:
    """Serve `config` (read from `path`) until SIGINT/SIGTERM, then stop accepting and let in-flight
    requests finish; SIGHUP reads `path` again."""
    sock = _listen(config)
    workers = config.server.worker_count
    if workers == 1:
        _install_uvloop()
        asyncio.run(_serve(path, config, sock))
        return
    _Supervisor(path, config, sock, workers).run()


class _Supervisor:
    """Keeps N worker processes serving one socket; restarts the ones that die."""

    def __init__(self, path: Path, config: Config, sock: socket.socket, count: int) -> None:
        self._path = path
        self._config = config
        self._sock = sock
        self._count = count
        self._context = multiprocessing.get_context("fork")
        self._workers: list[BaseProcess] = []
        self._stopping = False
        self._failures = 0
        self._last_failure = 0.0

    def _spawn(self) -> BaseProcess:
        process = self._context.Process(
            target=_worker, args=(self._path, self._config, self._sock), daemon=False
        )
        process.start()
        return process

    def _stop(self, signum: int, _frame: object) -> None:
        self._stopping = True

    def _reload(self, signum: int, _frame: object) -> None:
        for worker in self._workers:  # each worker reads the file again and swaps on its own
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signal.SIGHUP)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._reload)
        self._workers = [self._spawn() for _ in range(self._count)]
        log.info("supervising %d workers: %s", self._count, [w.pid for w in self._workers])
        while not self._stopping:
            multiprocessing.connection.wait([w.sentinel for w in self._workers], timeout=0.5)
            self._replace_dead()
        self._drain()

    def _replace_dead(self) -> None:
        for i, worker in enumerate(self._workers):
            if worker.is_alive() or self._stopping:
                continue
            now = time.monotonic()
            self._failures = 1 if now - self._last_failure > STABLE_AFTER else self._failures + 1
            self._last_failure = now
            delay = min(RESTART_BACKOFF_MAX, 0.1 * 2 ** min(self._failures, 10))
            log.error("worker %s exited with %s; restarting in %.1fs", worker.pid, worker.exitcode, delay)
            if worker.pid is not None:
                metrics.worker_exited(worker.pid)
            time.sleep(delay)
            if not self._stopping:  # SIGTERM may have come during the backoff
                self._workers[i] = self._spawn()

    def _drain(self) -> None:
        # the workers stop accepting as they drain; this copy of the socket must not keep the port
        # bound meanwhile, or a replacement on this host could not start until the drain is over
        self._sock.close()
        for worker in self._workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._config.server.shutdown_timeout + 5
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                worker.kill()
                worker.join()
        log.info("all workers stopped")
