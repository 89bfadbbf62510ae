"""GitHub as the GitHub client's tests script it: the seed's example answer of check-a-token, the
client's config, aioresponses fitted to this aiohttp, and a GitHub on a real socket whose answers a test
writes (CraftedGitHub)."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from unittest.mock import Mock

import pytest
from aiohttp import ClientResponse, web
from aioresponses import aioresponses

from gateway.config import GitHubConfig
from gateway.identity import Identity

API = "https://api.github.com"
CID, SECRET = "Ov23liA1b2C3d4E5f6G7", "app-secret-1"  # an OAuth App: gho_ tokens with scopes
CID2, SECRET2 = "Iv1.0000000000second", "app-secret-2"  # a GitHub App: ghu_ tokens, no scopes
TOKEN = "gho_16C7e42F292c6912E7710c838347Ae178B4a"
CHECK = f"{API}/applications/{CID}/token"
CHECK2 = f"{API}/applications/{CID2}/token"
OCTOCAT = Identity(
    "octocat", 1, ("public_repo", "user"), datetime(2011, 9, 8, 17, 26, 27, tzinfo=UTC).timestamp(), CID
)


def authorization(token: str = TOKEN, **changes: Any) -> dict[str, Any]:
    """The seed's example answer of check-a-token, with `changes` applied (None deletes a key)."""
    body: dict[str, Any] = {
        "id": 1,
        "url": "https://api.github.com/authorizations/1",
        "scopes": ["public_repo", "user"],
        "token": token,
        "token_last_eight": token[-8:],
        "hashed_token": "25f94a2a5c7fbaf499c665bc73d67c1c87e496da8985131633ee0a95819db2e8",
        "app": {"url": "http://my-github-app.com", "name": "my github app", "client_id": CID},
        "note": "optional note",
        "note_url": "http://optional/note/url",
        "updated_at": "2011-09-06T20:39:23Z",
        "created_at": "2011-09-06T17:26:27Z",
        "fingerprint": "jklmnop12345678",
        "expires_at": "2011-09-08T17:26:27Z",
        "user": {"login": "octocat", "id": 1, "node_id": "MDQ6VXNlcjE=", "type": "User", "site_admin": False},
    }
    for key, value in changes.items():
        target, _, leaf = key.rpartition("__")
        holder = body[target] if target else body
        holder[leaf] = value
    return body


def config(**overrides: Any) -> GitHubConfig:
    data: dict[str, Any] = {
        "api_url": API,
        "apps": [{"client_id": CID, "client_secret": SECRET}],
        "retries": 1,
    }
    data.update(overrides)
    return GitHubConfig.model_validate(data)


TWO_APPS = [{"client_id": CID, "client_secret": SECRET}, {"client_id": CID2, "client_secret": SECRET2}]


class CompatResponse(ClientResponse):
    """aioresponses 0.7.9 builds responses without the `stream_writer` aiohttp 3.14 requires."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", Mock(output_size=0))
        super().__init__(method, url, **kwargs)


class Mocked(aioresponses):
    def add(self, url: Any, method: str = "GET", **kwargs: Any) -> None:  # type: ignore[override]
        kwargs.setdefault("response_class", CompatResponse)
        super().add(url, method, **kwargs)


class Answered:
    """GitHub's usable answers, as the client's `answered` hook reports them."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def sent(m: aioresponses) -> int:
    return sum(len(calls) for calls in m.requests.values())


def assert_secret_free(exc: BaseException, caplog: pytest.LogCaptureFixture | None = None) -> None:
    text = "".join(traceback.format_exception(exc)) + repr(getattr(exc, "details", None))
    text += caplog.text if caplog else ""
    assert TOKEN not in text
    assert SECRET not in text


class CraftedGitHub:
    """Answers every check-a-token call with `answer(token)` → (status, JSON body, or bytes for an
    HTML page); holds calls while `held` is set; counts calls and the most ever in flight at once."""

    def __init__(self, answer: Callable[[str], tuple[int, object]]) -> None:
        self.answer = answer
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.held: asyncio.Event | None = None
        self.url = ""
        self._arrived = asyncio.Condition()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/applications/{client_id}/token", self._check)
        return app

    async def wait_for_calls(self, count: int) -> None:
        """Until at least `count` calls have arrived."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: self.calls >= count)

    async def _check(self, request: web.Request) -> web.Response:
        token = str((await request.json()).get("access_token", ""))
        async with self._arrived:
            self.calls += 1
            self._arrived.notify_all()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.held is not None:
                await self.held.wait()
            status, body = self.answer(token)
            if isinstance(body, bytes):
                return web.Response(body=body, status=status, content_type="text/html")
            return web.json_response(body, status=status)
        finally:
            self.in_flight -= 1
