"""The identity token (DESIGN §11): every authenticated request reaching an upstream carries a JWT that
the upstream verifies against `/_gateway/jwks.json` with a JWT library of its own (here joserfc), and a
token anything else forged, replayed or stretched is refused there."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from aiohttp.test_utils import TestServer
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from gateway import metrics
from gateway.config import IdentityTokenConfig
from gateway.identity import Identity
from gateway.identity_token import IdentityTokens

from .support.headers import bearer
from .support.metrics import value
from .support.processes import REPO
from .support.verifier import KINDS, VerifyingUpstream, kid_of, write_key
from .support.world import BOTH_APPS, CLIENT_ID, SECOND_ID, Gateway, GatewayFactory, World

ISSUER = "https://gateway.test"
Servers = Callable[..., Awaitable[TestServer]]


async def _upstream(aiohttp_server: Servers, audience: str | None = None) -> VerifyingUpstream:
    """A verifying upstream on its own port; its audience is its origin unless given."""
    upstream = VerifyingUpstream(issuer=ISSUER, audience="")
    server = await aiohttp_server(upstream.app())
    upstream.url = str(server.make_url("")).rstrip("/")
    upstream.audience = audience or upstream.url
    return upstream


async def _start(
    start_gateway: GatewayFactory,
    key: Path,
    routes: list[dict[str, Any]],
    *verifiers: VerifyingUpstream,
    **overrides: Any,
) -> Gateway:
    token_config = {"signing_key_file": str(key), "issuer": ISSUER, **overrides.pop("identity_token", {})}
    gateway = await start_gateway(identity_token=token_config, routes=routes, **overrides)
    for verifier in verifiers:
        verifier.jwks_url = str(gateway.client.make_url("/_gateway/jwks.json"))
    return gateway


@pytest.fixture
async def upstream(aiohttp_server: Servers) -> VerifyingUpstream:
    return await _upstream(aiohttp_server)


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_each_key_type_signs_tokens_the_upstream_verifies(
    kind: str, start_gateway: GatewayFactory, world: World, upstream: VerifyingUpstream, tmp_path: Path
) -> None:
    key, _, _ = write_key(tmp_path, "signing", kind)
    gateway = await _start(start_gateway, key, [{"path": "/", "upstream": upstream.url}], upstream)
    token = world.github.add_token("alice", 7, ["repo", "read:org"])

    resp = await gateway.client.get("/svc", headers=bearer(token))

    assert resp.status == 200, upstream.rejected
    answer = await resp.json()
    claims = answer["claims"]
    assert set(claims) == {"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "login", "scopes", "client_id"}
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "7"
    assert claims["aud"] == upstream.url
    assert claims["login"] == "alice"
    assert claims["scopes"] == ["repo", "read:org"]
    assert claims["client_id"] == CLIENT_ID
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] == claims["iat"] + 60
    jwks = await (await gateway.client.get("/_gateway/jwks.json")).json()
    assert [k["alg"] for k in jwks["keys"]] == [KINDS[kind]]
    assert answer["kid"] == jwks["keys"][0]["kid"] == KeySet.import_key_set(jwks).keys[0].thumbprint()


async def test_the_upstream_refuses_forged_tampered_expired_and_misaddressed_tokens(
    start_gateway: GatewayFactory,
    world: World,
    upstream: VerifyingUpstream,
    aiohttp_server: Servers,
    tmp_path: Path,
) -> None:
    key, public, signer = write_key(tmp_path, "signing")
    _, _, stranger = write_key(tmp_path, "stranger")
    other = await _upstream(aiohttp_server)
    routes = [{"path": "/other", "upstream": other.url}, {"path": "/", "upstream": upstream.url}]
    gateway = await _start(start_gateway, key, routes, upstream, other)
    token = world.github.add_token("alice", 7)
    genuine = (await (await gateway.client.get("/svc", headers=bearer(token))).json())["claims"]
    kid = (await (await gateway.client.get("/_gateway/jwks.json")).json())["keys"][0]["kid"]
    now = int(time.time())

    def signed(claims: dict[str, Any], key: Any = signer, kid: str = kid) -> str:
        return pyjwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})

    head, _, signature = signed(genuine).split(".")
    raised = {**genuine, "login": "admin", "sub": "1"}
    tampered = ".".join((head, base64.urlsafe_b64encode(json.dumps(raised).encode()).decode(), signature))
    forged = {
        "wrong key, same kid": signed(raised, stranger),
        "tampered claims": tampered,
        "expired": signed({**genuine, "iat": now - 120, "nbf": now - 120, "exp": now - 60}),
        "not yet valid": signed({**genuine, "nbf": now + 600}),
        "another audience": signed({**genuine, "aud": "http://elsewhere.example"}),
        "another issuer": signed({**genuine, "iss": "https://evil.example"}),
        "unsigned": _b64(json.dumps({"alg": "none", "kid": kid}).encode())
        + "."
        + _b64(json.dumps(raised).encode())
        + ".",
        "HS256 keyed with the public key": _hs256(raised, kid, public.read_bytes()),
        "no kid": signed(raised, kid=""),
    }
    for what, value_ in forged.items():
        async with gateway.client.session.get(upstream.url, headers={"X-Auth-Jwt": value_}) as resp:
            assert resp.status == 401, what
    # a token the gateway signed for one upstream is refused by another
    replayed = await (await gateway.client.get("/other", headers=bearer(token))).json()
    async with gateway.client.session.get(
        upstream.url, headers={"X-Auth-Jwt": signed(replayed["claims"])}
    ) as resp:
        assert resp.status == 401
    assert len(upstream.rejected) == len(forged) + 1


async def test_a_callers_own_identity_token_header_never_reaches_the_upstream(
    start_gateway: GatewayFactory, world: World, upstream: VerifyingUpstream, tmp_path: Path
) -> None:
    key, _, _ = write_key(tmp_path, "signing")
    routes = [{"path": "/maybe", "upstream": upstream.url, "auth": "optional"}]
    routes.append({"path": "/", "upstream": upstream.url})
    gateway = await _start(start_gateway, key, routes, upstream)
    token = world.github.add_token("alice", 7)
    spoofed = {"X-Auth-Jwt": "forged", "x_auth_jwt": "forged", "X-AUTH-JWT": "forged"}

    resp = await gateway.client.get("/svc", headers={**bearer(token), **spoofed})
    assert resp.status == 200, upstream.rejected  # exactly one token arrived: the gateway's

    anonymous = await gateway.client.get("/maybe", headers=spoofed)
    assert anonymous.status == 401  # none arrived: no identity, no token
    assert len(upstream.rejected) == 1 and "0 X-Auth-Jwt headers" in upstream.rejected[0]


async def test_the_token_is_reused_per_caller_and_route_and_counted_when_signed(
    start_gateway: GatewayFactory,
    world: World,
    upstream: VerifyingUpstream,
    aiohttp_server: Servers,
    tmp_path: Path,
) -> None:
    key, _, _ = write_key(tmp_path, "signing")
    audience = "urn:example:billing"
    billing = await _upstream(aiohttp_server, audience)
    routes = [
        {"path": "/billing", "upstream": billing.url, "audience": audience},
        {"path": "/", "upstream": upstream.url},
    ]
    gateway = await _start(start_gateway, key, routes, upstream, billing)
    alice, bob = world.github.add_token("alice", 7), world.github.add_token("bob", 8)
    before = value("gateway_identity_tokens_signed_total", route="/")

    jtis = []
    for path, token in (("/a", alice), ("/b", alice), ("/billing", alice), ("/a", bob)):
        resp = await gateway.client.get(path, headers=bearer(token))
        assert resp.status == 200
        jtis.append((await resp.json())["claims"]["jti"])

    assert jtis[0] == jtis[1]  # the same caller on the same route: one signature
    assert len(set(jtis)) == 3
    assert billing.accepted[0]["aud"] == audience
    metrics.TALLY.flush()
    assert value("gateway_identity_tokens_signed_total", route="/") == before + 2
    assert value("gateway_identity_tokens_signed_total", route="/billing") >= 1


async def test_exp_never_outlives_the_github_token(
    start_gateway: GatewayFactory, world: World, upstream: VerifyingUpstream, tmp_path: Path
) -> None:
    key, _, _ = write_key(tmp_path, "signing")
    gateway = await _start(
        start_gateway,
        key,
        [{"path": "/", "upstream": upstream.url}],
        upstream,
        identity_token={"ttl": "1h"},
        github={"apps": BOTH_APPS},
    )
    token = world.github.add_token("monalisa", 2, client_id=SECOND_ID, expires_in=300)
    held = world.github.lookup(token)
    assert held is not None and held.expires_at is not None
    expires_at = held.expires_at

    claims = (await (await gateway.client.get("/x", headers=bearer(token))).json())["claims"]

    assert claims["exp"] == int(expires_at)
    assert claims["exp"] - claims["iat"] <= 300


async def test_groups_are_a_claim_when_organisations_are_configured(
    start_gateway: GatewayFactory, world: World, upstream: VerifyingUpstream, tmp_path: Path
) -> None:
    key, _, _ = write_key(tmp_path, "signing")
    token = world.github.add_token("alice", 7, ["read:org"])
    world.github.add_org("acme")
    world.github.add_member("acme", "alice")
    world.github.add_team("acme", "sre")
    routes = [{"path": "/ops", "upstream": upstream.url, "orgs": ["acme", "other"], "teams": ["acme/sre"]}]
    gateway = await _start(start_gateway, key, routes, upstream)

    resp = await gateway.client.get("/ops", headers=bearer(token))

    assert resp.status == 200, upstream.rejected
    assert (await resp.json())["claims"]["groups"] == ["acme"]


async def test_forward_auth_answers_with_the_token(
    start_gateway: GatewayFactory, world: World, upstream: VerifyingUpstream, tmp_path: Path
) -> None:
    key, _, _ = write_key(tmp_path, "signing")
    gateway = await _start(start_gateway, key, [{"path": "/", "upstream": upstream.url}], upstream)
    token = world.github.add_token("alice", 7)

    resp = await gateway.client.get(
        "/_gateway/auth", headers={**bearer(token), "X-Original-URI": "/svc", "X-Original-Method": "GET"}
    )

    assert resp.status == 200
    claims = await upstream.verify(resp.headers["X-Auth-Jwt"])
    assert (claims["login"], claims["aud"]) == ("alice", upstream.url)


async def test_a_websocket_upgrade_carries_the_token(
    start_gateway: GatewayFactory, world: World, upstream: VerifyingUpstream, tmp_path: Path
) -> None:
    key, _, _ = write_key(tmp_path, "signing")
    gateway = await _start(start_gateway, key, [{"path": "/", "upstream": upstream.url}], upstream)
    token = world.github.add_token("alice", 7)

    async with gateway.client.ws_connect("/ws", headers=bearer(token)) as ws:
        await ws.send_str("who")
        claims = json.loads(await ws.receive_str())

    assert claims["login"] == "alice" and not upstream.rejected


async def test_the_jwks_lists_current_then_previous_keys_with_cache_headers(
    start_gateway: GatewayFactory, world: World, tmp_path: Path
) -> None:
    key, _, current = write_key(tmp_path, "current", "rsa")
    _, old, _ = write_key(tmp_path, "old", "ed25519")
    gateway = await start_gateway(
        identity_token={
            "signing_key_file": str(key),
            "previous_public_keys": [str(old)],
            "issuer": ISSUER,
        }
    )

    resp = await gateway.client.get("/_gateway/jwks.json")

    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert resp.headers["Cache-Control"] == "public, max-age=300"
    jwks = await resp.json()
    assert [(k["kty"], k["alg"], k["use"]) for k in jwks["keys"]] == [
        ("RSA", "RS256", "sig"),
        ("OKP", "EdDSA", "sig"),
    ]
    assert not any({"d", "p", "q", "dp", "dq", "qi"} & set(k) for k in jwks["keys"])  # SECURITY: public only
    assert [k.thumbprint() for k in KeySet.import_key_set(jwks).keys] == [k["kid"] for k in jwks["keys"]]
    numbers = current.public_key().public_numbers()
    assert int.from_bytes(base64.urlsafe_b64decode(jwks["keys"][0]["n"] + "==")) == numbers.n
    again = await gateway.client.get("/_gateway/jwks.json", headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status == 304


async def test_without_identity_token_there_is_no_jwks_and_no_token(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7)
    assert (await gateway.client.get("/_gateway/jwks.json")).status == 404
    echoed = await (await gateway.client.get("/x", headers={**bearer(token), "X-Auth-Jwt": "forged"})).json()
    assert not [v for k, v in echoed["headers"] if k.lower() == "x-auth-jwt"]


async def test_the_verifier_itself_refuses_what_it_cannot_verify(upstream: VerifyingUpstream) -> None:
    with pytest.raises(JoseError):
        await upstream.verify("not.a.jwt")


def test_kid_of_reads_the_protected_header() -> None:
    assert kid_of(pyjwt.encode({}, "k" * 32, headers={"kid": "abc"})) == "abc"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256(claims: dict[str, Any], kid: str, secret: bytes) -> str:
    """The algorithm-confusion forgery: HMAC keyed with the (public) verification key."""
    signing_input = (
        _b64(json.dumps({"alg": "HS256", "kid": kid}).encode()) + "." + _b64(json.dumps(claims).encode())
    )
    digest = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(digest)


def _tokens(tmp_path: Path, clock: list[float], max_entries: int = 100) -> IdentityTokens:
    key, _, _ = write_key(tmp_path, "signing")
    config = IdentityTokenConfig.model_validate({"signing_key_file": str(key), "issuer": ISSUER, "ttl": 60})
    return IdentityTokens(config, max_entries=max_entries, clock=lambda: clock[0])


def test_a_held_token_is_renewed_once_half_its_lifetime_is_gone(tmp_path: Path) -> None:
    clock = [1_800_000_000.0]
    tokens = _tokens(tmp_path, clock)
    alice = Identity("alice", 7, ("repo",), None, CLIENT_ID)
    first = tokens.issued(alice, b"a", "aud", None, "/").token

    clock[0] += 29
    assert tokens.issued(alice, b"a", "aud", None, "/").token == first
    clock[0] += 1
    renewed = tokens.issued(alice, b"a", "aud", None, "/").token
    assert renewed != first
    assert pyjwt.decode(renewed, options={"verify_signature": False})["iat"] == 1_800_000_030


def test_a_changed_identity_or_groups_gets_a_new_token(tmp_path: Path) -> None:
    tokens = _tokens(tmp_path, [1_800_000_000.0])
    alice = Identity("alice", 7, ("repo",), None, CLIENT_ID)
    first = tokens.issued(alice, b"a", "aud", ("acme",), "/").token

    regrouped = tokens.issued(alice, b"a", "aud", (), "/").token
    rescoped = tokens.issued(alice._replace(scopes=()), b"a", "aud", (), "/").token

    assert len({first, regrouped, rescoped}) == 3
    assert pyjwt.decode(regrouped, options={"verify_signature": False})["groups"] == []


def test_tokens_held_are_bounded(tmp_path: Path) -> None:
    tokens = _tokens(tmp_path, [1_800_000_000.0], max_entries=2)
    alice = Identity("alice", 7, (), None, CLIENT_ID)
    first = tokens.issued(alice, b"a", "aud", None, "/").token
    tokens.issued(alice, b"b", "aud", None, "/")
    tokens.issued(alice, b"c", "aud", None, "/")

    assert "2 held" in repr(tokens)
    assert tokens.issued(alice, b"a", "aud", None, "/").token != first  # the oldest was let go


async def test_the_readmes_python_verifier_works_as_written(
    start_gateway: GatewayFactory, world: World, upstream: VerifyingUpstream, tmp_path: Path
) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    snippet = readme.split("**Verifying it in Python**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    key, _, _ = write_key(tmp_path, "signing", "ed25519")
    gateway = await start_gateway(
        identity_token={"signing_key_file": str(key), "issuer": "https://gw.example.com"},
        routes=[{"path": "/", "upstream": upstream.url, "audience": "billing"}],
    )
    jwks_url = str(gateway.client.make_url("/_gateway/jwks.json"))
    namespace: dict[str, Any] = {}
    exec(snippet.replace("https://gw.example.com/_gateway/jwks.json", jwks_url), namespace)  # noqa: S102
    token = world.github.add_token("alice", 7)
    resp = await gateway.client.get("/_gateway/auth", headers={**bearer(token), "X-Original-URI": "/x"})

    claims = await asyncio.to_thread(namespace["caller"], resp.headers)

    assert (claims["login"], claims["aud"]) == ("alice", "billing")
    kid = kid_of(resp.headers["X-Auth-Jwt"])
    for refused in (
        {"X-Auth-Jwt": _hs256(claims, kid, b"secret")},
        {"X-Auth-Jwt": _hs256(claims, "k", b"")},
        {},
    ):
        with pytest.raises(pyjwt.PyJWTError):
            await asyncio.to_thread(namespace["caller"], refused)


def test_a_tokens_header_line_is_the_header_and_the_token_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the line goes into heads past the serialiser's CR/LF check: it is made from a compact JWS only
    tokens = _tokens(tmp_path, [1_800_000_000.0])
    alice = Identity("alice", 7, (), None, CLIENT_ID)
    token = tokens.issued(alice, b"a", "aud", None, "/").token
    assert tokens.issued(alice, b"a", "aud", None, "/").line == f"X-Auth-Jwt: {token}\r\n".encode()

    monkeypatch.setattr(tokens, "_sign", lambda *_: ("a.b.c\r\nX-Injected: 1", 1_800_000_030.0))
    with pytest.raises(ValueError, match="compact form"):
        tokens.issued(alice, b"other", "aud", None, "/")
