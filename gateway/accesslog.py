"""One JSON line per request on stdout (DESIGN §7). Never a token, never an Authorization value."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from typing import TextIO


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
    bytes: int = 0


class AccessLog:
    """Writes access records as JSON lines."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    def write(self, record: AccessRecord) -> None:
        """Emit one record, stamped with the current time."""
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **asdict(record)}
        self._stream.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._stream.flush()


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


def configure_logging(level: int = logging.INFO) -> None:
    """Send the gateway's own log records to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
