"""Headers as a caller sends them and as the service behind the gateway sees them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import aiohttp


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def header_values(headers: Iterable[Sequence[str]], name: str) -> list[str]:
    """Every value of a header in (name, value) pairs, names matched the way CGI/WSGI frameworks match
    them."""
    fold = name.lower().replace("_", "-")
    return [value for key, value in headers if key.lower().replace("_", "-") == fold]


def seen_headers(echo: dict[str, Any], name: str) -> list[str]:
    """Every value the echo upstream saw for a header."""
    return header_values(echo["headers"], name)


async def status_of(url: str, token: str, *, session: aiohttp.ClientSession | None = None) -> int:
    """The status of a GET with the token; on a new connection of its own unless a session is given."""
    if session is None:
        async with aiohttp.ClientSession() as own:
            return await status_of(url, token, session=own)
    async with session.get(url, headers=bearer(token)) as resp:
        return resp.status
