"""The access log: JSON lines, gathered off the request path and handed to the writer together."""

from __future__ import annotations

import asyncio
import json
import threading

from gateway.accesslog import AccessLog, AccessRecord
from gateway.linewriter import LineWriter


class Sink:
    """A stream that keeps every write its writer's thread makes, and signals each one."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.written = threading.Event()
        self.writer = LineWriter(self.write, name="test")

    def write(self, data: memoryview) -> int:
        self.writes.append(bytes(data))
        self.written.set()
        return len(data)

    def lines(self) -> list[dict[str, object]]:
        assert self.writer.drain(5)
        return [json.loads(line) for line in b"".join(self.writes).splitlines()]


async def test_records_are_written_together_shortly_after_as_json_lines() -> None:
    sink = Sink()
    log = AccessLog(sink.writer, flush_interval=0.01)
    for i in range(3):
        log.write(AccessRecord(request_id=f"r{i}", method="GET", path="/x", status=200, user="alice"))
    assert sink.writes == []  # nothing written on the request path
    assert await asyncio.to_thread(sink.written.wait, 5)
    lines = sink.lines()
    assert len(sink.writes) == 1
    assert [line["request_id"] for line in lines] == ["r0", "r1", "r2"]
    assert set(lines[0]) == {
        "time", "request_id", "client", "method", "path", "route", "status",
        "duration_ms", "user", "token_id", "upstream_status", "bytes", "error", "membership",
    }  # fmt: skip


async def test_flush_hands_what_is_queued_to_the_writer_at_once() -> None:
    sink = Sink()
    log = AccessLog(sink.writer, flush_interval=60)
    log.write(AccessRecord(request_id="r"))
    log.flush()
    assert [line["request_id"] for line in sink.lines()] == ["r"]


async def test_any_text_a_request_carries_makes_a_valid_json_line() -> None:
    sink = Sink()
    log = AccessLog(sink.writer)
    # a UTF-8 path, and bytes that were not UTF-8 (decoded with surrogateescape) from a proxy's header
    log.write(AccessRecord(request_id="r1", client="10.0.0.1", method="GET", path="/café", status=200))
    log.write(
        AccessRecord(request_id="r2", client="10.0.0.1\udcff", method="GET", path="/x\udcfe", status=400)
    )
    log.flush()
    first, second = sink.lines()
    assert first["path"] == "/café"
    assert (second["client"], second["path"]) == ("10.0.0.1\udcff", "/x\udcfe")
