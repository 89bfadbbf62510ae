"""One JSON line per request on stdout, and the gateway's own records as JSON lines on stderr (README:
Logs), both through a `LineWriter`: a line never waits for its stream. Never a token, never an
Authorization value.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field

import orjson

from . import linewriter
from .linewriter import LineWriter

UPSTREAM_CUT = "upstream_cut"  # `error`: the upstream broke off mid-body; the client's connection was cut


@dataclass(slots=True)
class AccessRecord:
    """What one request did; filled in as the request goes through the gateway."""

    request_id: str = ""
    client: str = ""
    method: str = ""
    path: str = ""  # the normalised path, without the query string (it may hold secrets)
    route: str | None = None
    status: int = 0
    duration_ms: float = 0.0
    user: str | None = None
    token_id: str | None = None
    upstream_status: int | None = None
    bytes: int = 0  # body bytes sent to the client
    error: str | None = None  # what went wrong once the answer had begun (UPSTREAM_CUT)
    membership: list[str] = field(default_factory=list)  # each membership lookup: "kind:result"


class AccessLog:
    """Writes access records as JSON lines, off the request path: lines are gathered and handed to
    `writer` (stdout's by default) together at most `flush_interval` seconds later (and on `flush`),
    one hand-over and one write for many requests."""

    def __init__(self, writer: LineWriter | None = None, *, flush_interval: float = 0.1) -> None:
        self._writer = writer or linewriter.STDOUT
        self._interval = flush_interval
        self._pending: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""

    def write(self, record: AccessRecord) -> None:
        """Queue one record, stamped with the current time."""
        now = int(time.time())
        if now != self._second:  # one strftime a second, not one a request
            self._second, self._stamp = now, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        line = {
            "time": self._stamp,
            "request_id": record.request_id,
            "client": record.client,
            "method": record.method,
            "path": record.path,
            "route": record.route,
            "status": record.status,
            "duration_ms": record.duration_ms,
            "user": record.user,
            "token_id": record.token_id,
            "upstream_status": record.upstream_status,
            "bytes": record.bytes,
            "error": record.error,
            "membership": " ".join(record.membership) or None,
        }
        try:
            self._pending.append(orjson.dumps(line))
        except orjson.JSONEncodeError:  # a lone surrogate (bytes that were not UTF-8): escaped instead
            self._pending.append(_encode(line).encode())
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self.flush)

    def flush(self) -> None:
        """Hand every queued line to the writer now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            lines, self._pending = self._pending, []
            self._writer.put(lines)


_encode = json.JSONEncoder(separators=(",", ":")).encode


class JsonFormatter(logging.Formatter):
    """Log records as JSON lines, like the access log."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object per record."""
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


class _StderrHandler(logging.Handler):
    """Hands each record, as a JSON line, to stderr's writer: a record never waits for stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record).encode()
        except Exception:  # what logging.StreamHandler does with a record it cannot format
            self.handleError(record)
            return
        linewriter.STDERR.put((line,))


def configure_logging(level: int = logging.INFO) -> None:
    """Send the gateway's own log records to stderr as JSON lines."""
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
