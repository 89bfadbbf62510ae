"""The access log: JSON lines, gathered off the request path and written together."""

from __future__ import annotations

import asyncio
import io
import json

from gateway.accesslog import AccessLog, AccessRecord


class Stream(io.StringIO):
    """Counts writes and signals each one."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        self.writes += 1
        self.written.set()
        return super().write(text)


async def test_records_are_written_together_shortly_after_as_json_lines() -> None:
    stream = Stream()
    log = AccessLog(stream, flush_interval=0.01)
    for i in range(3):
        log.write(AccessRecord(request_id=f"r{i}", method="GET", path="/x", status=200, user="alice"))
    assert stream.writes == 0  # nothing written on the request path
    await asyncio.wait_for(stream.written.wait(), 5)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert stream.writes == 1
    assert [line["request_id"] for line in lines] == ["r0", "r1", "r2"]
    assert set(lines[0]) == {
        "time", "request_id", "client", "method", "path", "route", "status",
        "duration_ms", "user", "token_id", "upstream_status", "bytes",
    }  # fmt: skip


async def test_flush_writes_what_is_queued_at_once() -> None:
    stream = Stream()
    log = AccessLog(stream, flush_interval=60)
    log.write(AccessRecord(request_id="r"))
    log.flush()
    assert json.loads(stream.getvalue())["request_id"] == "r"


async def test_any_text_a_request_carries_makes_a_valid_json_line() -> None:
    stream = Stream()
    log = AccessLog(stream)
    # a UTF-8 path, and bytes that were not UTF-8 (decoded with surrogateescape) from a proxy's header
    log.write(AccessRecord(request_id="r1", client="10.0.0.1", method="GET", path="/café", status=200))
    log.write(
        AccessRecord(request_id="r2", client="10.0.0.1\udcff", method="GET", path="/x\udcfe", status=400)
    )
    log.flush()
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["path"] == "/café"
    assert (second["client"], second["path"]) == ("10.0.0.1\udcff", "/x\udcfe")
