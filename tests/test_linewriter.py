"""stdout and stderr never hold up the gateway: lines go through a bounded buffer that a thread writes
to a real pipe here; what a stalled reader leaves no room for is dropped and counted (README: Logs)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Iterator

import pytest

from gateway.linewriter import LineWriter


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe (read end, write end); a reader that reads nothing is a stalled one."""
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for end in (read_end, write_end):
        with contextlib.suppress(OSError):  # closed by the test
            os.close(end)


def writer_to(fd: int, *, limit: int = 1 << 20) -> tuple[LineWriter, list[int]]:
    """A writer to `fd`, and the counts of the lines it reports dropped."""
    writer = LineWriter(functools.partial(os.write, fd), name="test", limit=limit)
    dropped: list[int] = []
    writer.count_drops(dropped.append)
    return writer, dropped


def read_until(fd: int, size: int) -> bytes:
    """`size` bytes from `fd` (fewer if it closes first)."""
    data = b""
    while len(data) < size and (chunk := os.read(fd, 1 << 16)):
        data += chunk
    return data


async def test_lines_reach_the_stream_whole_and_in_order(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    writer, dropped = writer_to(write_end)
    lines = [b"line %d" % i for i in range(1000)]
    for start in range(0, len(lines), 100):
        writer.put(lines[start : start + 100])
    expected = b"\n".join(lines) + b"\n"
    assert await asyncio.wait_for(asyncio.to_thread(read_until, read_end, len(expected)), 5) == expected
    assert dropped == []


async def test_a_stalled_reader_holds_up_no_one_and_the_lines_without_room_are_dropped_and_counted(
    pipe: tuple[int, int],
) -> None:
    read_end, write_end = pipe
    writer, dropped = writer_to(write_end, limit=1 << 16)
    line = b"x" * 999
    count = 1000  # ~1 MB at a reader that reads nothing: its pipe holds 64 KiB, the buffer as much

    def flood() -> None:
        for _ in range(count):
            writer.put([line])

    await asyncio.wait_for(asyncio.to_thread(flood), 5)  # not one put waited for the stream
    assert sum(dropped) > count / 2
    kept = count - sum(dropped)
    # the reader catches up: every line kept arrives whole, and nothing else
    caught_up = await asyncio.wait_for(asyncio.to_thread(read_until, read_end, kept * 1000), 5)
    assert caught_up == (line + b"\n") * kept
    assert writer.drain(5)
    writer.put([line])  # with room again, lines are kept again
    assert await asyncio.wait_for(asyncio.to_thread(read_until, read_end, 1000), 5) == line + b"\n"
    assert sum(dropped) == count - kept


async def test_drain_waits_no_longer_than_its_bound_for_a_stalled_reader(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    writer, dropped = writer_to(write_end)
    writer.put([b"x" * (1 << 18)])  # more than the pipe holds
    assert not await asyncio.wait_for(asyncio.to_thread(writer.drain, 0.2), 5)
    os.close(read_end)  # the reader goes away: the line it left half-read is dropped
    assert await asyncio.to_thread(writer.drain, 5)
    assert dropped == [1]


async def test_lines_for_a_stream_whose_reader_has_gone_are_counted_as_dropped(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    os.close(read_end)
    writer, dropped = writer_to(write_end)
    writer.put([b"first", b"second"])
    assert await asyncio.to_thread(writer.drain, 5)
    assert dropped == [2]
