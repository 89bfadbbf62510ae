"""GitHub's OAuth Apps API: the one client that talks to GitHub (README: How tokens are checked).

Every operation of the API, in both forms. `check_method: token` (github.com, any current GHES) sends the
token in a JSON body; `check_method: legacy` (old GHES) uses the deprecated path forms, which
github.com removed on 2021-05-05 and GHES in 3.4. Scoping has no path form: it always uses the body.

    method        token form (GitHub's operationId)        legacy form (GitHub's operationId)
    check         POST   …/token  (apps/check-token)        GET    …/tokens/{t}  (apps/check-authorization)
    reset         PATCH  …/token  (apps/reset-token)        POST   …/tokens/{t}  (apps/reset-authorization)
    delete        DELETE …/token  (apps/delete-token)       DELETE …/tokens/{t}
                                                            (apps/revoke-authorization-for-application)
    delete_grant  DELETE …/grant  (apps/delete-authorization)
                                                            DELETE …/grants/{t}
                                                            (apps/revoke-grant-for-application)
    scoped        POST   …/token/scoped (apps/scope-token)  none: the token form is used

Each method asks the configured apps in order (or the one `client_id` names); a 404 from one means
"not this app's token", so the next is asked, and None / False means no app knows the token. Scoping
is the exception: GitHub answers an unknown target with the same 404 as an unknown token, so after a
404 the app is asked to check the token; when it knows it, the target is what was not found
(TargetNotFound), and no other app is asked.

`check_method: legacy` on a GitHub without the path forms would make every token look invalid.
GitHub answers a path it does not serve with a 404 whose documentation_url is its docs' root, an
operation's 404 with the operation's page (`…#check-a-token`); so when a path form gets the former,
the token is checked once with the body form: valid there, the config is wrong, and the client says so
(CheckMethodUnsupported, logged at ERROR, `problem` for /readyz) and asks GitHub nothing more until the
config is reloaded. `verify` (`gateway check-config --online`) asks each app about a token nobody was
issued, which needs no real token: the app's endpoint answering 404 is the good answer.

Every operation goes through `GitHubClient._request`, which owns what GitHub calls have in common:
Basic auth with the app's credentials, GitHub's headers, a timeout per attempt, retries with jittered
exponential backoff, a cap on calls in flight, a breaker that fails fast while GitHub is backed off,
and the translation of aiohttp errors and GitHub statuses into the `GitHubError` tree:

    200, 204                   the operation's answer, validated strictly (off-schema: below)
    404 (GitHub's JSON)        not this app's token: the next app is asked (on a path form, GitHub's
                               404 for a path it does not serve: checked as above)
    401                        AppCredentialsRejected (logged at ERROR); no other app is asked
    422 on check               GitHubUnavailable ("validation failed, or the endpoint has been
                               spammed": a check sends nothing a caller chose), and GitHub is backed off
    422 on the others          GitHubValidationFailed with GitHub's validation-error in `details`, and
                               no backoff: the input was refused (a GitHub App token is needed, the
                               repository is not the target's …). SECURITY: backing off here would let
                               any caller of an upstream_token route switch off authentication for
                               everyone by sending a token that cannot be scoped. It counts as
                               GitHub answering (the `answered` hook).
    5xx, 429, rate-limit 403, timeouts, connection errors
                               GitHubUnavailable, and GitHub is backed off (1s, doubling, capped 30s)
    other 4xx, other 2xx, a 404 that is not GitHub's JSON, an answer off GitHub's schema
                               GitHubUnavailable (4xx: GitHub's message in `details`)

Retries (`retries`, on connection errors, timeouts and 5xx) only where repeating is safe: check,
delete and delete grant. Reset and scope change state and answer with a token that is shown once: an
attempt that may have reached GitHub is never repeated (the first may have reset the token, and its
answer would be lost), only one that failed to connect. A delete repeated after an attempt whose
answer was lost may find the token already gone: False, though it is revoked all the same.

No token, old or new, ever appears in an exception, a log line or a repr; answers (which echo the
token back) are parsed into values and dropped (`answers`).

Longer than most modules here, on purpose: the one choke point every GitHub call goes through, and
the small pure functions it alone uses (its table above is their specification), read best together.
"""

from __future__ import annotations

import asyncio
import functools
import json as jsonlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar
from urllib.parse import quote

import aiohttp
from yarl import URL

from .. import __version__
from ..backoff import Backoff
from ..config import GitHubApp, GitHubConfig, UpstreamTokenConfig
from ..errors import (
    AppCredentialsRejected,
    CheckMethodUnsupported,
    GitHubError,
    GitHubUnavailable,
    GitHubValidationFailed,
    TargetNotFound,
)
from ..identity import Identity
from .answers import Answer, IssuedToken, Reply, checked, deleted, issued

__all__ = ["API_VERSION", "MEDIA_TYPE", "USER_AGENT", "GitHubClient", "IssuedToken", "Observer"]

log = logging.getLogger("gateway.github")

API_VERSION: Final = "2022-11-28"
MEDIA_TYPE: Final = "application/vnd.github+json"
MAX_ANSWER_BYTES: Final = 1 << 20  # GitHub's answers here are a few KiB
WAITING_PER_SLOT: Final = 32  # calls that may queue for GitHub per max_concurrent_checks slot
NEVER_ISSUED: Final = "gho_" + "0" * 36  # a well-formed token no app issued: what `verify` asks about


USER_AGENT: Final = f"gateway/{__version__}"

Observer = Callable[[str, int | None, float], None]
"""Told of every attempt: operation (GitHub's operationId), status (None: no answer), seconds."""

_RETRY_BASE, _RETRY_CAP = 0.1, 1.0
_RETRYABLE = (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Op:
    """One operation: GitHub's operationId, method and path below /applications/{client_id}."""

    id: str
    method: str
    path: str  # "{token}" in it: the deprecated path form, else the token goes in the JSON body
    repeatable: bool = True  # may be sent again after an attempt that may have reached GitHub
    spam: bool = False  # a 422 means "spammed" (back off), not "your input was refused"


_CHECK = _Op("apps/check-token", "POST", "/token", spam=True)
_CHECK_LEGACY = _Op("apps/check-authorization", "GET", "/tokens/{token}", spam=True)
_RESET = _Op("apps/reset-token", "PATCH", "/token", repeatable=False)
_RESET_LEGACY = _Op("apps/reset-authorization", "POST", "/tokens/{token}", repeatable=False)
_DELETE = _Op("apps/delete-token", "DELETE", "/token")
_DELETE_LEGACY = _Op("apps/revoke-authorization-for-application", "DELETE", "/tokens/{token}")
_GRANT = _Op("apps/delete-authorization", "DELETE", "/grant")
_GRANT_LEGACY = _Op("apps/revoke-grant-for-application", "DELETE", "/grants/{token}")
_SCOPE_TOKEN = _Op("apps/scope-token", "POST", "/token/scoped", repeatable=False)


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
        answered: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._session = session
        self._clock = clock
        self._sleep = sleep
        self._observer = observer  # every call: its endpoint, status and duration
        self._on_answered = answered  # every usable answer (a 404 and a refused 422 included)
        self._base = URL(config.api_url)
        self._headers = {"Accept": MEDIA_TYPE, "User-Agent": user_agent, "X-GitHub-Api-Version": API_VERSION}
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._slots = asyncio.Semaphore(config.max_concurrent_checks)
        self._waiting = 0
        self._max_waiting = config.max_concurrent_checks * WAITING_PER_SLOT
        self._breaker = Backoff(clock)
        self._rejected = False  # the last answer was a 401 for an app's credentials
        self._legacy = config.check_method == "legacy"
        self._check_op = _CHECK_LEGACY if self._legacy else _CHECK
        self._unsupported: str | None = None  # why check_method cannot work with this GitHub

    def __repr__(self) -> str:
        apps = ", ".join(app.client_id for app in self._config.apps)
        return f"<GitHubClient {self._config.api_url} apps=[{apps}]>"

    @property
    def problem(self) -> str | None:
        """Why GitHub cannot be used now (the config does not fit it, it rejected an app's credentials,
        it is backed off after failures), or None (readiness, from what is already known)."""
        if self._unsupported is not None:
            return self._unsupported
        if self._rejected:
            return "GitHub rejected an app's credentials (401): check its client_id and client_secret"
        if (left := self._breaker.remaining()) > 0:
            return f"GitHub is backed off after failing; next try in {math.ceil(left)}s"
        return None

    @property
    def usable(self) -> bool:
        """No `problem`: True before the first call too."""
        return self.problem is None

    def retry_after(self) -> int:
        """Whole seconds a caller should wait before GitHub is asked again (at least 1)."""
        return max(1, math.ceil(self._breaker.remaining()))

    async def check(self, token: str) -> Identity | None:
        """Whose token this is, asking each configured app in turn; None when none knows it."""
        return await self._each_app(self._check_op, token, None, checked)

    async def reset(self, token: str, *, client_id: str | None = None) -> IssuedToken | None:
        """Replace a token with a new one (the old one stops working at once); None: no app knows it."""
        op = _RESET_LEGACY if self._legacy else _RESET
        return await self._each_app(op, token, client_id, issued(scoped=False))

    async def delete(self, token: str, *, client_id: str | None = None) -> bool:
        """Revoke one token; False when no app knows it."""
        op = _DELETE_LEGACY if self._legacy else _DELETE
        return await self._each_app(op, token, client_id, deleted) is not None

    async def delete_grant(self, token: str, *, client_id: str | None = None) -> bool:
        """Revoke the grant of the token's user for the app: every token of theirs for it; False when
        no app knows the token."""
        op = _GRANT_LEGACY if self._legacy else _GRANT
        return await self._each_app(op, token, client_id, deleted) is not None

    async def scoped(
        self, token: str, spec: UpstreamTokenConfig, *, client_id: str | None = None
    ) -> IssuedToken | None:
        """Mint a token limited to `spec` from a GitHub App user token (body form, whatever
        `check_method`: the deprecated API has none). None: no app knows the token; TargetNotFound:
        its app knows it, not the target. A token that cannot be scoped: GitHubValidationFailed."""
        fields: dict[str, object] = {
            "target": spec.target,
            "target_id": spec.target_id,
            "repositories": list(spec.repositories),
            "repository_ids": list(spec.repository_ids),
            "permissions": dict(spec.permissions),
        }
        requested = spec.repositories or tuple(str(i) for i in spec.repository_ids)
        extra = {k: v for k, v in fields.items() if v is not None and v != [] and v != {}}
        parse = issued(requested, scoped=True)
        for app in self._apps(client_id):
            minted = await self._each_app(_SCOPE_TOKEN, token, app.client_id, parse, extra)
            if minted is not None:
                return minted
            # the same 404 for an unknown token as for an unknown target: the app that knows the token
            # tells them apart, and then no other app is asked about it
            if await self._each_app(self._check_op, token, app.client_id, checked) is not None:
                target = f"target {spec.target!r}" if spec.target else f"target_id {spec.target_id}"
                raise TargetNotFound(
                    f"GitHub found no {target} to scope the token to (404): no such organization or"
                    f" user, or app {app.client_id} is not installed on it"
                )
        return None

    async def verify(self) -> dict[str, str | None]:
        """Ask GitHub once per app whether its credentials and `check_method` work, with a token no
        app issued (its endpoint's 404 is the good answer): each app's problem, or None."""
        found: dict[str, str | None] = {}
        for app in self._config.apps:
            try:
                known = await self._call(app, self._check_op, NEVER_ISSUED, checked)
                found[app.client_id] = None if known is None else "GitHub said a token nobody has is valid"
            except _NotServed:
                found[app.client_id] = self._unsupported_reason()
            except GitHubError as exc:
                found[app.client_id] = str(exc)
        return found

    # -----------------------------------------------------------------------------------------------
    # What every operation shares

    def _apps(self, client_id: str | None) -> tuple[GitHubApp, ...]:
        if client_id is None:
            return self._config.apps
        apps = tuple(app for app in self._config.apps if app.client_id == client_id)
        if not apps:
            known = ", ".join(app.client_id for app in self._config.apps)
            raise ValueError(f"{client_id!r} is not a configured app; expected one of: {known}")
        return apps

    async def _each_app(
        self,
        op: _Op,
        token: str,
        client_id: str | None,
        parse: Callable[[str, Answer], T | None],
        extra: Mapping[str, object] | None = None,
    ) -> T | None:
        """Ask each app (or the one named) in turn; the first answer that is not a 404 settles it."""
        for app in self._apps(client_id):
            try:
                result = await self._call(app, op, token, parse, extra)
            except _NotServed:
                await self._path_forms_served(app, token)
                continue
            if result is not None:
                return result
        return None

    async def _call(
        self,
        app: GitHubApp,
        op: _Op,
        token: str,
        parse: Callable[[str, Answer], T | None],
        extra: Mapping[str, object] | None = None,
    ) -> T | None:
        """One operation for one app: the token in the path (path forms) or in the JSON body."""
        prefix = f"/applications/{quote(app.client_id, safe='')}"
        if "{token}" in op.path:
            path, body = prefix + op.path.format(token=quote(token, safe="")), None
        else:
            path, body = prefix + op.path, {"access_token": token, **(extra or {})}
        return await self._request(
            app, op, path, json=body, secret=token, parse=functools.partial(parse, app.client_id)
        )

    async def _path_forms_served(self, app: GitHubApp, token: str) -> None:
        """After GitHub's 404 for a path it does not serve on a path form: the token checked once with
        the body form. Valid there, `check_method: legacy` cannot work: CheckMethodUnsupported, from
        now on. Unknown there too, it is not this app's token, whatever the path forms."""
        if await self._call(app, _CHECK, token, checked) is None:
            return
        self._unsupported = self._unsupported_reason()
        log.error("config: %s", self._unsupported)
        raise CheckMethodUnsupported(self._unsupported)

    def _unsupported_reason(self) -> str:
        return (
            f"check_method: legacy, but GitHub at {self._config.api_url} does not serve the deprecated"
            " path forms (…/tokens/{access_token}; gone from github.com since 2021-05-05 and from GHES"
            " since 3.4): set check_method: token"
        )

    async def _request(
        self,
        app: GitHubApp,
        op: _Op,
        path: str,
        *,
        parse: Callable[[Answer], T],
        json: Mapping[str, object] | None = None,
        secret: str = "",
    ) -> T:
        """One operation: attempts with retries, then GitHub's status mapped to a value or an error."""
        url = self._base.with_path(self._base.raw_path.rstrip("/") + path, encoded=True)
        tries = self._config.retries + 1
        for attempt in range(1, tries + 1):
            try:
                status, hint, raw = await self._attempt(app, op, url, json)
            except _RETRYABLE as exc:
                # an attempt that never connected never reached GitHub: repeating it is always safe
                if attempt < tries and (op.repeatable or isinstance(exc, aiohttp.ClientConnectorError)):
                    await self._sleep(_delay(attempt))
                    continue
                raise self._no_answer(exc, secret) from _safe_cause(exc, secret)
            except aiohttp.ClientError as exc:
                raise _unreachable(exc, self._config.timeout, secret) from _safe_cause(exc, secret)
            except _TooLarge as exc:  # not GitHub's answer (a captive portal, a misrouted api_url?)
                self._backoff(None, str(exc))
                raise
            if status >= 500 and attempt < tries and op.repeatable:
                await self._sleep(_delay(attempt))
                continue
            return self._settle(app, op, status, hint, raw, parse, secret)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(
        self, app: GitHubApp, op: _Op, url: URL, json: Mapping[str, object] | None
    ) -> tuple[int, float | None, bytes]:
        """One HTTP exchange of an OAuth Apps operation: status, Retry-After hint, body."""
        status, headers, raw = await self._exchange(op.id, op.method, url, json, _basic(app))
        return status, _retry_after_hint(headers), raw

    async def _exchange(
        self, op_id: str, method: str, url: URL, json: Mapping[str, object] | None, authorization: str
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One HTTP exchange under the concurrency cap: status, headers, body."""
        self._fail_fast()
        await self._take_slot()
        try:
            self._fail_fast()  # GitHub may have been backed off while this call waited for a slot
            started = self._clock()
            status: int | None = None
            try:
                async with self._session.request(
                    method,
                    url,
                    json=json,
                    # aiohttp would label an empty POST application/octet-stream: no body, no type
                    skip_auto_headers=() if json is not None else ("Content-Type",),
                    headers={**self._headers, "Authorization": authorization},
                    timeout=self._timeout,
                    allow_redirects=False,
                ) as resp:
                    status = resp.status
                    return status, resp.headers.copy(), await _read(resp)
            finally:
                if self._observer is not None:
                    self._observer(op_id, status, self._clock() - started)
        finally:
            self._slots.release()

    async def fetch(self, op_id: str, path: str, *, credential: str, method: str = "GET") -> Reply:
        """Call a REST resource (`path` below `api_url`, already quoted) with a credential: a caller's
        token or an installation token (`token …`), or the GitHub App's JWT (`Bearer …`); under the
        same cap, timeout and breaker as every call. What GitHub answered, for the caller to judge.

        Raises GitHubUnavailable when GitHub gives no answer or a 5xx (and backs off from GitHub then).
        """
        url = self._base.with_path(self._base.raw_path.rstrip("/") + path, encoded=True)
        secret = credential.partition(" ")[2]
        try:
            status, headers, raw = await self._exchange(op_id, method, url, None, credential)
        except (*_RETRYABLE, aiohttp.ClientError) as exc:
            raise self._no_answer(exc, secret) from _safe_cause(exc, secret)
        except _TooLarge as exc:
            self._backoff(None, str(exc))
            raise
        if status >= 500:
            self._backoff(None, f"GitHub answered {status} to {op_id}")
            raise GitHubUnavailable(f"GitHub answered {status} to {op_id}", status=status)
        body = _json(raw, status) if raw else None
        self._answered()
        return Reply(status, headers, body)

    async def _take_slot(self) -> None:
        """Wait for one of the `max_concurrent_checks` slots; refuse outright when the queue is full."""
        # SECURITY: a flood of distinct junk tokens queues here, bounded, instead of growing memory
        if self._slots.locked() and self._waiting >= self._max_waiting:
            raise GitHubUnavailable("too many calls to GitHub are already waiting")
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1

    def _settle(
        self,
        app: GitHubApp,
        op: _Op,
        status: int,
        hint: float | None,
        raw: bytes,
        parse: Callable[[Answer], T],
        secret: str,
    ) -> T:
        """GitHub's final answer to one operation: the parsed value, or the error it means."""
        if 200 <= status < 300 or status == 404:
            body = _json(raw, status) if raw else None
            if status == 404 and not isinstance(body, dict):  # a 404 page, not GitHub's: wrong api_url?
                raise GitHubUnavailable("GitHub's 404 answer was not GitHub's JSON error", status=404)
            if status == 404 and "{token}" in op.path and _not_served(body):
                self._answered()
                raise _NotServed(op.id)
            value = parse(Answer(status, body))
            self._answered()
            return value
        if status == 401:
            self._rejected = True
            log.error(
                "GitHub rejected the credentials of app %s (401): check its client_id and client_secret",
                app.client_id,
            )
            raise AppCredentialsRejected(f"GitHub rejected the credentials of app {app.client_id} (401)")
        details = _error_details(raw, secret)
        if status == 422 and not op.spam:
            self._answered()  # GitHub is up and judged the input: nothing to back off from
            raise GitHubValidationFailed(_refused(op.id, details), status=422, details=details)
        if status == 422:
            message = "GitHub answered 422: validation failed, or the endpoint has been spammed"
            error = GitHubUnavailable(message, status=422, details=details)
        else:
            error = GitHubUnavailable(f"GitHub answered {status} to {op.id}", status=status, details=details)
        if status == 422 or status >= 500 or status == 429 or (status == 403 and hint is not None):
            self._backoff(hint, str(error))
        raise error

    def _answered(self) -> None:
        self._rejected = False
        self._breaker.succeeded()
        if self._on_answered is not None:
            self._on_answered()

    def _fail_fast(self) -> None:
        if self._unsupported is not None:
            raise CheckMethodUnsupported(self._unsupported)
        if (left := self._breaker.remaining()) > 0:
            raise GitHubUnavailable(f"GitHub is backed off after failing; next try in {math.ceil(left)}s")

    def _no_answer(self, exc: BaseException, secret: str) -> GitHubUnavailable:
        """Back off from a GitHub that gave no answer; the error that says so (never quoting `secret`)."""
        self._backoff(None, f"GitHub gave no answer ({type(exc).__name__})")
        return _unreachable(exc, self._config.timeout, secret)

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


class _TooLarge(GitHubUnavailable):
    """An answer over MAX_ANSWER_BYTES: an outage like any other, backed off from."""


class _NotServed(Exception):
    """GitHub's 404 for a path it does not serve, on a path form: for `_each_app` to look into."""


def _not_served(body: object) -> bool:
    """A 404 body that points at GitHub's docs as a whole, not at an operation's page: the 404 GitHub
    gives a path it does not serve (`https://docs.github.com/rest`), not the operation's own."""
    url = body.get("documentation_url") if isinstance(body, dict) else None
    return isinstance(url, str) and "#" not in url


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in resp.content.iter_any():
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise _TooLarge(
                f"GitHub's answer ({resp.status}) was over {MAX_ANSWER_BYTES} bytes", status=resp.status
            )
    return bytes(body)


def _retry_after_hint(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After", "")
    if value.isdigit():
        return float(value)
    return 0.0 if headers.get("X-RateLimit-Remaining") == "0" else None


def _json(raw: bytes, status: int) -> object:
    try:
        return jsonlib.loads(raw)
    except ValueError:
        # SECURITY: not chained: a JSONDecodeError keeps the whole document, which may hold a token
        raise GitHubUnavailable(f"GitHub's {status} answer was not JSON", status=status) from None


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


def _error_details(raw: bytes, secret: str) -> dict[str, object] | None:
    """GitHub's error body (basic-error or validation-error): message, documentation_url and errors[]
    (never a field's value, which may be the token)."""
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


def _refused(op_id: str, details: Mapping[str, object] | None) -> str:
    """The message of a GitHubValidationFailed: GitHub's reasons, from the already redacted details."""
    details = details or {}
    reasons = [str(details.get("message") or "Validation Failed")]
    items = details.get("errors")
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict):
            keys = ("resource", "field", "code", "message")
            reasons.append(" ".join(str(item[k]) for k in keys if k in item))
        else:
            reasons.append(str(item))
    return f"GitHub refused {op_id} (422): {'; '.join(r for r in reasons if r)}"
