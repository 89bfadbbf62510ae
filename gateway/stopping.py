"""How every long-running command (`serve`, `demo`, `fake-github`) learns it should stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal


def stop_event() -> asyncio.Event:
    """An event that SIGINT (Ctrl-C) or SIGTERM sets, for the running loop to wait on."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C still raises KeyboardInterrupt
            loop.add_signal_handler(sig, stop.set)
    return stop
