"""Header defences: what a caller sends never reads as identity, client address, request id or route
upstream, in any spelling; a header the parser cannot read unambiguously is refused (README: What callers
get back).

Requests go as raw bytes so that no client library normalises a name, a value or a duplicate away.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ..support.canary import canary
from ..support.sockets import body_of, exchange, raw, statuses
from ..support.upstreams import RecordingUpstream
from ..support.world import CLIENT_ID, Gateway, GatewayFactory, World

IDENTITY_SPOOFS = (
    "X-Auth-User: root",
    "x-auth-user: root",
    "X_Auth_User: root",
    "X-AUTH_USER: root",
    "X-Auth-User: admin",  # a duplicate of the spoof above
    "x_auth_user_id: 1",
    "X-Auth-User-Id: 1",
    "X-Auth-Scopes: admin:org",
    "X_AUTH_SCOPES: admin:org",
    "X-Auth-Token-Expires-At: 2999-01-01T00:00:00Z",
    "X_Auth_Client_Id: Iv1.attacker",
)
IDENTITY_NAMES = (
    "X-Auth-User",
    "X-Auth-User-Id",
    "X-Auth-Scopes",
    "X-Auth-Token-Expires-At",
    "X-Auth-Client-Id",
)


async def test_identity_headers_in_every_spelling_never_reach_the_upstream(
    gateway: Gateway, upstream: RecordingUpstream, world: World
) -> None:
    """CVE-2025-64484 (oauth2-proxy, GHSA-vjrc-mh2v-45x6): `_` and case variants of identity headers
    slipped past the proxy and read as the real ones to WSGI-style upstreams."""
    token = world.github.add_token("alice", 7, ["repo"])
    answer = await exchange(
        gateway.port, raw("GET", "/svc", *IDENTITY_SPOOFS, f"Authorization: Bearer {token}")
    )
    assert statuses(answer) == [200]
    [seen] = upstream.received
    assert seen.values("X-Auth-User") == ["alice"]
    assert seen.values("X-Auth-User-Id") == ["7"]
    assert seen.values("X-Auth-Scopes") == ["repo"]
    assert seen.values("X-Auth-Token-Expires-At") == []
    assert seen.values("X-Auth-Client-Id") == [CLIENT_ID]


@pytest.mark.parametrize("path", ["/public", "/maybe"])
async def test_identity_spoofs_on_public_and_anonymous_routes_never_reach_the_upstream(
    gateway: Gateway, upstream: RecordingUpstream, path: str
) -> None:
    """CVE-2025-64484 (oauth2-proxy): unauthenticated routes are where a spoofed identity pays most."""
    answer = await exchange(gateway.port, raw("GET", path, *IDENTITY_SPOOFS))
    assert statuses(answer) == [200]
    [seen] = upstream.received
    assert [name for name in IDENTITY_NAMES if seen.values(name)] == []


async def test_underscore_forwarded_headers_never_reach_the_upstream(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    """GHSA-vjrc-mh2v-45x6 (oauth2-proxy): `X_Forwarded_*` variants bypassed the proxy's stripping."""
    spoofs = (
        "X_Forwarded_For: 6.6.6.6",
        "X_Forwarded_Host: evil.example",
        "X_Forwarded_Proto: https",
        "X_Request_Id: spoofed-id",
        "X-Forwarded-For: 6.6.6.7",
    )
    answer = await exchange(gateway.port, raw("GET", "/public", *spoofs))
    assert statuses(answer) == [200]
    [seen] = upstream.received
    assert seen.values("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.values("X-Forwarded-Host") == ["gateway"]
    assert seen.values("X-Forwarded-Proto") == ["http"]
    assert "spoofed-id" not in seen.values("X-Request-Id")
    assert gateway.log_lines()[-1]["client"] == "127.0.0.1"


async def test_identity_and_forwarded_headers_named_in_connection_still_arrive(
    gateway: Gateway, upstream: RecordingUpstream, world: World
) -> None:
    """CVE-2024-45410 (Traefik hop-by-hop abuse): `Connection: X-Forwarded-Host` removed the
    headers the proxy itself added."""
    token = world.github.add_token("alice", 7, ["repo"])
    connection = (
        "Connection: close, X-Auth-User, X_Auth_User_Id, X-Forwarded-For, X-Request-Id, Authorization"
    )
    head = raw("GET", "/svc", f"Authorization: Bearer {token}", connection, close=False)
    assert statuses(await exchange(gateway.port, head)) == [200]
    [seen] = upstream.received
    assert seen.values("X-Auth-User") == ["alice"]
    assert seen.values("X-Auth-User-Id") == ["7"]
    assert seen.values("X-Forwarded-For") == ["127.0.0.1"]
    assert len(seen.values("X-Request-Id")) == 1


async def test_x_forwarded_for_from_an_untrusted_peer_is_replaced_not_believed(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    """Client-address spoofing: without trusted proxies, X-Forwarded-For is the caller's own claim."""
    spoofs = ("X-Forwarded-For: 10.0.0.1", "X-Forwarded-For: 10.0.0.2", "Forwarded: for=10.0.0.3")
    assert statuses(await exchange(gateway.port, raw("GET", "/public", *spoofs))) == [200]
    [seen] = upstream.received
    assert seen.values("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.values("Forwarded") == []
    assert gateway.log_lines()[-1]["client"] == "127.0.0.1"


async def test_behind_a_trusted_proxy_the_client_is_the_right_most_untrusted_address(
    start_gateway: GatewayFactory, upstream: RecordingUpstream
) -> None:
    """Client-address spoofing: the left-most X-Forwarded-For entry is whatever the caller wrote."""
    gateway = await start_gateway(server={"host": "127.0.0.1", "port": 0, "trusted_proxies": ["127.0.0.0/8"]})
    head = raw("GET", "/public", "X-Forwarded-For: 6.6.6.6, 203.0.113.9")
    assert statuses(await exchange(gateway.port, head)) == [200]
    assert gateway.log_lines()[-1]["client"] == "203.0.113.9"
    assert upstream.received[0].values("X-Forwarded-For") == ["6.6.6.6, 203.0.113.9, 127.0.0.1"]


async def test_the_host_a_client_sends_never_chooses_the_upstream(
    gateway: Gateway, upstream: RecordingUpstream, world: World
) -> None:
    """Host header routing abuse: a Host naming another internal service (here the GitHub fake)."""
    elsewhere = world.github_url.split("//", 1)[1]
    answer = await exchange(gateway.port, raw("GET", "/public", host=elsewhere))
    assert statuses(answer) == [200]
    [seen] = upstream.received
    assert seen.values("Host") == [upstream.url.split("//", 1)[1]]
    assert seen.values("X-Forwarded-Host") == [elsewhere]
    assert world.github.calls == []


async def test_path_override_headers_never_reach_the_upstream(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    """CVE-2018-14773 (Symfony): X-Original-URL / X-Rewrite-URL made the upstream route another path
    than the one the proxy authorized."""
    overrides = ("X-Original-URL: /admin", "X-Rewrite-URL: /admin", "X_Original_URL: /admin")
    assert statuses(await exchange(gateway.port, raw("GET", "/public", *overrides))) == [200]
    [seen] = upstream.received
    assert seen.path == "/public"
    assert seen.values("X-Original-URL") == [] and seen.values("X-Rewrite-URL") == []


@pytest.mark.parametrize("path", ["/public", "/svc"])
async def test_forward_auth_inputs_in_every_spelling_never_reach_the_upstream(
    gateway: Gateway, upstream: RecordingUpstream, world: World, path: str
) -> None:
    """The forward-auth inputs (X-Original-URI, X-Forwarded-Uri, X-Original-Method,
    X-Forwarded-Method) name the request a front proxy had authorized: passed on, they would tell an
    upstream that trusts them another path or method than the one the gateway judged."""
    spoofs = (
        "X-Original-URI: /admin",
        "x_original_uri: /admin",
        "X-Forwarded-Uri: /admin",
        "X_FORWARDED_URI: /admin",
        "X-Original-Method: DELETE",
        "X_Original_Method: DELETE",
        "x-forwarded-method: DELETE",
        "X_Forwarded-Method: DELETE",
    )
    token = world.github.add_token("alice", 7, ["repo"])
    answer = await exchange(gateway.port, raw("GET", path, *spoofs, f"Authorization: Bearer {token}"))
    assert statuses(answer) == [200]
    [seen] = upstream.received
    assert (seen.method, seen.path) == ("GET", path)
    names = ("X-Original-URI", "X-Forwarded-Uri", "X-Original-Method", "X-Forwarded-Method")
    assert [name for name in names if seen.values(name)] == []


@pytest.mark.parametrize(
    "spoof",
    [
        "bad id",
        "<script>alert(1)</script>",
        "a" * 200,
        "%0d%0aX-Auth-User:%20root",
        '{"user":"root"}',
    ],
)
async def test_a_malformed_request_id_is_replaced_everywhere(
    gateway: Gateway, upstream: RecordingUpstream, spoof: str
) -> None:
    """Log injection (CWE-117): an inbound X-Request-Id lands in the access log and upstream logs."""
    answer = await exchange(gateway.port, raw("GET", "/public", f"X-Request-Id: {spoof}"))
    assert statuses(answer) == [200]
    [made] = upstream.received[0].values("X-Request-Id")
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert gateway.log_lines()[-1]["request_id"] == made


async def test_a_second_request_id_never_reaches_the_upstream(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    """Duplicate-header confusion: the gateway logs one request id, the upstream must not see another."""
    head = raw("GET", "/public", "X-Request-Id: first-id", "X-Request-Id: second-id")
    assert statuses(await exchange(gateway.port, head)) == [200]
    assert upstream.received[0].values("X-Request-Id") == ["first-id"]
    assert gateway.log_lines()[-1]["request_id"] == "first-id"


@pytest.mark.parametrize(
    "line",
    [
        b"X-Note: a\rX-Auth-User: root",  # bare CR as a line break
        b"X-Note: a\nX-Auth-User: root",  # bare LF as a line break
        b"X-Note: a\x00X-Auth-User: root",
        b"X-Note: a\x01b",
        b"X-Note: a\x7fb",
        b"X-Auth-User: x\r\n root",  # obs-fold
        b"X-Auth-User: x\r\n\troot",
    ],
)
async def test_control_characters_or_line_breaks_in_a_header_are_400(
    gateway: Gateway, upstream: RecordingUpstream, line: bytes
) -> None:
    """GHSA-45c4-8wx5-qw6w (CVE-2023-37276, aiohttp's llhttp): CR, LF or NUL inside a header value
    read as a header boundary by one parser only; obs-fold is refused as RFC 9112 §5.2 allows."""
    head = b"GET /public HTTP/1.1\r\nHost: gateway\r\n" + line + b"\r\nConnection: close\r\n\r\n"
    answer = await exchange(gateway.port, head)
    assert statuses(answer) == [400]
    assert body_of(answer)["error"] == "bad_request"
    assert upstream.received == []


@pytest.mark.parametrize(
    "line",
    [
        b"X-Auth-User : root",  # whitespace before the colon
        b"X-Auth-User\t: root",
        b"X-Auth-User\x85: root",  # bytes outside the token alphabet
        b"X-Auth\xffUser: root",
        b"X(Auth)User: root",
        b": root",
    ],
)
async def test_a_header_name_that_is_not_a_token_is_400(
    gateway: Gateway, upstream: RecordingUpstream, line: bytes
) -> None:
    """GHSA-gfw2-4jvh-wgfg (CVE-2023-47627): aiohttp's Python parser stripped whitespace around header
    names, so `Content-Length : 34` framed a request another hop did not see."""
    head = b"GET /public HTTP/1.1\r\nHost: gateway\r\n" + line + b"\r\nConnection: close\r\n\r\n"
    assert statuses(await exchange(gateway.port, head)) == [400]
    assert upstream.received == []


async def test_whitespace_before_the_first_header_is_400(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    """GHSA-gfw2-4jvh-wgfg (CVE-2023-47627): leading whitespace on the first header was stripped."""
    head = b"GET /public HTTP/1.1\r\n\tX-Auth-User: root\r\nHost: gateway\r\nConnection: close\r\n\r\n"
    assert statuses(await exchange(gateway.port, head)) == [400]
    assert upstream.received == []


@pytest.mark.parametrize("shape", ["one long header", "many headers", "long request line"])
async def test_an_oversized_request_head_is_400_without_echoing_it(
    gateway: Gateway, upstream: RecordingUpstream, shape: str
) -> None:
    """Oversized headers: refused whole with the JSON error body, the offending bytes (a token) not quoted."""
    token = canary()
    if shape == "one long header":
        head = raw("GET", "/svc", f"Authorization: Bearer {token}{'A' * 9000}")
    elif shape == "many headers":
        head = raw("GET", "/svc", *(f"X-Pad-{i}: {token}" for i in range(300)))
    else:
        head = raw("GET", f"/svc?access_token={token}{'A' * 9000}")
    answer = await exchange(gateway.port, head)
    assert statuses(answer) == [400]
    assert body_of(answer)["error"] == "bad_request"
    assert token.encode() not in answer
    assert upstream.received == []


OVERRIDES = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")


def _method_override_app(done: list[str]) -> web.Application:
    """An upstream that runs a request as the method an override header names, as Express's
    method-override, Rails and Laravel do (any case, `_` for `-`, as CGI-style frameworks read it)."""

    async def handle(request: web.Request) -> web.Response:
        folded = {k.lower().replace("_", "-"): v for k, v in request.headers.items()}
        names = [n.lower() for n in OVERRIDES]
        method = next((folded[n].upper() for n in names if n in folded), request.method)
        done.append(method)
        return web.Response(text=f"{method} done")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.mark.parametrize(
    "override", ["X-HTTP-Method-Override: DELETE", "x-http-method: DELETE", "X_Method_Override: DELETE"]
)
async def test_a_method_override_never_turns_an_allowed_post_into_a_delete(
    start_gateway: GatewayFactory,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    world: World,
    override: str,
) -> None:
    """Method override: a `methods: [GET, POST]` route judged a POST, and an upstream that honours
    X-HTTP-Method-Override ran it as a DELETE."""
    done: list[str] = []
    server = await aiohttp_server(_method_override_app(done))
    up = str(server.make_url("")).rstrip("/")
    gateway = await start_gateway(routes=[{"path": "/", "upstream": up, "methods": ["GET", "POST"]}])
    token = world.github.add_token("alice", 7)
    head = raw("POST", "/records/1", f"Authorization: Bearer {token}", override, "Content-Length: 0")
    answer = await exchange(gateway.port, head)
    assert statuses(answer) == [200]
    assert answer.endswith(b"POST done")
    assert done == ["POST"]


FORWARDING_SPOOFS = (
    "Forwarded: for=10.0.0.3;proto=https;host=admin.internal",
    "X-Forwarded-Port: 443",
    "X-Forwarded-Prefix: /admin",
    "X-Forwarded-Scheme: https",
    "X-Forwarded-Ssl: on",
    "X-Client-IP: 10.0.0.4",
    "True-Client-IP: 10.0.0.5",
    "X_Client_IP: 10.0.0.6",
)


async def test_forwarding_headers_from_an_untrusted_peer_never_reach_the_upstream(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    """Client-address and URL spoofing: an upstream that believes these takes the caller's word for
    its address, scheme or path prefix."""
    assert statuses(await exchange(gateway.port, raw("GET", "/public", *FORWARDING_SPOOFS))) == [200]
    [seen] = upstream.received
    names = [spoof.split(":", 1)[0] for spoof in FORWARDING_SPOOFS]
    assert [name for name in names if seen.values(name)] == []


async def test_forwarding_headers_from_a_trusted_proxy_are_passed_on(
    start_gateway: GatewayFactory, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(server={"host": "127.0.0.1", "port": 0, "trusted_proxies": ["127.0.0.0/8"]})
    assert statuses(await exchange(gateway.port, raw("GET", "/public", *FORWARDING_SPOOFS[:5]))) == [200]
    [seen] = upstream.received
    assert seen.values("X-Forwarded-Prefix") == ["/admin"]
    assert seen.values("Forwarded") == ["for=10.0.0.3;proto=https;host=admin.internal"]


@pytest.mark.parametrize(
    "host", ["a.example, evil.example", "evil.example/admin", "alice@evil.example", "a.example:80:81", "a b"]
)
async def test_a_host_that_is_not_one_host_and_port_is_400(
    gateway: Gateway, upstream: RecordingUpstream, host: str
) -> None:
    """X-Forwarded-Host confusion: the upstream reads X-Forwarded-Host as the host the caller asked
    for; it only ever carries one well-formed host[:port]."""
    answer = await exchange(gateway.port, raw("GET", "/public", host=host))
    assert statuses(answer) == [400]
    assert upstream.received == []


@pytest.mark.parametrize("host", ["svc.example.com", "svc.example.com:8443", "10.1.2.3:80", "[::1]:8080"])
async def test_a_well_formed_host_is_passed_on_as_x_forwarded_host(
    gateway: Gateway, upstream: RecordingUpstream, host: str
) -> None:
    assert statuses(await exchange(gateway.port, raw("GET", "/public", host=host))) == [200]
    assert upstream.received[0].values("X-Forwarded-Host") == [host]
