"""Peers the gateway is measured against, and the servers around it, one process each.

    python -m bench.peers fake-github PORT [--latency S]  check-token (POST /applications/{cid}/token):
                                                          tokens starting with `good` are valid;
                                                          GET /_count: check calls served
    python -m bench.peers bare-proxy PORT UPSTREAM        aiohttp pass-through proxy, no auth
    python -m bench.peers naive-gateway PORT UPSTREAM GH  the obvious gateway: check-token + TTLCache
                                                          by SHA-256, no single flight, buffered bodies
    python -m bench.peers upstream PORT                   a static "ok" (when nginx is not installed)
    python -m bench.peers sink PORT                       reads a request body, answers its length

Copied from ../shared/bench/peers.py (behaviour unchanged, typed). Every server runs on uvloop when it
is installed, as the gateway does, so the comparison is between programs and not event loops.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import aiohttp
from aiohttp import web
from cachetools import TTLCache

from .eventloop import new_event_loop

HOST = "127.0.0.1"
CLIENT_ID = "cid"
CLIENT_SECRET = "secret"  # noqa: S105 (the fake app's, as in bench/nginx-peers.conf)
HOP = frozenset(
    {
        *("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers"),
        *("transfer-encoding", "upgrade", "host", "content-length"),
    }
)
_SESSION = web.AppKey("session", aiohttp.ClientSession)


def authorization(token: str, client_id: str) -> dict[str, object]:
    """GitHub's check-token answer, with every field its OpenAPI schema requires."""
    now = "2026-01-01T00:00:00Z"
    user = {
        **{"login": "octocat", "id": 1, "node_id": "MDQ6VXNlcjE=", "type": "User", "site_admin": False},
        **dict.fromkeys(("avatar_url", "gravatar_id", "url", "html_url", "followers_url"), ""),
        **dict.fromkeys(("following_url", "gists_url", "starred_url", "subscriptions_url"), ""),
        **dict.fromkeys(("organizations_url", "repos_url", "events_url", "received_events_url"), ""),
    }
    return {
        "id": 1,
        "url": "https://api.github.com/authorizations/1",
        "scopes": ["repo", "user"],
        "token": token,
        "token_last_eight": token[-8:],
        "hashed_token": hashlib.sha256(token.encode()).hexdigest(),
        "app": {"url": "http://app", "name": "app", "client_id": client_id},
        **{"note": None, "note_url": None, "fingerprint": None, "expires_at": None},
        **{"updated_at": now, "created_at": now, "user": user},
    }


def fake_github(latency: float) -> web.Application:
    """The check-token endpoint, answering after `latency` seconds, and its call counter."""
    calls = {"n": 0}

    async def count(_request: web.Request) -> web.Response:
        return web.json_response(calls)

    async def check(request: web.Request) -> web.Response:
        calls["n"] += 1
        await asyncio.sleep(latency)  # GitHub answers in tens of ms, not microseconds
        body = await request.json()
        token = body.get("access_token", "") if isinstance(body, dict) else ""
        if not isinstance(token, str) or not token.startswith("good"):
            return web.json_response({"message": "Not Found"}, status=404)
        return web.json_response(authorization(token, request.match_info["cid"]))

    async def member(request: web.Request) -> web.Response:
        """GET /user/memberships/orgs/{org} and …/teams/{slug}/memberships/{login}: every good token's
        user is an active member (the membership facts a gated route asks, once per TTL)."""
        calls["n"] += 1
        await asyncio.sleep(latency)
        if not request.headers.get("Authorization", "").removeprefix("token ").startswith("good"):
            return web.json_response({"message": "Bad credentials"}, status=401)
        return web.json_response({"state": "active", "role": "member", "url": str(request.url)})

    app = web.Application()
    app.router.add_post("/applications/{cid}/token", check)
    app.router.add_get("/user/memberships/orgs/{org}", member)
    app.router.add_get("/orgs/{org}/teams/{slug}/memberships/{login}", member)
    app.router.add_get("/_count", count)
    return app


def proxy_app(upstream: str, checker: str | None = None) -> web.Application:
    """The bare pass-through proxy, or with `checker` the naive gateway in front of it."""
    app = web.Application()
    cache: TTLCache[str, tuple[str, str]] = TTLCache(maxsize=100_000, ttl=60)

    async def session(app: web.Application) -> AsyncIterator[None]:
        app[_SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        yield
        await app[_SESSION].close()

    app.cleanup_ctx.append(session)

    async def identity(token: str) -> tuple[str, str] | None:
        assert checker is not None
        key = hashlib.sha256(token.encode()).hexdigest()
        found = cache.get(key)
        if found is None:
            async with app[_SESSION].post(
                f"{checker}/applications/{CLIENT_ID}/token",
                json={"access_token": token},
                auth=aiohttp.BasicAuth(CLIENT_ID, CLIENT_SECRET),
            ) as r:
                if r.status != 200:
                    return None
                data = await r.json()
            found = cache[key] = (data["user"]["login"], ",".join(data["scopes"]))
        return found

    async def handle(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        if checker is not None:
            auth = request.headers.get("Authorization", "")
            found = await identity(auth[7:]) if auth.startswith("Bearer ") else None
            if found is None:
                return web.Response(status=401)
            headers.pop("Authorization", None)
            headers["X-Auth-User"], headers["X-Auth-Scopes"] = found
        body = await request.read()
        async with app[_SESSION].request(
            request.method, upstream + request.path_qs, headers=headers, data=body
        ) as r:
            payload = await r.read()
            out = {k: v for k, v in r.headers.items() if k.lower() not in HOP}
            return web.Response(status=r.status, headers=out, body=payload)

    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _static(_request: web.BaseRequest) -> web.StreamResponse:
    return web.Response(text="ok\n")


async def _sink(request: web.BaseRequest) -> web.StreamResponse:
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
    return web.Response(text=str(size))


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


async def _serve_lowlevel(handler: Handler, port: int) -> None:
    runner = web.ServerRunner(web.Server(handler, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    await asyncio.Event().wait()  # until SIGTERM ends the process


def main(argv: Sequence[str] | None = None) -> None:
    """Serve one peer on 127.0.0.1 until terminated."""
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("fake-github", "bare-proxy", "naive-gateway", "upstream", "sink"))
    parser.add_argument("port", type=int)
    parser.add_argument("urls", nargs="*", metavar="URL")
    parser.add_argument("--latency", type=float, default=0.05, help="fake-github: seconds per answer")
    args = parser.parse_args(argv)
    loop = new_event_loop()
    if args.kind in ("upstream", "sink"):
        with asyncio.Runner(loop_factory=lambda: loop) as runner:
            runner.run(_serve_lowlevel(_static if args.kind == "upstream" else _sink, args.port))
        return
    needed = {"fake-github": 0, "bare-proxy": 1, "naive-gateway": 2}[args.kind]
    if len(args.urls) != needed:
        parser.error(f"{args.kind} takes {needed} URL(s)")
    app = fake_github(args.latency) if args.kind == "fake-github" else proxy_app(*args.urls)
    web.run_app(app, host=HOST, port=args.port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
