"""`workers: N`: N processes serving one socket under a supervisor that owns the config (README: Workers).

As gunicorn's arbiter does, the supervisor owns the config: on SIGHUP it alone reads the file (a bad
one is refused and logged, the running config stays), keeps the new config and sends it down a pipe
to each running worker; every worker it starts afterwards, the replacement for a dead one included,
forks with it. It restarts a worker that dies, later the more often they die, and on SIGTERM/SIGINT
passes SIGTERM on and waits for every worker to drain, starting none meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from types import MappingProxyType

from . import linewriter, metrics
from .config import Config

log = logging.getLogger("gateway.supervisor")

RESTART_BACKOFF_MAX = 30.0  # seconds between restarts of a worker that keeps dying
STABLE_AFTER = 60.0  # a worker death this long after the last one starts the backoff afresh

# A worker's life: serve the config on the socket, swapping in each config that comes down the pipe
Work = Callable[[Config, socket.socket, Connection], None]
# The config to reload to, read again from the file, given the running one; None if it is refused
Reread = Callable[[Config], Config | None]

# The supervisor's signals: its handlers only queue them for its loop; a worker starts with them blocked
_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM}


def _read_only(items: dict[str, str]) -> MappingProxyType[str, str]:
    return MappingProxyType(items)


# a Config reaches running workers pickled (Connection.send); pickle refuses its read-only mappings
# (upstream_token.permissions), which travel as dicts and arrive read-only again
ForkingPickler.register(MappingProxyType, lambda proxy: (_read_only, (dict(proxy),)))


def _worker(work: Work, config: Config, sock: socket.socket, configs: Connection) -> None:
    # the supervisor owns the config: a worker takes new ones from `configs`, never from the file, so
    # a SIGHUP sent to the whole process group leaves it alone
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which passes SIGTERM on
    # the parent's handler came with the fork and would swallow SIGTERM: until the event loop
    # installs its own, SIGTERM ends a worker that has nothing in flight yet
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)  # blocked since the fork (Supervisor._spawn)
    try:
        work(config, sock, configs)
    finally:
        linewriter.drain()  # a worker ends with os._exit, without returning to the command's own drain


@dataclass(frozen=True)
class _Worker:
    process: BaseProcess
    configs: Connection  # the supervisor's end of the pipe the worker reads new configs from


class Supervisor:
    """Keeps N worker processes serving one socket with the config in force; restarts the ones that die.

    As in gunicorn's arbiter, the signal handlers only queue; the loop acts on them between its other
    steps, so a reload never misses a worker being started, and a stop is neither held up by a
    restart's backoff nor followed by the restart.
    """

    def __init__(
        self, config: Config, sock: socket.socket, count: int, *, work: Work, reread: Reread
    ) -> None:
        self._config = config
        self._sock = sock
        self._count = count
        self._work = work
        self._reread = reread
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
        config = self._reread(self._config)
        if config is None:
            return
        self._config = config  # what every worker started from now on runs
        for worker in self._workers:
            # a config pickles to a few KB and the pipe holds 64 KiB: a worker still starting, which
            # reads it once it can, does not hold the supervisor up
            with contextlib.suppress(OSError):  # it died meanwhile: its replacement starts with `config`
                worker.configs.send(config)
        log.info("reloaded: the new config goes to %d workers", len(self._workers))

    def _spawn(self) -> _Worker:
        """A worker forked with the config in force, which reads the ones after it from a pipe."""
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker, args=(self._work, self._config, self._sock, receiver), daemon=False
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
