"""The event loop every benchmark process runs on: uvloop when installed, as the gateway uses."""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - where uvloop does not build
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def name() -> str:
    """Which loop `new_event_loop` makes: "uvloop" or "asyncio"."""
    loop = new_event_loop()
    loop.close()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
