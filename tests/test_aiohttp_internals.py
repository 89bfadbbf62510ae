"""The aiohttp internals gateway/app.py's connection handler builds on (DESIGN §8): an aiohttp upgrade
that moves them fails here by name, before the behaviours they carry (the 431 on a large head, the
header deadline, idle connections making room) fail in the security suite."""

from __future__ import annotations

import attr
from aiohttp.web_protocol import RequestHandler, _ErrInfo


def test_the_request_handler_still_keeps_the_state_the_gateway_reads() -> None:
    # _messages: parsed requests not yet handled; _waiter: the request loop waiting for one;
    # _request_count: requests parsed; _close / _force_close: the connection is closing
    assert {"_messages", "_waiter", "_request_count", "_close", "_force_close"} <= set(
        RequestHandler.__slots__
    )


def test_a_queued_parse_error_still_carries_status_exception_and_message() -> None:
    assert [field.name for field in attr.fields(_ErrInfo)] == ["status", "exc", "message"]
