"""headers.HeaderRules and response_headers as pure functions: each request's headers are judged by
its own context (validated credentials or not, a trusted peer or not), however often the same header
names came before in another, and a name a message's Connection header lists is dropped even where
the same name passed before."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.config import Config
from gateway.headers import HeaderRules, response_headers
from gateway.identity import Identity
from gateway.listener import Request

ALICE = Identity("alice", 1, ("repo",), None, "Iv1.x")
TRUSTED, STRANGER = "10.0.0.1", "192.0.2.7"


def _rules(**overrides: Any) -> HeaderRules:
    config: dict[str, Any] = {
        "github": {"apps": [{"client_id": "Iv1.x", "client_secret": "s"}]},
        "server": {"trusted_proxies": ["10.0.0.0/8"]},
        "routes": [{"path": "/", "upstream": "http://127.0.0.1:1"}],
        **overrides,
    }
    return HeaderRules(Config.model_validate(config))


def _upstream(
    rules: HeaderRules, peer: str, identity: Identity | None, *headers: tuple[str, str]
) -> list[str]:
    # what of a request the rules read: its headers, the peer's address, the scheme
    request = SimpleNamespace(headers=CIMultiDictProxy(CIMultiDict(headers)), remote=peer, scheme="http")
    return list(rules.upstream_request_headers(cast(Request, request), identity, "rid", peer))


async def test_a_header_passed_for_one_request_is_still_judged_by_the_next_ones_context() -> None:
    rules = _rules(pass_authorization=True)
    sent = (("Authorization", "Bearer x"), ("X-Forwarded-Port", "443"), ("X_Auth_User", "mallory"))
    for _ in range(2):  # the second round meets names already judged in every context
        validated_trusted = _upstream(rules, TRUSTED, ALICE, *sent)
        assert "Authorization" in validated_trusted and "X-Forwarded-Port" in validated_trusted
        anonymous_stranger = _upstream(rules, STRANGER, None, *sent)
        assert "Authorization" not in anonymous_stranger and "X-Forwarded-Port" not in anonymous_stranger
        assert "X_Auth_User" not in validated_trusted + anonymous_stranger


async def test_a_header_the_connection_header_names_is_dropped_where_the_same_name_passed_before() -> None:
    rules = _rules()
    assert "X-Trace" in _upstream(rules, STRANGER, ALICE, ("X-Trace", "1"))
    assert "X-Trace" not in _upstream(rules, STRANGER, ALICE, ("X-Trace", "1"), ("Connection", "x-trace"))


async def test_the_session_cookie_is_taken_out_of_every_cookie_header_however_often_seen() -> None:
    rules = _rules(server={"public_url": "https://gw.example.com"}, sessions={"cookie_secret": "0" * 32})
    for _ in range(2):
        sent = _upstream(rules, STRANGER, ALICE, ("Cookie", "gateway_session=secret; theme=dark"))
        assert sent.count("Cookie") == 1
        alone = _upstream(rules, STRANGER, ALICE, ("Cookie", "gateway_session=secret"))
        assert "Cookie" not in alone


def test_an_answers_hop_by_hop_headers_and_those_its_connection_names_are_dropped() -> None:
    plain = CIMultiDictProxy(CIMultiDict([("X-Trace", "1"), ("Keep-Alive", "timeout=5"), ("ETag", "x")]))
    named = CIMultiDictProxy(CIMultiDict([("X-Trace", "1"), ("Connection", "X-Trace"), ("ETag", "x")]))
    for _ in range(2):
        assert response_headers(plain) == [("X-Trace", "1"), ("ETag", "x")]
        assert response_headers(named) == [("ETag", "x")]
