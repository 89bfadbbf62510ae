"""The aiohttp internals gateway/listener.py and gateway/wire.py build on (docs/architecture.md), each
named: an aiohttp upgrade that moves one fails here, by name, before the behaviours it carries fail in
the security suite (pipelining bounded, a body's flow control, upgrades held back, the 431 on a large
head, early and cut answers relayed as they are). pyproject.toml caps aiohttp to the minor version
these were checked against."""

from __future__ import annotations

import asyncio
import inspect

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.helpers import must_be_empty_body, rfc822_formatted_time, should_remove_content_length
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_parser import HttpRequestParser, HttpResponseParser, RawRequestMessage, RawResponseMessage
from aiohttp.http_writer import StreamWriter, _serialize_headers
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from multidict import CIMultiDict


async def test_the_request_parser_still_bounds_pipelining_and_holds_upgrades_back() -> None:
    # the listener's parser: max_msg_queue_size pauses it, message_consumed and feed_data(b"") resume
    # it, an upgrade request returns the bytes after it (the tail), set_upgraded(False) declines it
    loop = asyncio.get_running_loop()
    parser = HttpRequestParser(
        BaseProtocol(loop),
        loop,
        1 << 16,
        max_line_size=8190,
        max_field_size=8190,
        payload_exception=ValueError,
        auto_decompress=False,
        max_msg_queue_size=1,
    )
    messages, _, _ = parser.feed_data(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [m.path for m, _ in messages] == ["/1"]  # the second is held until the first is consumed
    parser.message_consumed()
    messages, _, _ = parser.feed_data(b"")
    assert [m.path for m, _ in messages] == ["/2"]
    for method in ("feed_data", "feed_eof", "message_consumed", "set_upgraded"):
        assert callable(getattr(HttpRequestParser, method)), method


async def test_the_request_parser_still_gives_messages_an_upgrade_and_its_tail() -> None:
    protocol = BaseProtocol(asyncio.get_running_loop())
    parser = HttpRequestParser(protocol, asyncio.get_running_loop(), 1 << 16, max_msg_queue_size=2)
    upgrade = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nframes"
    messages, upgraded, tail = parser.feed_data(upgrade)
    assert [m.path for m, _ in messages] == ["/"] and upgraded and tail == b"frames"
    assert messages[0][1] is EMPTY_PAYLOAD


def test_parsed_messages_still_have_the_fields_the_gateway_reads() -> None:
    # the C parser's message classes (or the pure-Python named tuples where it is not built)
    assert {"method", "path", "version", "headers", "raw_headers", "should_close"} <= set(
        dir(RawRequestMessage)
    )
    assert {"code", "reason", "headers", "chunked", "should_close"} <= set(dir(RawResponseMessage))


async def test_the_response_parser_still_reads_a_head_alone() -> None:
    loop = asyncio.get_running_loop()
    parser = HttpResponseParser(BaseProtocol(loop), loop, 1 << 16, response_with_body=False)
    messages, _, _ = parser.feed_data(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    assert messages[0][0].code == 101 and messages[0][0].headers["Upgrade"] == "websocket"


def test_the_base_protocol_still_offers_flow_control_both_ways() -> None:
    # a body's StreamReader pauses its protocol's reading; a slow client pauses the writer (_paused)
    for method in ("pause_reading", "resume_reading", "pause_writing", "resume_writing", "_drain_helper"):
        assert callable(getattr(BaseProtocol, method)), method
    for method in ("_pause_reading_for_buffer", "_resume_reading_for_buffer"):
        assert callable(getattr(BaseProtocol, method)), method
    assert {"_paused", "_buffer_paused", "_parser", "transport"} <= set(BaseProtocol.__slots__)
    assert EMPTY_PAYLOAD.is_eof()
    assert callable(StreamReader.iter_chunked) and callable(StreamReader.readany)


def test_the_c_header_serialiser_still_refuses_line_breaks() -> None:
    assert _serialize_headers("HTTP/1.1 200 OK", CIMultiDict(A="1")) == b"HTTP/1.1 200 OK\r\nA: 1\r\n\r\n"
    try:
        _serialize_headers("HTTP/1.1 200 OK", CIMultiDict(A="1\r\nB: 2"))
    except ValueError:
        return
    raise AssertionError("a header value with CR/LF was serialised")


def test_a_runner_still_asks_of_its_server_only_a_factory_pre_shutdown_and_shutdown() -> None:
    # listener.make_runner hands aiohttp's ServerRunner a server that is not a web.Server
    cleanup = inspect.getsource(web.BaseRunner.cleanup)
    assert "self._server.pre_shutdown()" in cleanup and "await self._server.shutdown(" in cleanup
    assert "return self._web_server" in inspect.getsource(web.ServerRunner._make_server)
    assert "self._runner.server" in inspect.getsource(web.SockSite.start)


def test_the_writer_still_offers_what_upstream_connections_send_bodies_with() -> None:
    for method in ("enable_chunking", "write", "write_eof"):
        assert callable(getattr(StreamWriter, method)), method


def test_the_helpers_an_answer_sets_its_headers_with_are_still_there() -> None:
    assert must_be_empty_body("HEAD", 200) and must_be_empty_body("GET", 204)
    assert should_remove_content_length("GET", 204) and not should_remove_content_length("HEAD", 200)
    assert rfc822_formatted_time().endswith(" GMT")
    assert SERVER_SOFTWARE.startswith("Python/")
