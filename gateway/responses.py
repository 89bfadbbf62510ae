"""The one place that turns a refusal into an HTTP response (README: What callers get back)."""

from __future__ import annotations

import json

from .errors import Refusal
from .wire import Answer


def refusal_response(refusal: Refusal) -> Answer:
    """`{"error": code, "message": text}` with the refusal's status and headers; the connection is
    closed after it if the refusal says so."""
    body = json.dumps({"error": refusal.code, "message": refusal.message})
    return Answer(
        refusal.status,
        refusal.headers.items(),
        body.encode(),
        content_type="application/json; charset=utf-8",
        close=refusal.close,
    )
