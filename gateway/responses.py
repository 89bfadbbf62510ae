"""The one place that turns a refusal into an HTTP response (README: What callers get back)."""

from __future__ import annotations

import json

from aiohttp import web

from .errors import Refusal


def refusal_response(refusal: Refusal) -> web.Response:
    """`{"error": code, "message": text}` with the refusal's status and headers; the connection is
    closed after it if the refusal says so."""
    body = json.dumps({"error": refusal.code, "message": refusal.message})
    response = web.Response(
        status=refusal.status,
        text=body,
        content_type="application/json",
        headers=refusal.headers,
    )
    if refusal.close:
        response.force_close()
    return response
