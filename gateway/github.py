"""GitHub's OAuth Apps API: the one client that talks to GitHub (DESIGN §3, §9).

Every operation goes through `GitHubClient._request`, which owns what GitHub calls have in common:
Basic auth with the app's credentials, GitHub's headers, a timeout per attempt, retries (connection
errors, timeouts and 5xx only) with jittered exponential backoff, a cap on calls in flight, a breaker
that fails fast while GitHub is backed off, and the translation of aiohttp errors and GitHub statuses
into the `GitHubError` tree. An operation only says what a 2xx or a 404 means.

    2xx, 404                   the operation's parser decides (check: identity / next app)
    401                        AppCredentialsRejected (logged at ERROR)
    422, 5xx, 429, rate-limit 403, timeouts, connection errors
                               GitHubUnavailable, and GitHub is backed off (1s, doubling, capped 30s)
    other 4xx, off-schema      GitHubUnavailable

No token ever appears in an exception, a log line or a repr; answers (which echo the token back)
are parsed into values and dropped.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeVar
from urllib.parse import quote

import aiohttp
from yarl import URL

from . import __version__
from .config import GitHubApp, GitHubConfig
from .errors import AppCredentialsRejected, GitHubUnavailable
from .identity import Identity

__all__ = ["API_VERSION", "MEDIA_TYPE", "USER_AGENT", "GitHubClient", "Observer"]

log = logging.getLogger("gateway.github")

API_VERSION: Final = "2022-11-28"
MEDIA_TYPE: Final = "application/vnd.github+json"
MAX_ANSWER_BYTES: Final = 1 << 20  # GitHub's answers here are a few KiB


USER_AGENT: Final = f"gateway/{__version__}"

Observer = Callable[[str, int | None, float], None]
"""Told of every attempt: operation (GitHub's operationId), status (None: no answer), seconds."""

_RETRY_BASE, _RETRY_CAP = 0.1, 1.0
_BACKOFF_START, _BACKOFF_CAP = 1.0, 30.0
_LOGIN = re.compile(r"[A-Za-z0-9._-]{1,100}")
_SCOPE = re.compile(r"[a-z0-9:_.-]{1,100}")
_MAX_ID = 2**63 - 1
_RETRYABLE = (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Answer:
    """What GitHub said: a status and its JSON body (None when empty). Short-lived: never stored."""

    status: int
    body: object


class _Breaker:
    """Fail fast while GitHub is backed off: a window from 1s, doubling per failure, capped at 30s."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._failures = 0
        self._until = 0.0

    def remaining(self) -> float:
        return max(0.0, self._until - self._clock()) if self._failures else 0.0

    def failed(self, hint: float | None) -> float:
        now = self._clock()
        if now >= self._until:  # calls that fail inside an open window are the same failure
            self._failures = min(self._failures + 1, 16)
            window = min(_BACKOFF_CAP, _BACKOFF_START * 2.0 ** (self._failures - 1))
            self._until = now + max(window, min(hint or 0.0, _BACKOFF_CAP))
        return self._until - now

    def succeeded(self) -> None:
        self._failures, self._until = 0, 0.0


class GitHubClient:
    """The OAuth Apps API of github.com or a GHES, on behalf of the apps of one `GitHubConfig`."""

    def __init__(
        self,
        config: GitHubConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.monotonic,
        user_agent: str = USER_AGENT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        observer: Observer | None = None,
    ) -> None:
        self._config = config
        self._session = session
        self._clock = clock
        self._sleep = sleep
        self._observer = observer
        self._base = URL(config.api_url)
        self._headers = {"Accept": MEDIA_TYPE, "User-Agent": user_agent, "X-GitHub-Api-Version": API_VERSION}
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._slots = asyncio.Semaphore(config.max_concurrent_checks)
        self._breaker = _Breaker(clock)
        self._last_success: float | None = None

    def __repr__(self) -> str:
        apps = ", ".join(app.client_id for app in self._config.apps)
        return f"<GitHubClient {self._config.api_url} apps=[{apps}]>"

    @property
    def last_success(self) -> float | None:
        """Clock time of GitHub's last usable answer (a 404 counts), None before the first."""
        return self._last_success

    def retry_after(self) -> int:
        """Whole seconds a caller should wait before GitHub is asked again (at least 1)."""
        return max(1, math.ceil(self._breaker.remaining()))

    async def check(self, token: str) -> Identity | None:
        """Whose token this is, asking each configured app in turn; None when none knows it."""
        for app in self._config.apps:
            cid = quote(app.client_id, safe="")
            if self._config.check_method == "legacy":
                path, method, body = f"/applications/{cid}/tokens/{quote(token, safe='')}", "GET", None
                op = "check-authorization"
            else:
                path, method, body = f"/applications/{cid}/token", "POST", {"access_token": token}
                op = "check-token"
            identity = await self._request(
                app, method, path, op=op, json=body, secret=token, parse=_identity_of(app.client_id)
            )
            if identity is not None:
                return identity
        return None

    # -----------------------------------------------------------------------------------------------
    # What every operation shares

    async def _request(
        self,
        app: GitHubApp,
        method: str,
        path: str,
        *,
        op: str,
        parse: Callable[[_Answer], T],
        json: Mapping[str, object] | None = None,
        secret: str = "",
    ) -> T:
        """One operation: attempts with retries, then GitHub's status mapped to a value or an error."""
        url = self._base.with_path(self._base.raw_path.rstrip("/") + path, encoded=True)
        tries = self._config.retries + 1
        for attempt in range(1, tries + 1):
            try:
                status, hint, raw = await self._attempt(app, method, url, op, json)
            except _RETRYABLE as exc:
                if attempt < tries:
                    await self._sleep(_delay(attempt))
                    continue
                self._backoff(None, f"GitHub gave no answer ({type(exc).__name__})")
                raise _unreachable(exc, self._config.timeout, secret) from _safe_cause(exc, secret)
            except aiohttp.ClientError as exc:
                raise _unreachable(exc, self._config.timeout, secret) from _safe_cause(exc, secret)
            if status >= 500 and attempt < tries:
                await self._sleep(_delay(attempt))
                continue
            return self._settle(app, status, hint, raw, parse, secret)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(
        self, app: GitHubApp, method: str, url: URL, op: str, json: Mapping[str, object] | None
    ) -> tuple[int, float | None, bytes]:
        """One HTTP exchange under the concurrency cap: status, Retry-After hint, body."""
        self._fail_fast()
        async with self._slots:
            self._fail_fast()  # GitHub may have been backed off while this call waited for a slot
            started = self._clock()
            status: int | None = None
            try:
                async with self._session.request(
                    method,
                    url,
                    json=json,
                    headers={**self._headers, "Authorization": _basic(app)},
                    timeout=self._timeout,
                    allow_redirects=False,
                ) as resp:
                    status = resp.status
                    raw = await _read(resp)
                    return status, _retry_after_hint(resp.headers), raw
            finally:
                if self._observer is not None:
                    self._observer(op, status, self._clock() - started)

    def _settle(
        self,
        app: GitHubApp,
        status: int,
        hint: float | None,
        raw: bytes,
        parse: Callable[[_Answer], T],
        secret: str,
    ) -> T:
        """GitHub's final answer to one operation: the parsed value, or the error it means."""
        if 200 <= status < 300 or status == 404:
            body = _json(raw, status) if raw else None
            if status == 404 and not isinstance(body, dict):  # a 404 page, not GitHub's: wrong api_url?
                raise GitHubUnavailable("GitHub's 404 answer was not GitHub's JSON error", status=404)
            value = parse(_Answer(status, body))
            self._last_success = self._clock()
            self._breaker.succeeded()
            return value
        if status == 401:
            log.error(
                "GitHub rejected the credentials of app %s (401): check its client_id and client_secret",
                app.client_id,
            )
            raise AppCredentialsRejected(f"GitHub rejected the credentials of app {app.client_id} (401)")
        if status == 422:
            error = GitHubUnavailable(
                "GitHub answered 422: validation failed, or the endpoint has been spammed",
                status=422,
                details=_validation_details(raw, secret),
            )
        else:
            error = GitHubUnavailable(f"GitHub answered {status}", status=status)
        if status == 422 or status >= 500 or status == 429 or (status == 403 and hint is not None):
            self._backoff(hint, str(error))
        raise error

    def _fail_fast(self) -> None:
        if (left := self._breaker.remaining()) > 0:
            raise GitHubUnavailable(f"GitHub is backed off after failing; next try in {math.ceil(left)}s")

    def _backoff(self, hint: float | None, reason: str) -> None:
        window = self._breaker.failed(hint)
        log.warning("%s; backing off from GitHub for %.0fs", reason, window)


# ---------------------------------------------------------------------------------------------------
# Helpers: pure functions


def _basic(app: GitHubApp) -> str:
    """HTTP Basic credentials of an app: built per request, never kept (secrets stay in SecretStr)."""
    return aiohttp.encode_basic_auth(app.client_id, app.client_secret.get_secret_value())


def _delay(attempt: int) -> float:
    """Jittered exponential backoff between attempts: around 0.1s, 0.2s, 0.4s ... capped at 1s."""
    ceiling = min(_RETRY_CAP, _RETRY_BASE * 2.0 ** (attempt - 1))
    return ceiling * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in resp.content.iter_any():
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise GitHubUnavailable("GitHub's answer was too large", status=resp.status)
    return bytes(body)


def _retry_after_hint(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After", "")
    if value.isdigit():
        return float(value)
    return 0.0 if headers.get("X-RateLimit-Remaining") == "0" else None


def _json(raw: bytes, status: int) -> object:
    try:
        return jsonlib.loads(raw)
    except ValueError as exc:
        raise GitHubUnavailable(f"GitHub's {status} answer was not JSON", status=status) from exc


def _redact(text: str, secret: str) -> str:
    for form in {secret, quote(secret, safe="")} if secret else ():
        text = text.replace(form, "[token]")
    return text


def _safe_cause(exc: BaseException, secret: str) -> BaseException | None:
    """`exc` to chain, or None when its chain mentions the token (aiohttp puts URLs in messages)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if _redact(f"{cur!s} {cur!r}", secret) != f"{cur!s} {cur!r}":
            return None
        cur = cur.__cause__ or cur.__context__
    return exc


def _unreachable(exc: BaseException, timeout: float, secret: str) -> GitHubUnavailable:
    if isinstance(exc, TimeoutError):
        return GitHubUnavailable(f"GitHub did not answer within {timeout:g}s")
    return GitHubUnavailable(f"cannot reach GitHub: {_redact(str(exc), secret) or type(exc).__name__}")


def _validation_details(raw: bytes, secret: str) -> dict[str, object] | None:
    """GitHub's validation-error body, keeping message and errors[] (never a field's value)."""
    try:
        body = jsonlib.loads(raw)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    details: dict[str, object] = {}
    for key in ("message", "documentation_url"):
        if isinstance(body.get(key), str):
            details[key] = _redact(body[key], secret)
    errors: list[object] = []
    items = body.get("errors")
    for item in items if isinstance(items, list) else ():
        if isinstance(item, str):
            errors.append(_redact(item, secret))
        elif isinstance(item, dict):
            errors.append(
                {
                    k: _redact(v, secret) if isinstance(v, str) else v
                    for k, v in item.items()
                    if k in ("resource", "field", "code", "message", "index") and isinstance(v, str | int)
                }
            )
    if errors:
        details["errors"] = errors
    return details


def _off_schema(what: str) -> GitHubUnavailable:
    return GitHubUnavailable(f"GitHub's answer did not fit its schema: {what}", status=200)


def _timestamp(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise _off_schema("expires_at is not an ISO-8601 time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _off_schema("expires_at is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise _off_schema("expires_at has no time zone")
    return moment.timestamp()


def _identity_of(client_id: str) -> Callable[[_Answer], Identity | None]:
    """The parser of a check answer: None for 404, else the identity in a strictly valid answer."""

    def parse(answer: _Answer) -> Identity | None:
        if answer.status == 404:
            return None
        body = answer.body
        if answer.status != 200 or not isinstance(body, dict):
            raise _off_schema(f"a {answer.status} answer without an authorization object")
        user = body.get("user")
        if not isinstance(user, dict):
            raise _off_schema("user is not an object")
        login = user.get("login")
        if not isinstance(login, str) or not _LOGIN.fullmatch(login):
            raise _off_schema("user.login is not a GitHub login")
        user_id = user.get("id")
        if type(user_id) is not int or not 0 < user_id <= _MAX_ID:
            raise _off_schema("user.id is not a positive integer")
        if "scopes" not in body:
            raise _off_schema("scopes is missing")
        scopes = [] if body["scopes"] is None else body["scopes"]
        if not isinstance(scopes, list) or not all(
            isinstance(s, str) and _SCOPE.fullmatch(s) for s in scopes
        ):
            raise _off_schema("scopes is not a list of scope names")
        return Identity(
            login=login,
            user_id=user_id,
            scopes=tuple(scopes),
            expires_at=_timestamp(body.get("expires_at")),
            client_id=client_id,
        )

    return parse
