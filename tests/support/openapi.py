"""GitHub's OpenAPI description of the OAuth app endpoints (in ../shared/github-openapi, beside the
repository), and FakeGitHub on a real socket with every exchange checked against it (`open_env`)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from gateway.config import GitHubConfig
from gateway.github import GitHubClient
from gateway.testing.fake_github import FakeGitHub

from .clock import FakeClock
from .github import CID, CID2, SECRET, SECRET2
from .processes import REPO

OPENAPI = REPO.parent / "shared" / "github-openapi"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Schemas:
    """GitHub's description of every operation, from these files of ../shared/github-openapi (the first
    describing an operation wins). By default github.com today for the body forms and an old GHES
    (2.22, the last description with them) for the deprecated path forms."""

    def __init__(self, *files: str) -> None:
        self.operations: dict[tuple[str, str], dict[str, Any]] = {}
        for name in files or ("api.github.com.apps-oauth.json", "ghes-2.22.apps-oauth.json"):
            paths = json.loads((OPENAPI / name).read_text())["dereferenced_paths"]
            for path, methods in paths.items():
                for method, operation in methods.items():
                    self.operations.setdefault((method.upper(), path), operation)
        # statuses an operation does not document, or documents without a body: the basic-error GitHub
        # answers them with
        self.basic_error = next(
            schema
            for operation in self.operations.values()
            for answer in operation["responses"].values()
            if (schema := answer.get("content", {}).get("application/json", {}).get("schema", {})).get(
                "title"
            )
            == "Basic Error"
        )

    def operation(self, request: web.Request) -> dict[str, Any] | None:
        """The operation a request to the fake is (None: no such path or method)."""
        resource = getattr(request.match_info.route, "resource", None)
        if resource is None:
            return None
        return self.operations.get((request.method, resource.canonical.removeprefix("/api/v3")))

    def request(self, operation: dict[str, Any]) -> Any:
        """The schema of the operation's JSON body; None when it takes none (the path forms)."""
        body = operation.get("requestBody")
        return None if body is None else body["content"]["application/json"]["schema"]

    def answer(self, operation: dict[str, Any] | None, status: int) -> Any:
        """The schema of an answer; None for an answer without a body (204, 302)."""
        documented = (operation or {}).get("responses", {}).get(str(status))
        if documented is None:
            assert status >= 400, f"an undocumented success {status}"
            return self.basic_error
        content = documented.get("content")
        if content is None:  # a documented error without a body: GitHub sends its basic-error
            return self.basic_error if status >= 400 else None
        return content["application/json"]["schema"]


def _json_schema(operation: dict[str, Any], code: str) -> Any:
    return operation["responses"][code]["content"]["application/json"]["schema"]


def validate(schema: Any, instance: Any) -> None:
    OAS30Validator(schema, format_checker=oas30_format_checker).validate(instance)


@dataclass
class Env:
    fake: FakeGitHub
    url: str
    session: aiohttp.ClientSession
    wall: FakeClock
    validated: list[tuple[str, int | str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def client(
        self, *, prefix: str = "", apps: list[tuple[str, str]] | None = None, **cfg: Any
    ) -> GitHubClient:
        data: dict[str, Any] = {
            "api_url": self.url + prefix,
            "apps": [{"client_id": c, "client_secret": s} for c, s in apps or [(CID, SECRET)]],
            "retries": 0,
            "timeout": 2,
        }
        return GitHubClient(GitHubConfig.model_validate(data | cfg), self.session)


def validating(env: Env, schemas: Schemas) -> Any:
    """A middleware that checks every answer the fake sends, and every request our client sends,
    against GitHub's description of the operation."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        operation = schemas.operation(request)
        op = "unknown" if operation is None else operation["operationId"]
        if request.headers.get("User-Agent", "").startswith("gateway/"):
            assert operation is not None, f"our client called {request.method} {request.path}"
            check(env, op, "request", schemas.request(operation), await request.read())
        response = await handler(request)
        assert isinstance(response, web.Response)
        check(env, op, response.status, schemas.answer(operation, response.status), response.body)
        return response

    return middleware


def check(env: Env, op: str, status: int | str, schema: Any, raw: Any) -> None:
    try:
        if schema is None:
            assert not raw, "a body where GitHub sends (or takes) none"
        else:
            validate(schema, json.loads(raw))
        env.validated.append((op, status))
    except Exception as exc:
        env.problems.append(f"{op} {status}: {exc}")


@contextlib.asynccontextmanager
async def open_env(aiohttp_server: Any, schemas: Schemas) -> AsyncIterator[Env]:
    """A fake GitHub with two apps on a real socket, every exchange checked against GitHub's schemas."""
    wall = FakeClock(1_700_000_000.0)  # the fake's wall clock
    fake = FakeGitHub({CID: SECRET, CID2: SECRET2}, clock=wall)
    async with aiohttp.ClientSession() as session:
        env = Env(fake, "", session, wall)
        app = fake.app()
        app.middlewares.insert(0, validating(env, schemas))
        env.url = str((await aiohttp_server(app)).make_url("")).rstrip("/")
        yield env
    assert env.problems == []
