"""The gateway's own JSON answers, and the one place that turns a refusal into one (README: What callers
get back)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from .errors import Refusal
from .listener import Answer

JSON = "application/json; charset=utf-8"


def json_answer(data: object, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Answer:
    """`data` as JSON, as aiohttp's `json_response` writes it."""
    return Answer(status, headers, json.dumps(data).encode(), content_type=JSON)


def refusal_response(refusal: Refusal) -> Answer:
    """`{"error": code, "message": text}` with the refusal's status and headers; the connection is
    closed after it if the refusal says so."""
    answer = json_answer(
        {"error": refusal.code, "message": refusal.message}, refusal.status, refusal.headers.items()
    )
    answer.close = refusal.close
    return answer
