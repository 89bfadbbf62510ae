"""Running the gateway: the event loop, the listener, TLS, workers, signals and draining (DESIGN §9).

With `workers: N > 1` the parent binds the listening socket once, forks N workers that accept on
it (the kernel hands each connection to one of them), restarts a worker that dies, and on
SIGTERM/SIGINT passes the signal on and waits for every worker to drain. A drain frees the main and
admin ports as it begins, so a replacement on the same host starts while requests in flight finish.
The parent owns the config, as gunicorn's arbiter does: it alone reads the file on SIGHUP, sends
what it validated to the running workers, and starts every later worker with it (`_Supervisor`).
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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from types import MappingProxyType
from typing import Any

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
    changed = [k for k, v in kept.items() if getattr(config.server, k) != v]
    if changed:
        log.warning(
            "reload: server.%s only change with a restart; kept as they were", ", server.".join(changed)
        )
    return config.model_copy(update={"server": config.server.model_copy(update=kept)})


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

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
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


def serve(path: Path, config: Config) -> None:
    """Serve `config` (read from `path`) until SIGINT/SIGTERM, then stop accepting and let in-flight
    requests finish; SIGHUP reads `path` again."""
    sock = _listen(config)
    workers = config.server.worker_count
    if workers == 1:
        _install_uvloop()
        asyncio.run(_serve(config, sock, lambda live: live.follow_sighup(path)))
        return
    _Supervisor(path, config, sock, workers).run()


# The supervisor's signals: each handler only queues its signal for the supervisor's loop
_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM}


def _read_only(items: dict[str, str]) -> MappingProxyType[str, str]:
    return MappingProxyType(items)


# a Config reaches running workers pickled (Connection.send); pickle refuses its read-only mappings
# (upstream_token.permissions), which travel as dicts and arrive read-only again
ForkingPickler.register(MappingProxyType, lambda proxy: (_read_only, (dict(proxy),)))


def _worker(config: Config, sock: socket.socket, configs: Connection) -> None:
    # the supervisor owns the config: a worker takes new ones from `configs`, never from the file, so
    # a SIGHUP sent to the whole process group leaves it alone
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which passes SIGTERM on
    # the parent's handler came with the fork and would swallow SIGTERM: until the event loop
    # installs its own, SIGTERM ends a worker that has nothing in flight yet
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)  # blocked since the fork (_Supervisor._spawn)
    _install_uvloop()
    try:
        asyncio.run(_serve(config, sock, lambda live: live.follow_supervisor(configs)))
    finally:
        linewriter.drain()  # a worker ends with os._exit, without returning to the command's own drain


@dataclass(frozen=True)
class _Worker:
    process: BaseProcess
    configs: Connection  # the supervisor's end of the pipe the worker reads new configs from


class _Supervisor:
    """Keeps N worker processes serving one socket with the config in force; restarts the ones that die.

    It owns the config, as gunicorn's arbiter does: on SIGHUP it reads and validates the file (a bad
    one is refused and logged), keeps the new config, and sends it to each running worker, which
    swaps it in; every worker started afterwards, a replacement included, forks with it. The signal
    handlers only queue; the loop acts between its other steps, so a reload never misses a worker
    being started, and a stop is never held up by (nor followed by) a restart's backoff.
    """

    def __init__(self, path: Path, config: Config, sock: socket.socket, count: int) -> None:
        self._path = path
        self._config = config
        self._sock = sock
        self._count = count
        self._context = multiprocessing.get_context("fork")
        self._workers: list[_Worker] = []
        self._restarts: list[float] = []  # when each dead worker's replacement is due (monotonic)
        self._signals: list[int] = []
        self._wakeup = -1
        self._stopping = False
        self._failures = 0
        self._last_failure = 0.0

    def run(self) -> None:
        self._queue_signals()
        self._workers = [self._spawn() for _ in range(self._count)]
        while True:
            self._wait()
            self._act_on_signals()
            if self._stopping:
                break
            self._reap()
            self._restart_due()
        self._drain()

    def _queue_signals(self) -> None:
        self._wakeup, wake = os.pipe()
        os.set_blocking(self._wakeup, False)
        os.set_blocking(wake, False)
        signal.set_wakeup_fd(wake)  # a signal ends the loop's wait, even one that came just before it
        for sig in _SIGNALS:
            signal.signal(sig, lambda signum, _frame: self._signals.append(signum))

    def _wait(self) -> None:
        """Until a signal, a worker's death, or the next restart falls due."""
        due = min(self._restarts, default=None)
        timeout = None if due is None else max(0.0, due - time.monotonic())
        sentinels = [worker.process.sentinel for worker in self._workers]
        if self._wakeup in multiprocessing.connection.wait([self._wakeup, *sentinels], timeout):
            os.read(self._wakeup, 4096)  # the bytes only wake; the handlers queued the signals

    def _act_on_signals(self) -> None:
        while self._signals:
            if self._signals.pop(0) == signal.SIGHUP:
                self._reload()
            else:
                self._stopping = True

    def _reload(self) -> None:
        config = _reread(self._path, self._config)
        if config is None:
            return
        self._config = config  # what every worker started from now on runs
        for worker in self._workers:
            # a config pickles to a few KB and the pipe holds 64 KiB: a worker still starting, which
            # reads it once it can, does not hold the supervisor up
            with contextlib.suppress(OSError):  # it died meanwhile: its replacement starts with `config`
                worker.configs.send(config)
        log.info("reloaded %s", self._path)

    def _spawn(self) -> _Worker:
        """A worker forked with the config in force, which reads the ones after it from a pipe."""
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker, args=(self._config, self._sock, receiver), daemon=False
        )
        # the child starts with the supervisor's signals blocked: one sent before it has set its own
        # handling (_worker) waits for that, instead of running the supervisor's handler in the child
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        receiver.close()  # the worker's end
        log.info("worker %s started", process.pid)
        return _Worker(process, sender)

    def _reap(self) -> None:
        """Schedule a replacement for each worker that died, later the more often they die."""
        for worker in [w for w in self._workers if not w.process.is_alive()]:
            self._workers.remove(worker)
            worker.configs.close()
            pid, delay = worker.process.pid, self._backoff()
            log.error("worker %s exited with %s; restarting in %.1fs", pid, worker.process.exitcode, delay)
            if pid is not None:
                metrics.worker_exited(pid)
            self._restarts.append(time.monotonic() + delay)

    def _backoff(self) -> float:
        now = time.monotonic()
        self._failures = 1 if now - self._last_failure > STABLE_AFTER else self._failures + 1
        self._last_failure = now
        return min(RESTART_BACKOFF_MAX, 0.1 * 2.0 ** min(self._failures, 10))

    def _restart_due(self) -> None:
        now = time.monotonic()
        self._workers += [self._spawn() for due in self._restarts if due <= now]
        self._restarts = [due for due in self._restarts if due > now]

    def _drain(self) -> None:
        # the workers stop accepting as they drain; this copy of the socket must not keep the port
        # bound meanwhile, or a replacement on this host could not start until the drain is over
        self._sock.close()
        for worker in self._workers:
            if worker.process.pid is not None and worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._config.server.shutdown_timeout + 5
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        log.info("all workers stopped")
