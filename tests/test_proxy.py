"""What the upstream receives, end to end: header hygiene, identity headers, bodies, WebSockets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from .support.headers import bearer, seen_headers
from .support.sockets import raw_request
from .support.world import CLIENT_ID, Gateway, GatewayFactory, World


async def echo_of(gateway: Gateway, path: str, headers: Any, method: str = "GET") -> dict[str, Any]:
    resp = await gateway.client.request(method, path, headers=headers)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_spoofed_identity_headers_are_dropped_in_every_spelling(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7, ["repo"])
    spoofs = [
        ("X-Auth-User", "root"),
        ("x-auth-user", "root"),
        ("X_Auth_User", "root"),
        ("x-AUTH_user-ID", "0"),
        ("X-Auth-Scopes", "admin:org"),
        ("X-Auth-Token-Expires-At", "never"),
        ("X-Auth-Client-Id", "other"),
    ]
    echo = await echo_of(gateway, "/svc", [*spoofs, *bearer(token).items()])
    assert seen_headers(echo, "X-Auth-User") == ["alice"]
    assert seen_headers(echo, "X-Auth-User-Id") == ["7"]
    assert seen_headers(echo, "X-Auth-Scopes") == ["repo"]
    assert seen_headers(echo, "X-Auth-Token-Expires-At") == []
    assert seen_headers(echo, "X-Auth-Client-Id") == [CLIENT_ID]


async def test_spoofed_identity_headers_are_dropped_on_public_routes_too(gateway: Gateway) -> None:
    echo = await echo_of(gateway, "/public", {"X-Auth-User": "root", "X_AUTH_USER_ID": "0"})
    assert seen_headers(echo, "X-Auth-User") == []
    assert seen_headers(echo, "X-Auth-User-Id") == []


async def test_identity_headers_come_last(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7)
    echo = await echo_of(gateway, "/svc", {**bearer(token), "X-Zzz": "1"})
    names = [k for k, _ in echo["headers"]]
    assert names.index("X-Zzz") < names.index("X-Auth-User")


async def test_custom_identity_header_names_are_used_and_null_omits(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await start_gateway(identity_headers={"user": "X-Remote-User", "scopes": None})
    token = world.github.add_token("alice", 7, ["repo"])
    echo = await echo_of(gateway, "/svc", {**bearer(token), "X-Remote-User": "root", "X-Auth-User": "root"})
    assert seen_headers(echo, "X-Remote-User") == ["alice"]
    assert seen_headers(echo, "X-Auth-User") == []  # the default name is never trusted either
    assert seen_headers(echo, "X-Auth-Scopes") == []


async def test_hop_by_hop_and_connection_named_headers_are_removed(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7)
    headers = {
        **bearer(token),
        "Connection": "keep-alive, X-Secret-Hop, x_other_hop",
        "X-Secret-Hop": "1",
        "X-Other-Hop": "1",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic abc",
        "Upgrade": "h2c",
        "X-Kept": "yes",
    }
    echo = await echo_of(gateway, "/svc", headers)
    for name in ("X-Secret-Hop", "X-Other-Hop", "Keep-Alive", "TE", "Proxy-Authorization", "Upgrade"):
        assert seen_headers(echo, name) == [], name
    assert seen_headers(echo, "X-Kept") == ["yes"]


async def test_identity_header_named_in_connection_still_arrives(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7)
    echo = await echo_of(gateway, "/svc", {**bearer(token), "Connection": "X-Auth-User"})
    assert seen_headers(echo, "X-Auth-User") == ["alice"]


async def test_authorization_is_dropped_unless_pass_authorization(
    gateway: Gateway, start_gateway: GatewayFactory, world: World
) -> None:
    token = world.github.add_token("alice", 7)
    echo = await echo_of(gateway, "/svc", bearer(token))
    assert seen_headers(echo, "Authorization") == []
    passing = await start_gateway(pass_authorization=True)
    echo = await echo_of(passing, "/svc", bearer(token))
    assert seen_headers(echo, "Authorization") == [f"Bearer {token}"]


async def test_forwarded_headers_are_set_and_spoofs_replaced(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7)
    spoof = {
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil",
        "Forwarded": "for=6.6.6.6",
    }
    echo = await echo_of(gateway, "/svc", {**bearer(token), **spoof})
    assert seen_headers(echo, "X-Forwarded-For") == ["127.0.0.1"]
    assert seen_headers(echo, "X-Forwarded-Proto") == ["http"]
    host = seen_headers(echo, "X-Forwarded-Host")
    assert host == [f"127.0.0.1:{gateway.client.port}"]
    assert seen_headers(echo, "Forwarded") == []


async def test_x_real_ip_is_the_callers_address_never_what_the_caller_says(gateway: Gateway) -> None:
    echo = await echo_of(gateway, "/public", {"X-Real-IP": "6.6.6.6", "X_Real_IP": "6.6.6.6"})
    assert seen_headers(echo, "X-Real-IP") == ["127.0.0.1"]


async def test_trusted_proxy_chain_is_kept(start_gateway: GatewayFactory, world: World) -> None:
    gateway = await start_gateway(server={"host": "127.0.0.1", "port": 0, "trusted_proxies": ["127.0.0.0/8"]})
    echo = await echo_of(gateway, "/public", {"X-Forwarded-For": "203.0.113.9"})
    assert seen_headers(echo, "X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"]
    assert seen_headers(echo, "X-Real-IP") == ["203.0.113.9"]
    assert gateway.log_lines()[-1]["client"] == "203.0.113.9"


async def test_request_id_is_kept_when_well_formed_and_made_otherwise(gateway: Gateway) -> None:
    echo = await echo_of(gateway, "/public", {"X-Request-Id": "abc-123"})
    assert seen_headers(echo, "X-Request-Id") == ["abc-123"]
    echo = await echo_of(gateway, "/public", {"X-Request-Id": "bad id <script>"})
    [made] = seen_headers(echo, "X-Request-Id")
    assert made != "bad id <script>" and len(made) == 32


async def test_upstream_receives_the_normalised_path_and_the_query(gateway: Gateway) -> None:
    head = "GET /public/a/./b//c/%2E%2e/d%7e%c3%A9?x=%2F&y=/../1 HTTP/1.1\r\nHost: x\r\n"
    status, answer = await raw_request(gateway.port, head)
    assert status == 200
    echo = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert echo["path"] == "/public/a/b/d~%C3%A9?x=%2F&y=/../1"


async def test_strip_prefix_and_upstream_base_path(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7)
    echo = await echo_of(gateway, "/strip/x?q=1", bearer(token))
    assert echo["path"] == "/base/x?q=1"


async def test_host_sent_by_the_caller_never_chooses_the_upstream(gateway: Gateway) -> None:
    echo = await echo_of(gateway, "/public", {"Host": "evil.example"})
    assert seen_headers(echo, "Host") != ["evil.example"]
    assert seen_headers(echo, "X-Forwarded-Host") == ["evil.example"]


async def test_upstream_connections_are_pooled_and_kept_alive(gateway: Gateway) -> None:
    first = await echo_of(gateway, "/public/1", {})
    second = await echo_of(gateway, "/public/2", {})
    assert first["peer"] == second["peer"]


async def test_large_streamed_body_arrives_byte_identical(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7)
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    size = 64

    async def body() -> AsyncIterator[bytes]:
        for i in range(size):
            chunk = block[i:] + block[:i]
            digest.update(chunk)
            yield chunk

    resp = await gateway.client.put("/svc/upload", data=body(), headers=bearer(token))
    echo = await resp.json()
    assert echo["body_length"] == size << 20
    assert echo["body_sha256"] == digest.hexdigest()


async def test_response_headers_and_status_pass_through(gateway: Gateway) -> None:
    resp = await gateway.client.head("/public/x")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")


async def test_websocket_is_authenticated_then_relayed_both_ways(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7)
    async with gateway.client.ws_connect("/svc/ws", headers=bearer(token)) as ws:
        await ws.send_str("hello")
        assert (await ws.receive_str()) == "alice: hello"
        await ws.send_bytes(b"\x00\x01")
        assert (await ws.receive_bytes()) == b"\x00\x01"


async def test_websocket_without_credentials_is_refused(gateway: Gateway) -> None:
    try:
        async with gateway.client.ws_connect("/svc/ws"):
            raise AssertionError("the upgrade should have been refused")
    except aiohttp.WSServerHandshakeError as err:
        assert err.status == 401


async def test_the_upstream_gets_no_headers_the_caller_did_not_send(gateway: Gateway) -> None:
    status, answer = await raw_request(gateway.port, "GET /public/x HTTP/1.1\r\nHost: x\r\n")
    assert status == 200
    echo = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    for name in ("Accept", "Accept-Encoding", "User-Agent", "Content-Type"):
        assert seen_headers(echo, name) == [], name
    assert seen_headers(echo, "Host") != []


async def expect_continue(port: int, token: str) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /svc/up HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Expect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    return await reader.readuntil(b"\r\n\r\n"), reader, writer


async def test_expect_100_continue_is_answered_only_once_the_request_is_admitted(
    gateway: Gateway, world: World
) -> None:
    token = world.github.add_token("alice", 7)
    head, reader, writer = await expect_continue(gateway.port, token)
    assert head == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 200")
    echo = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert echo["body_length"] == 5
    assert seen_headers(echo, "Expect") == []

    head, _, writer = await expect_continue(gateway.port, "gho_" + "0" * 36)
    writer.close()
    await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 401")  # refused before the body was ever sent


async def raw_upstream(answer: bytes, *, drop_next: bool) -> tuple[asyncio.Server, str, list[int]]:
    """An upstream speaking raw HTTP/1.1 that answers one request per connection, then closes it:
    at once, or (`drop_next`) when the next request on it arrives, unanswered, as an upstream that
    timed the idle connection out does. Counts the connections."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            if drop_next:
                await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", connections


async def test_an_answer_without_length_is_read_until_the_upstream_closes(
    start_gateway: GatewayFactory,
) -> None:
    server, url, _ = await raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close", drop_next=False
    )
    async with server:
        gateway = await start_gateway(routes=[{"path": "/", "upstream": url, "auth": "none"}])
        resp = await gateway.client.get("/x")
        assert resp.status == 200
        assert await resp.text() == "until close"


async def test_a_keep_alive_connection_the_upstream_dropped_is_retried_for_an_idempotent_request(
    start_gateway: GatewayFactory,
) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server, url, connections = await raw_upstream(answer, drop_next=True)  # closes without saying so
    async with server:
        gateway = await start_gateway(routes=[{"path": "/", "upstream": url, "auth": "none"}])
        for _ in range(3):
            resp = await gateway.client.get("/x")
            assert (resp.status, await resp.text()) == (200, "ok")
        assert len(connections) == 3


async def test_a_post_on_a_dropped_keep_alive_connection_is_not_sent_twice(
    start_gateway: GatewayFactory,
) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server, url, connections = await raw_upstream(answer, drop_next=True)
    async with server:
        gateway = await start_gateway(routes=[{"path": "/", "upstream": url, "auth": "none"}])
        assert (await gateway.client.get("/x")).status == 200
        assert (await gateway.client.post("/x")).status == 502  # it may have been acted on: no retry
        assert len(connections) == 1
