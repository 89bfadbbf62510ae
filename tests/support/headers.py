"""Headers as a caller sends them and as the service behind the gateway sees them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


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
