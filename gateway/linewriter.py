"""Lines to stdout and stderr that never hold up a request (README: Logs).

Whoever has a line appends it to a bounded buffer and moves on; a thread of the stream's own writes
the buffer out. When the stream's reader stalls (a full pipe, a stuck log shipper), that thread
waits, never the event loop: the buffer fills up to `LIMIT` bytes, and lines beyond it are dropped
and counted (`count_drops`) until the reader catches up. `drain` writes what is buffered at exit,
within a bound.

The writers of stdout and stderr (`STDOUT`, `STDERR`) write to the file descriptors with `os.write`:
no Python-level lock of `sys.stdout` can be held by a blocked thread when a worker is forked.
"""

from __future__ import annotations

import functools
import os
import select
import threading
import time
from collections.abc import Callable, Sequence

LIMIT = 1 << 20  # bytes buffered per stream: ~4,000 access-log lines, a stall of a second or so
EXIT_DRAIN_SECONDS = 5.0  # at exit, how long what is buffered may take to be written


def _fitting(lines: Sequence[bytes], room: int) -> int:
    """How many of `lines`, from the first, fit in `room` bytes (each with its newline)."""
    count = 0
    for line in lines:
        room -= len(line) + 1
        if room < 0:
            break
        count += 1
    return count


class LineWriter:
    """Lines for one stream, written by a thread of its own; `put` never waits for the stream.

    `write` writes some of the bytes it is given and says how many (`os.write` on a descriptor).
    """

    def __init__(self, write: Callable[[memoryview], int], *, name: str, limit: int = LIMIT) -> None:
        self.name = name
        self._write = write
        self._limit = limit
        self._dropped = 0
        self._count: Callable[[int], object] | None = None
        self._start_afresh()

    def _start_afresh(self) -> None:
        """A new buffer, lock and (once a line comes) thread: after a fork, the parent's thread is not
        there to write what its buffer holds, and the parent writes those lines itself."""
        self._changed = threading.Condition(threading.Lock())
        self._pending: list[bytes] = []
        self._size = 0  # bytes buffered or being written
        self._thread: threading.Thread | None = None

    def put(self, lines: Sequence[bytes]) -> None:
        """Queue lines (without their newlines); what the buffer has no room for is dropped and counted."""
        size = sum(map(len, lines)) + len(lines)
        with self._changed:
            if size > self._limit - self._size:  # the stream is behind: keep what fits, drop the rest
                kept = _fitting(lines, self._limit - self._size)
                dropped, lines = len(lines) - kept, lines[:kept]
                size = sum(map(len, lines)) + kept
            else:
                dropped = 0
            if lines:
                if not self._pending:  # the thread waits for this; while it writes, lines gather
                    self._changed.notify_all()
                self._pending.extend(lines)
                self._size += size
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=f"{self.name}-writer", daemon=True)
                    self._thread.start()
        if dropped:
            self._dropped_lines(dropped)

    def count_drops(self, count: Callable[[int], object]) -> None:
        """Call `count(n)` for every `n` lines dropped from now on, and at once for those dropped so far."""
        with self._changed:
            self._count, so_far = count, self._dropped
        if so_far:
            count(so_far)

    def drain(self, timeout: float) -> bool:
        """Wait at most `timeout` seconds for everything buffered to be written; whether it was."""
        with self._changed:
            return self._changed.wait_for(lambda: self._size == 0, timeout)

    def _dropped_lines(self, lines: int) -> None:
        with self._changed:
            self._dropped += lines
            count = self._count
        if count is not None:
            count(lines)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending)
                lines, self._pending = self._pending, []
            lines.append(b"")  # the last line's newline
            data = b"\n".join(lines)
            self._write_out(data)
            with self._changed:
                self._size -= len(data)
                self._changed.notify_all()  # for `drain`

    def _write_out(self, data: bytes) -> None:
        view = memoryview(data)
        done = 0
        while done < len(data):
            # whole lines, at most PIPE_BUF bytes a write unless one line is longer: a pipe takes such a
            # write in one piece, so the lines of workers sharing stdout never interleave
            end = data.rfind(b"\n", done, done + select.PIPE_BUF) + 1 or data.index(b"\n", done) + 1
            try:
                done += self._write(view[done:end])
            except BlockingIOError:  # someone made the shared descriptor non-blocking, and it is full
                time.sleep(0.01)
            except OSError:  # the stream is gone (its reader closed it): what is left is lost, and counted
                self._dropped_lines(data.count(b"\n", done))
                return


STDOUT = LineWriter(functools.partial(os.write, 1), name="stdout")
STDERR = LineWriter(functools.partial(os.write, 2), name="stderr")


def drain(timeout: float = EXIT_DRAIN_SECONDS) -> None:
    """At exit: what stdout and stderr have buffered is written, within `timeout` seconds in all."""
    deadline = time.monotonic() + timeout
    for writer in (STDOUT, STDERR):
        writer.drain(max(0.0, deadline - time.monotonic()))


def _forked() -> None:
    for writer in (STDOUT, STDERR):
        writer._start_afresh()


os.register_at_fork(after_in_child=_forked)
