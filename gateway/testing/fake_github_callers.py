"""Who calls the fake GitHub's REST API, as GitHub tells: a user by their token (OAuth App `gho_` or
GitHub App `ghu_`), an installation by its `ghs_` token, or the GitHub App by its RS256 JWT (`iss` its
id or client id, `iat`/`exp` at most ten minutes apart, verified with PyJWT against the public key of
`set_app` and the fake's clock); GitHub's 401 and reason otherwise. And whose rate budget a call
spends, and GitHub's answer once it is spent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeGuard

import jwt
from aiohttp import web

from .fake_github_model import FakeToken, error
from .fake_github_orgs import Installation

if TYPE_CHECKING:
    from .fake_github import FakeGitHub

__all__ = ["Caller", "authenticate", "rate_key", "rate_limited", "wrong_kind"]

_JWT_LEEWAY = 60.0  # seconds of clock drift GitHub tolerates on `iat` and `exp`


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a REST call is made as: a user (their token's registry entry), an installation (its ghs_
    token) or the GitHub App (its JWT)."""

    kind: str  # user | installation | app
    token: str = field(repr=False)  # SECURITY: a secret, even in a fake: never in a test's failure output
    entry: FakeToken | None = None
    installation: Installation | None = None

    @property
    def oauth(self) -> bool:
        """An OAuth App token, limited by its scopes (a ghu_ token by the app's installations instead)."""
        return self.entry is not None and not self.token.startswith("ghu_")

    @property
    def user_id(self) -> int | None:
        return None if self.entry is None else self.entry.user_id


def authenticate(fake: FakeGitHub, request: web.Request, op: str) -> Caller | web.Response:
    """The caller named by the Authorization header, or GitHub's 401."""
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    credential = credential.strip()
    if scheme.lower() not in ("bearer", "token") or not credential:
        return error(401, "Requires authentication", op)
    if credential.count(".") == 2:
        problem = _jwt_problem(fake, credential)
        return error(401, problem, op) if problem else Caller("app", credential)
    if credential.startswith("ghs_"):
        installation = fake.installation_of(credential)
        if installation is None:
            return error(401, "Bad credentials", op)
        return Caller("installation", credential, installation=installation)
    entry = fake.lookup(credential)
    if entry is None or entry.revoked or (entry.expires_at is not None and entry.expires_at <= fake.now()):
        return error(401, "Bad credentials", op)
    return Caller("user", credential, entry=entry)


def _jwt_problem(fake: FakeGitHub, token: str) -> str | None:
    """Why GitHub refuses this app JWT, in its words; None when it is good."""
    app = fake.github_app
    if app is None:
        return "Integration not found"
    try:
        if jwt.get_unverified_header(token).get("alg") != "RS256":
            return "A JSON web token could not be decoded"
        # the signature is PyJWT's to check; the times are checked below against the fake's clock
        claims = jwt.decode(
            token,
            app.public_key_pem,
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.InvalidTokenError:
        return "A JSON web token could not be decoded"
    now, iat, exp = fake.now(), claims.get("iat"), claims.get("exp")
    if claims.get("iss") not in (app.id, str(app.id), app.client_id):
        return "Integration not found"
    if not _number(iat) or iat > now + _JWT_LEEWAY:
        return (
            "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
        )
    if not _number(exp) or exp <= now:
        return (
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which"
            " the assertion expires"
        )
    if exp - iat > 600 or exp > now + 600 + _JWT_LEEWAY:
        return "'Expiration time' claim ('exp') is too far in the future"
    return None


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def rate_key(caller: Caller, fake: FakeGitHub) -> tuple[str, str]:
    """Whose budget a call spends, and how GitHub names it in the exhausted message."""
    if caller.entry is not None:
        return f"user:{caller.entry.user_id}", f"user ID {caller.entry.user_id}"
    if caller.installation is not None:
        return f"installation:{caller.installation.id}", f"installation ID {caller.installation.id}"
    app_id = 0 if fake.github_app is None else fake.github_app.id
    return f"app:{app_id}", f"integration ID {app_id}"


def rate_limited(status: int, retry_after: int | None, who: str, op: str) -> web.Response:
    """GitHub's answer past an exhausted budget: the primary limit, or with `retry_after` a secondary one."""
    if retry_after is None:
        message = (
            f"API rate limit exceeded for {who}. If you reach out to GitHub Support for help, please"
            " include the request ID."
        )
        return error(status, message, "rate-limit")
    message = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
    answer = error(status, message, "rate-limit")
    answer.headers["Retry-After"] = str(retry_after)
    return answer


def wrong_kind(caller: Caller, kinds: tuple[str, ...], op: str) -> web.Response | None:
    """GitHub's refusal of a credential the endpoint does not take (`kinds`: those it takes)."""
    if caller.kind in kinds:
        return None
    if kinds == ("app",):
        return error(401, "A JSON web token could not be decoded", op)
    return error(403, "Resource not accessible by integration", op)
