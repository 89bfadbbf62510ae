"""The admin listener (README: The admin port): `/healthz`, `/readyz` and `/metrics` on a port of their own,
loopback by default, so probes and scrapes never mix with the traffic the gateway guards."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from .metrics import exposition


class Readiness:
    """What `/readyz` answers from: the gateway in force, and whether the process is draining."""

    def __init__(self, github_problem: Callable[[], str | None]) -> None:
        self.github_problem = github_problem  # why GitHub cannot be used now, or None
        self.draining = False


def admin_app(readiness: Readiness) -> web.Application:
    """`GET /healthz` (the process is up), `GET /readyz` (config loaded, GitHub usable as far as
    is known, not draining; no call to GitHub per probe), `GET /metrics` (Prometheus text)."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        problems = []
        if readiness.draining:
            problems.append("draining: shutting down")
        if (problem := readiness.github_problem()) is not None:
            problems.append(f"github: {problem}")
        return web.json_response(
            {"ready": not problems, "problems": problems}, status=503 if problems else 200
        )

    async def metrics(_request: web.Request) -> web.Response:
        body, content_type = exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
