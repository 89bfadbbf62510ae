"""The aiohttp internals gateway/wire.py builds on (docs/architecture.md), each named: an aiohttp upgrade that
moves one fails here, by name, before the behaviours it carries fail in the security suite (the 431
on a large head, the header deadline, idle connections making room, early and cut answers relayed
as they are). pyproject.toml caps aiohttp to the minor version these were checked against."""

from __future__ import annotations

import inspect

import attr
from aiohttp import web
from aiohttp.client_proto import ResponseHandler
from aiohttp.helpers import must_be_empty_body, rfc822_formatted_time, should_remove_content_length
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_parser import RawRequestMessage, RawResponseMessage
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo


def test_the_request_handler_still_keeps_the_state_the_gateway_reads() -> None:
    # _messages: parsed requests not yet handled; _waiter: the request loop waiting for one;
    # _request_count: requests parsed; _close / _force_close: the connection is closing
    assert {"_messages", "_waiter", "_request_count", "_close", "_force_close"} <= set(
        RequestHandler.__slots__
    )
    for method in ("data_received", "connection_made", "connection_lost", "finish_response", "handle_error"):
        assert callable(getattr(RequestHandler, method)), method


def test_a_queued_parse_error_still_carries_status_exception_and_message() -> None:
    assert [field.name for field in attr.fields(_ErrInfo)] == ["status", "exc", "message"]
    assert EMPTY_PAYLOAD.is_eof()


def test_the_low_level_server_still_builds_handlers_from_its_kwargs_and_loop() -> None:
    source = inspect.getsource(web.Server.__init__)
    assert "self._kwargs" in source and "self._loop" in source


def test_parsed_messages_still_have_the_fields_the_gateway_reads() -> None:
    # the C parser's message classes (or the pure-Python named tuples where it is not built)
    assert {"method", "path", "raw_headers"} <= set(dir(RawRequestMessage))
    assert {"code", "reason", "headers", "chunked", "should_close"} <= set(dir(RawResponseMessage))


def test_the_client_protocol_and_writer_still_offer_what_upstream_connections_use() -> None:
    for method in ("set_response_params", "read", "start_timeout", "force_close", "is_connected", "close"):
        assert callable(getattr(ResponseHandler, method)), method
    assert isinstance(ResponseHandler.should_close, property)
    assert isinstance(ResponseHandler.read_timeout, property)
    for method in ("enable_chunking", "write_headers", "write", "write_eof"):
        assert callable(getattr(StreamWriter, method)), method
    assert callable(StreamReader.iter_chunked)


def test_a_response_still_prepares_its_headers_in_one_overridable_step() -> None:
    assert "await self._prepare_headers()" in inspect.getsource(web.StreamResponse._start)


def test_a_response_still_takes_its_headers_whole_and_is_answered_by_prepare_then_write_eof() -> None:
    # wire.Answer: its CIMultiDict is handed over as it is, and aiohttp's request loop writes an answer
    # with prepare(request) and then write_eof(), so an answer written whole by prepare is complete
    assert "_real_headers" in inspect.signature(web.StreamResponse.__init__).parameters
    source = inspect.getsource(RequestHandler.finish_response)
    assert source.index("await prepare_meth(request)") < source.index("await resp.write_eof()")


def test_the_helpers_an_answer_sets_its_headers_with_are_still_there() -> None:
    assert must_be_empty_body("HEAD", 200) and must_be_empty_body("GET", 204)
    assert should_remove_content_length("GET", 204) and not should_remove_content_length("HEAD", 200)
    assert rfc822_formatted_time().endswith(" GMT")
    assert SERVER_SOFTWARE.startswith("Python/")
