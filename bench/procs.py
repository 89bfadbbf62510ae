"""Starting and stopping the benchmark's servers, and what /proc says about them.

Every server runs in its own process group (`start_new_session`), so stopping it also stops whatever
it forked (nginx and gateway workers). `Processes` is a context manager: whatever it started is
stopped when the block ends, on success, error, Ctrl-C or SIGTERM alike.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
_TICK = os.sysconf("SC_CLK_TCK")


class StartError(RuntimeError):
    """A server did not come up: its message ends with the tail of the server's log."""


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 right now (held open together, so never one twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in socks]


@dataclass
class Proc:
    """A started server: its name, its process, its port, and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int | None
    log: Path

    @property
    def pid(self) -> int:
        """The process id, also the id of its process group."""
        return self.popen.pid

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """The servers of one benchmark run, stopped together when the `with` block ends."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._procs: list[Proc] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        for proc in reversed(self._procs):
            self.stop(proc)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int | None,
        quiet_stdout: bool = False,
        cwd: Path | None = None,
    ) -> Proc:
        """Start `argv` in its own process group; stderr (and stdout unless quiet) go to its log."""
        log = self._workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(  # noqa: S603 (our own argv)
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL if quiet_stdout else out,
                stderr=out,
                cwd=cwd,
                start_new_session=True,
            )
        proc = Proc(name, popen, port, log)
        self._procs.append(proc)
        return proc

    def wait_ready(self, procs: Iterable[Proc], timeout: float = 20.0) -> None:
        """Wait until each server accepts connections on its port; `StartError` if one exits or is late."""
        deadline = time.monotonic() + timeout
        for proc in procs:
            while proc.port is not None and not _accepts(proc.port):
                if proc.popen.poll() is not None:
                    raise StartError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
                if time.monotonic() > deadline:
                    raise StartError(f"{proc.name} did not listen on {proc.port} in {timeout:.0f} s")
                time.sleep(0.05)

    def stop(self, proc: Proc) -> None:
        """SIGTERM to the process group, SIGKILL after 10 s; idempotent."""
        if proc in self._procs:
            self._procs.remove(proc)
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            if proc.popen.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(wait)
        # a worker that outlived its parent would keep the port: the group goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


# ---------------------------------------------------------------------------------------------------
# /proc: process trees, CPU time, peak memory, listening sockets (Linux; None or empty elsewhere)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()  # the command name may hold spaces and parentheses


def tree(root: int) -> list[int]:
    """`root` and every process descending from it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_ticks(roots: Iterable[int]) -> dict[int, int]:
    """User + system clock ticks of each process in the trees under `roots`."""
    ticks: dict[int, int] = {}
    for root in roots:
        for pid in tree(root):
            if (fields := _stat_fields(pid)) is not None:
                ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def cpu_seconds_since(before: dict[int, int], roots: Iterable[int]) -> float:
    """CPU seconds the trees under `roots` used since `before` (a `cpu_ticks` snapshot)."""
    after = cpu_ticks(roots)
    return sum(t - before.get(pid, 0) for pid, t in after.items()) / _TICK


def memory_kib(pid: int, field: str) -> int | None:
    """A `/proc/PID/status` size in KiB: VmRSS (now) or VmHWM (peak)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (`clear_refs` 5, Linux 4.0+); False when not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def serving_processes(root: int, port: int) -> int | None:
    """How many processes serve `port`: those under `root` holding its listening socket, not counting
    `root` itself when it only holds the socket for workers it forked."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].rsplit(":", 1)[1] == f"{port:04X}" and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    holders = [pid for pid in tree(root) if inodes & _socket_links(pid)]
    workers = [pid for pid in holders if pid != root]
    return len(workers or holders)


def _socket_links(pid: int) -> set[str]:
    links = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return set()
    for fd in fds:
        with contextlib.suppress(OSError):  # closed meanwhile
            links.add(os.readlink(fd))
    return links
