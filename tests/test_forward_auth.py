"""`GET /_gateway/auth`: the decision for a front proxy (nginx auth_request, Traefik, Caddy, Envoy)."""

from __future__ import annotations

from .support.headers import bearer
from .support.sockets import raw_request
from .support.world import BOTH_APPS, SECOND_ID, Gateway, GatewayFactory, World

AUTH = "Authorization: Bearer "


def original(uri: str, method: str = "GET", style: str = "nginx") -> dict[str, str]:
    if style == "nginx":
        return {"X-Original-URI": uri, "X-Original-Method": method}
    return {"X-Forwarded-Uri": uri, "X-Forwarded-Method": method}


async def test_a_valid_token_gets_200_with_identity_headers(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7, ["repo", "read:org"])
    resp = await gateway.client.get("/_gateway/auth", headers={**bearer(token), **original("/svc/x?y=1")})
    assert resp.status == 200
    assert resp.headers["X-Auth-User"] == "alice"
    assert resp.headers["X-Auth-User-Id"] == "7"
    assert resp.headers["X-Auth-Scopes"] == "repo,read:org"
    assert "X-Auth-Token-Expires-At" not in resp.headers


async def test_refusals_are_the_same_as_in_proxy_mode(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7, ["repo"])
    resp = await gateway.client.get("/_gateway/auth", headers=original("/svc"))
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'
    resp = await gateway.client.get(
        "/_gateway/auth", headers={**bearer("gho_" + "0" * 36), **original("/svc")}
    )
    assert resp.status == 401 and "invalid_token" in resp.headers["WWW-Authenticate"]
    resp = await gateway.client.get("/_gateway/auth", headers={**bearer(token), **original("/admin")})
    assert resp.status == 403 and "insufficient_scope" in resp.headers["WWW-Authenticate"]


async def test_the_original_method_and_path_choose_the_policy(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7)
    nginx = {**bearer(token), **original("/getonly", "POST")}
    assert (await gateway.client.get("/_gateway/auth", headers=nginx)).status == 403
    nginx = {**bearer(token), **original("/getonly", "GET")}
    assert (await gateway.client.get("/_gateway/auth", headers=nginx)).status == 200
    public = await gateway.client.get("/_gateway/auth", headers=original("/public/x"))
    assert public.status == 200 and "X-Auth-User" not in public.headers


async def test_forward_auth_headers_forwarded_reads_traefik_and_caddys_headers(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await start_gateway(server={"forward_auth_headers": "forwarded"})
    token = world.github.add_token("alice", 7)
    traefik = {**bearer(token), **original("/getonly", "POST", style="traefik")}
    assert (await gateway.client.get("/_gateway/auth", headers=traefik)).status == 403
    traefik = {**bearer(token), **original("/getonly", "GET", style="traefik")}
    assert (await gateway.client.get("/_gateway/auth", headers=traefik)).status == 200
    assert (await gateway.client.get("/_gateway/auth", headers=original("/public/x"))).status == 400


async def test_a_request_naming_the_original_in_the_other_family_is_a_bad_request(
    start_gateway: GatewayFactory,
) -> None:
    """Forward-auth confusion: behind Caddy's forward_auth, a caller's own X-Original-URI: /public
    (passed on beside Caddy's X-Forwarded-Uri) must never choose the policy for a protected path."""
    for family, spoofed in (
        ("forwarded", {"X-Original-URI": "/public/x"}),
        ("forwarded", {"X-Original-Method": "GET"}),
        ("original", {"X-Forwarded-Uri": "/public/x"}),
        ("original", {"X-Forwarded-Method": "GET"}),
    ):
        gateway = await start_gateway(server={"forward_auth_headers": family})
        headers = {**original("/admin", "DELETE", style="nginx" if family == "original" else "traefik")}
        resp = await gateway.client.get("/_gateway/auth", headers={**headers, **spoofed})
        assert resp.status == 400, (family, spoofed)
        body = await resp.json()
        assert body["error"] == "bad_request" and "forward_auth_headers" in body["message"]


async def test_dot_segments_in_the_original_path_cannot_borrow_a_public_policy(
    gateway: Gateway, world: World
) -> None:
    token = world.github.add_token("alice", 7)  # lacks admin:org
    for uri in ("/public/../admin", "/public/%2e%2e/admin", "/PUBLIC/../Admin/x"):
        resp = await gateway.client.get("/_gateway/auth", headers={**bearer(token), **original(uri)})
        assert resp.status == 403, uri
    resp = await gateway.client.get("/_gateway/auth", headers=original("/public/..%2fadmin"))
    assert resp.status == 400


async def test_a_hash_in_the_original_uri_is_a_bad_request(gateway: Gateway) -> None:
    for uri in ("/public#x", "/public?a=1#b"):
        assert (await gateway.client.get("/_gateway/auth", headers=original(uri))).status == 400, uri


async def test_without_the_original_uri_it_is_a_bad_request(gateway: Gateway) -> None:
    assert (await gateway.client.get("/_gateway/auth")).status == 400


async def test_forward_auth_answers_the_scoped_token_for_upstream_token_routes(
    start_gateway: GatewayFactory, world: World
) -> None:
    world.github.add_account("octo-org", 100, ["api"])
    gateway = await start_gateway(
        routes=[{"path": "/", "upstream": world.upstream_url, "upstream_token": {"target": "octo-org"}}],
        github={"apps": BOTH_APPS},
    )
    token = world.github.add_token("monalisa", 2, client_id=SECOND_ID, expires_in=3600)
    resp = await gateway.client.get("/_gateway/auth", headers={**bearer(token), **original("/x")})
    assert resp.status == 200
    scoped = resp.headers["Authorization"].removeprefix("Bearer ")
    assert scoped != token and world.github.lookup(scoped) is not None


async def test_envoy_ext_authz_sends_the_original_method_and_path_after_the_endpoint(
    gateway: Gateway, world: World
) -> None:
    # Envoy's ext_authz HTTP service with path_prefix: /_gateway/auth
    token = world.github.add_token("alice", 7, ["repo"])
    resp = await gateway.client.get("/_gateway/auth/svc/x?y=1", headers=bearer(token))
    assert resp.status == 200 and resp.headers["X-Auth-User"] == "alice"
    assert (await gateway.client.get("/_gateway/auth/svc")).status == 401
    assert (await gateway.client.get("/_gateway/auth/admin", headers=bearer(token))).status == 403
    assert (await gateway.client.post("/_gateway/auth/getonly", headers=bearer(token))).status == 403
    assert (await gateway.client.get("/_gateway/auth/getonly", headers=bearer(token))).status == 200
    public = await gateway.client.get("/_gateway/auth/public/x")
    assert public.status == 200 and "X-Auth-User" not in public.headers


async def test_in_envoys_form_the_path_decides_not_a_header_or_dot_segments(
    gateway: Gateway, world: World
) -> None:
    token = world.github.add_token("alice", 7)  # lacks admin:org
    spoofed = {**bearer(token), **original("/public")}  # a header a client slipped through
    assert (await gateway.client.get("/_gateway/auth/admin", headers=spoofed)).status == 403
    for path in ("/_gateway/auth/public/../admin", "/_gateway/auth/public/%2e%2e/admin"):  # as sent
        status, _ = await raw_request(gateway.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n{AUTH}{token}\r\n")
        assert status == 403, path
