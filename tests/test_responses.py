"""Every row of the README's "What callers get back", end to end over real sockets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import ClientResponse

from .support.headers import bearer, seen_headers
from .support.sockets import free_port, raw_request
from .support.world import CLIENT_ID, SECOND_APP, SECOND_ID, Gateway, GatewayFactory, World


async def error_body(resp: ClientResponse) -> dict[str, Any]:
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    assert set(body) == {"error", "message"}
    return body


async def test_valid_token_reaches_the_upstream_with_its_identity(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7, ["repo", "read:org"])
    resp = await gateway.client.get("/svc/x?q=1", headers=bearer(token))
    assert resp.status == 200
    echo = await resp.json()
    assert echo["path"] == "/svc/x?q=1"
    assert seen_headers(echo, "X-Auth-User") == ["alice"]
    assert seen_headers(echo, "X-Auth-User-Id") == ["7"]
    assert seen_headers(echo, "X-Auth-Scopes") == ["repo,read:org"]
    assert seen_headers(echo, "X-Auth-Client-Id") == [CLIENT_ID]
    assert seen_headers(echo, "X-Auth-Token-Expires-At") == []


async def test_github_token_scheme_is_accepted_case_insensitively(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7)
    resp = await gateway.client.get("/svc", headers={"Authorization": f"TOKEN {token}"})
    assert resp.status == 200


async def test_no_credentials_is_401_with_a_bearer_challenge(gateway: Gateway) -> None:
    resp = await gateway.client.get("/svc")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'
    assert (await error_body(resp))["error"] == "unauthenticated"


async def test_invalid_token_is_401_invalid_token_and_never_echoed(gateway: Gateway, world: World) -> None:
    token = "gho_" + "f" * 36
    resp = await gateway.client.get("/svc", headers=bearer(token))
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="gateway", error="invalid_token"'
    text = await resp.text()
    assert (await error_body(resp))["error"] == "invalid_token"
    assert token not in text and token not in gateway.log_text()


async def test_revoked_token_is_401(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7)
    world.github.revoke(token)
    resp = await gateway.client.get("/svc", headers=bearer(token))
    assert resp.status == 401
    assert "invalid_token" in resp.headers["WWW-Authenticate"]


async def test_expired_token_is_401(start_gateway: GatewayFactory, world: World) -> None:
    gateway = await start_gateway(github={"apps": [SECOND_APP]})
    token = world.github.add_token("alice", 7, client_id=SECOND_ID, expires_in=-1)
    resp = await gateway.client.get("/svc", headers=bearer(token))
    assert resp.status == 401
    assert "invalid_token" in resp.headers["WWW-Authenticate"]


async def test_malformed_tokens_are_401_without_asking_github(gateway: Gateway, world: World) -> None:
    for value in (
        "Bearer",
        "Bearer a b",
        "Bearer " + "a" * 256,
        "Basic dXNlcjpwYXNz",
        "Bearer tok\u00e9n",
        "Bearer =abc",
    ):
        resp = await gateway.client.get("/svc", headers={"Authorization": value})
        assert resp.status == 401, value
        assert "invalid_token" in resp.headers["WWW-Authenticate"]
    assert world.github.check_calls() == 0


async def test_missing_scope_is_403_naming_the_scope(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7, ["repo"])
    resp = await gateway.client.get("/admin/x", headers=bearer(token))
    assert resp.status == 403
    assert resp.headers["WWW-Authenticate"] == (
        'Bearer realm="gateway", error="insufficient_scope", scope="admin:org"'
    )
    assert (await error_body(resp))["error"] == "insufficient_scope"


async def test_a_broader_scope_satisfies_a_narrower_one(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7, ["admin:org"])
    resp = await gateway.client.get("/readorg", headers=bearer(token))
    assert resp.status == 200


async def test_user_not_allowed_is_403(gateway: Gateway, world: World) -> None:
    bob = world.github.add_token("bob", 8)
    alice = world.github.add_token("Alice", 7)
    resp = await gateway.client.get("/alice", headers=bearer(bob))
    assert resp.status == 403
    assert (await error_body(resp))["error"] == "forbidden"
    assert "WWW-Authenticate" not in resp.headers
    assert (await gateway.client.get("/alice", headers=bearer(alice))).status == 200


async def test_method_not_allowed_is_403(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7)
    resp = await gateway.client.post("/getonly", headers=bearer(token))
    assert resp.status == 403
    assert (await gateway.client.get("/getonly", headers=bearer(token))).status == 200


async def test_github_down_and_nothing_cached_is_503_with_retry_after(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7)
    world.github.outage = 500
    resp = await gateway.client.get("/svc", headers=bearer(token))
    assert resp.status == 503
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await error_body(resp))["error"] == "github_unavailable"


async def test_wrong_app_credentials_are_503_not_401(start_gateway: GatewayFactory, world: World) -> None:
    gateway = await start_gateway(github={"apps": [{"client_id": CLIENT_ID, "client_secret": "wrong"}]})
    token = world.github.add_token("alice", 7)
    resp = await gateway.client.get("/svc", headers=bearer(token))
    assert resp.status == 503
    assert "Retry-After" in resp.headers


async def test_github_timeout_is_503(start_gateway: GatewayFactory, world: World) -> None:
    gateway = await start_gateway(github={"timeout": "200ms"})
    token = world.github.add_token("alice", 7)
    world.github.hang = True
    resp = await gateway.client.get("/svc", headers=bearer(token))
    assert resp.status == 503


async def test_no_route_is_404(start_gateway: GatewayFactory, world: World) -> None:
    gateway = await start_gateway(routes=[{"path": "/only", "upstream": world.upstream_url}])
    resp = await gateway.client.get("/elsewhere")
    assert resp.status == 404
    assert (await error_body(resp))["error"] == "not_found"
    assert (await gateway.client.get("/onlyx")).status == 404


async def test_two_authorization_headers_are_400(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7)
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    resp = await gateway.client.get("/svc", headers=headers)
    assert resp.status == 400
    assert (await error_body(resp))["error"] == "bad_request"


async def test_path_above_root_is_400(gateway: Gateway) -> None:
    for path in ("/../etc/passwd", "/public/../../x", "/%2e%2e/x", "/public/%2fadmin", "/public\\..\\admin"):
        status, _ = await raw_request(gateway.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n")
        assert status == 400, path


async def test_body_over_max_body_size_is_413(start_gateway: GatewayFactory, world: World) -> None:
    gateway = await start_gateway(server={"host": "127.0.0.1", "port": 0, "max_body_size": 1000})
    token = world.github.add_token("alice", 7)
    resp = await gateway.client.post("/svc", data=b"x" * 1001, headers=bearer(token))
    assert resp.status == 413

    async def chunked() -> Any:
        for _ in range(10):
            yield b"y" * 200

    resp = await gateway.client.post("/svc", data=chunked(), headers=bearer(token))
    assert resp.status == 413
    resp = await gateway.client.post("/svc", data=b"x" * 1000, headers=bearer(token))
    assert resp.status == 200
    assert (await resp.json())["body_length"] == 1000


async def test_upstream_unreachable_is_502(start_gateway: GatewayFactory, world: World) -> None:
    gateway = await start_gateway(
        routes=[{"path": "/", "upstream": f"http://127.0.0.1:{free_port()}", "auth": "none"}]
    )
    resp = await gateway.client.get("/x")
    assert resp.status == 502
    assert (await error_body(resp))["error"] == "bad_gateway"


async def test_upstream_too_slow_is_504(start_gateway: GatewayFactory) -> None:
    never = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await never.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gateway = await start_gateway(
            routes=[{"path": "/", "upstream": f"http://127.0.0.1:{port}", "auth": "none", "timeout": "300ms"}]
        )
        resp = await gateway.client.get("/x")
        assert resp.status == 504
        assert (await error_body(resp))["error"] == "gateway_timeout"
    finally:
        never.set()
        server.close()
        await server.wait_closed()


async def test_a_short_timeout_holds_on_a_connection_a_longer_one_used_before(
    start_gateway: GatewayFactory,
) -> None:
    """Routes to one upstream share its keep-alive connections: a route's 300 ms `timeout` is kept on a
    connection whose last answer, on another route, was given 10 s."""
    never = asyncio.Event()

    async def answers_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await reader.readuntil(b"\r\n\r\n")  # the next request, on the same connection: no answer
        await never.wait()
        writer.close()

    server = await asyncio.start_server(answers_once, "127.0.0.1", 0)
    upstream = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        gateway = await start_gateway(
            routes=[
                {"path": "/patient", "upstream": upstream, "auth": "none", "timeout": "10s"},
                {"path": "/hasty", "upstream": upstream, "auth": "none", "timeout": "300ms"},
            ]
        )
        assert (await gateway.client.get("/patient/x")).status == 200
        started = time.monotonic()
        resp = await gateway.client.get("/hasty/x")
        assert resp.status == 504
        assert time.monotonic() - started < 2
    finally:
        never.set()
        server.close()
        await server.wait_closed()


async def test_public_route_needs_no_token(gateway: Gateway, world: World) -> None:
    resp = await gateway.client.get("/public/x")
    assert resp.status == 200
    assert world.github.check_calls() == 0


async def test_optional_route_forwards_anonymously_but_checks_credentials(
    gateway: Gateway, world: World
) -> None:
    resp = await gateway.client.get("/maybe")
    assert resp.status == 200
    assert seen_headers(await resp.json(), "X-Auth-User") == []
    resp = await gateway.client.get("/maybe", headers=bearer("gho_" + "0" * 36))
    assert resp.status == 401


async def test_whoami_answers_the_callers_identity(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7, ["repo"])
    resp = await gateway.client.get("/_gateway/whoami", headers=bearer(token))
    assert resp.status == 200
    assert await resp.json() == {
        "login": "alice",
        "id": 7,
        "scopes": ["repo"],
        "expires_at": None,
        "client_id": CLIENT_ID,
    }
    assert (await gateway.client.get("/_gateway/whoami")).status == 401


async def test_oversized_header_is_400_json_without_echoing_it(gateway: Gateway) -> None:
    token = "gho_" + "9" * 9000
    status, answer = await raw_request(
        gateway.port, f"GET /svc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
    )
    assert status == 400
    assert b'"error": "bad_request"' in answer
    assert b"999999" not in answer


async def test_malformed_request_line_is_400_json(gateway: Gateway) -> None:
    status, answer = await raw_request(gateway.port, "GET /svc HTTP/1.1 extra\r\nHost: x\r\n")
    assert status == 400
    assert b'"error": "bad_request"' in answer


async def test_cors_preflight_passes_without_credentials_only_where_allowed(
    start_gateway: GatewayFactory, world: World
) -> None:
    up = world.upstream_url
    gateway = await start_gateway(
        routes=[
            {"path": "/cors", "upstream": up, "skip_auth_preflight": True},
            {"path": "/", "upstream": up},
        ]
    )
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    resp = await gateway.client.options("/cors/x", headers=preflight)
    assert resp.status == 200
    assert (await gateway.client.options("/cors/x")).status == 401  # not a preflight
    assert (await gateway.client.post("/cors/x", headers=preflight)).status == 401
    assert (await gateway.client.options("/other", headers=preflight)).status == 401


async def test_credentials_on_a_public_route_are_neither_checked_nor_forwarded(
    gateway: Gateway, world: World
) -> None:
    token = world.github.add_token("alice", 7)
    resp = await gateway.client.get("/public", headers=bearer(token))
    assert resp.status == 200
    assert seen_headers(await resp.json(), "Authorization") == []
    assert world.github.check_calls() == 0
