"""GitHub's rules for every request to its REST API, as the fake enforces them (`api_rules`): a request
without a `User-Agent` is refused with 403 and GitHub's text, one naming an `X-GitHub-Api-Version`
GitHub does not serve with 400 and GitHub's JSON; every answer carries `X-GitHub-Request-Id` and
`X-GitHub-Media-Type`. The web host's flows (`/login/…`) are not the API: GitHub's docs require a
User-Agent of "all API requests", and browsers reach those pages with whatever headers they send.

The rate-limit headers are the caller's (`FakeGitHub`, which knows who calls); an answer given
before the caller is known (a 401, an unknown app) carries the budget of the caller's address, 60 an
hour as GitHub's for unauthenticated requests (`ANONYMOUS_BUDGET`), reported but never refused (the
fake's tests and demos make many such calls from one address).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

__all__ = ["ANONYMOUS_BUDGET", "API_VERSIONS", "ROUTE_DOCS", "WEB_PREFIX", "api_rules", "route_not_found"]

API_VERSIONS = ("2022-11-28", "2026-03-10")  # the versions of GitHub's REST API the fake serves
ANONYMOUS_BUDGET = 60  # GitHub's hourly primary limit for unauthenticated requests, per address
WEB_PREFIX = "/login/"  # the web host's flows: not the API
ROUTE_DOCS = "https://docs.github.com/rest"  # where GitHub's 404 for a path it does not serve points
MEDIA_TYPE = "github.v3; format=json"
NO_USER_AGENT = (
    "Request forbidden by administrative rules. Please make sure your request has a User-Agent header"
    " (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required)."
    " Check https://developer.github.com for other possible causes.\n"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_not_found() -> web.Response:
    """GitHub's 404 for a path (or method) it does not serve: its generic docs, no operation's."""
    return web.json_response(
        {"message": "Not Found", "documentation_url": ROUTE_DOCS, "status": "404"}, status=404
    )


def unsupported_version(version: str) -> web.Response:
    """GitHub's 400 for an X-GitHub-Api-Version it does not serve."""
    supported = ", ".join(f'"{v}"' for v in API_VERSIONS)
    message = (
        f'The version you specified in the "X-GitHub-Api-Version" request header, "{version}", is not a'
        f" supported version. The following versions are currently supported: {supported}."
    )
    body = {
        "message": message,
        "documentation_url": "https://docs.github.com/rest/about-the-rest-api/api-versions",
        "status": "400",
    }
    return web.json_response(body, status=400)


def _request_id() -> str:
    """An id shaped like GitHub's (`CA0E:2F1B:1A2B3C:1B2C3D:65A1B2C3`)."""
    return ":".join(secrets.token_hex(n).upper() for n in (2, 2, 3, 3, 4))


@web.middleware
async def api_rules(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse what GitHub's API refuses before any endpoint sees it; stamp every API answer."""
    if request.path.startswith(WEB_PREFIX):
        return await handler(request)
    if not request.headers.get("User-Agent", "").strip():
        # GitHub's front end answers this one as text, not JSON
        answer: web.StreamResponse = web.Response(status=403, text=NO_USER_AGENT, content_type="text/html")
    elif (version := request.headers.get("X-GitHub-Api-Version")) is not None and (
        version not in API_VERSIONS
    ):
        answer = unsupported_version(version)
    else:
        answer = await handler(request)
    answer.headers["X-GitHub-Request-Id"] = _request_id()
    answer.headers["X-GitHub-Media-Type"] = MEDIA_TYPE
    return answer
