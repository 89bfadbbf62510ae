"""The gateway's one exception tree.

    GatewayError
    ├── ConfigError                 a config file that cannot be used (every problem at once)
    ├── GitHubError                 GitHub gave no usable answer
    │   ├── GitHubUnavailable       timeout, connection error, 5xx, 422, an answer off GitHub's schema
    │   │   └── GitHubValidationFailed  422 on reset, delete, delete grant or scope: the input refused
    │   ├── GitHubMisconfigured     the config does not work with this GitHub (check-config --online)
    │   │   ├── AppCredentialsRejected  401: the app's client_id/client_secret are wrong
    │   │   └── CheckMethodUnsupported  check_method: legacy, and GitHub has no deprecated path forms
    │   ├── TargetNotFound          scope: the app knows the token, GitHub knows no such target
    │   └── GrantRefused            sign-in: GitHub refused a grant (its `error` code: bad_refresh_token …)
    └── Refusal                     a request the gateway answers itself
        ├── Redirect                302, a browser sent to sign in (DESIGN §12)
        ├── Unauthenticated         401, no credentials
        ├── InvalidToken            401, malformed, invalid, expired or revoked token
        ├── InsufficientScope       403 with the missing scopes
        ├── Forbidden               403, user or method not allowed, not a member
        ├── SSORequired             403, a member whose token is not authorized for the org's SSO
        ├── BadRequest              400
        ├── NoRoute                 404
        ├── MethodNotAllowed        405, on the gateway's own endpoints
        ├── RequestTimeout          408, a request body that stalled past body_timeout
        ├── PayloadTooLarge         413
        ├── HeadersTooLarge         431, a request line and headers over max_header_size
        ├── TooManyRequests         429
        ├── ServiceUnavailable      503
        ├── BadGateway              502
        ├── GatewayTimeout          504
        └── InternalError           500, a bug of the gateway's own

Foreign errors (aiohttp, pydantic, yaml) are translated at the boundary that meets them, with
``raise … from exc``. A Refusal carries everything its response needs; `gateway.responses` is the one
place that turns it into HTTP. No message here ever contains a token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

REALM = 'Bearer realm="gateway"'


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """A config file that cannot be used; `problems` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class GitHubError(GatewayError):
    """GitHub gave no usable answer."""


class GitHubUnavailable(GitHubError):
    """Timeout, connection error, 5xx, 422 or an answer that does not fit GitHub's schema."""

    def __init__(self, message: str, *, status: int | None = None, details: object = None) -> None:
        self.status = status
        self.details = details
        super().__init__(message)


class GitHubValidationFailed(GitHubUnavailable):
    """GitHub answered 422 to reset, delete, delete grant or scope: it refused the request's input.

    `details` holds GitHub's validation-error body (message, documentation_url, errors[] without any
    field's value), so the reason is surfaced; it never holds a token.
    """


class GitHubMisconfigured(GitHubError):
    """The config does not work with this GitHub: an operator's to fix, not a caller's."""


class AppCredentialsRejected(GitHubMisconfigured):
    """GitHub answered 401: the configured client_id/client_secret are wrong."""


class CheckMethodUnsupported(GitHubMisconfigured):
    """`check_method: legacy`, and GitHub does not serve the deprecated path forms (github.com since
    2021-05-05, GHES since 3.4): every token would look invalid."""


class TargetNotFound(GitHubError):
    """GitHub answered a scope request with 404 for a token the app knows: there is no such target
    (organization or user), or the app is not installed on it."""


class GrantRefused(GitHubError):
    """GitHub refused a grant; `code` is its error code, `description` its words (never a token)."""

    def __init__(self, code: str, description: str = "") -> None:
        self.code = code
        self.description = description
        super().__init__(f"GitHub refused the grant: {code}" + (f" ({description})" if description else ""))


class Refusal(GatewayError):
    """A request the gateway answers itself, with its status and JSON body (README: What callers get
    back); with `close`, the connection is closed after the answer (nothing after the request on it can
    be trusted)."""

    status = 500
    code = "internal_error"

    def __init__(
        self, message: str, *, headers: Mapping[str, str] | None = None, close: bool = False
    ) -> None:
        self.message = message
        self.headers = dict(headers or {})
        self.close = close
        super().__init__(message)


class Redirect(Refusal):
    """302 to `location`: a browser without credentials sent to sign in."""

    status, code = 302, "sign_in"

    def __init__(self, location: str, message: str) -> None:
        super().__init__(message, headers={"Location": location, "Cache-Control": "no-store"})


class Unauthenticated(Refusal):
    status, code = 401, "unauthenticated"

    def __init__(
        self, message: str = "this route requires a GitHub token", *, link: str | None = None
    ) -> None:
        super().__init__(message, headers=_challenge(REALM, link))


class InvalidToken(Refusal):
    status, code = 401, "invalid_token"

    def __init__(
        self, message: str = "the token is malformed, invalid, expired or revoked", *, link: str | None = None
    ) -> None:
        super().__init__(message, headers=_challenge(REALM + ', error="invalid_token"', link))


def _challenge(challenge: str, link: str | None) -> dict[str, str]:
    """A 401's headers: its challenge, and where to learn how to sign in (`Link: <…>; rel="help"`)."""
    return {"WWW-Authenticate": challenge, **({"Link": link} if link else {})}


class InsufficientScope(Refusal):
    status, code = 403, "insufficient_scope"

    def __init__(self, missing: Sequence[str]) -> None:
        scope = " ".join(missing)
        super().__init__(
            f"the token lacks the scopes this route requires: {', '.join(missing)}",
            headers={"WWW-Authenticate": REALM + f', error="insufficient_scope", scope="{scope}"'},
        )


class Forbidden(Refusal):
    status, code = 403, "forbidden"


class SSORequired(Refusal):
    status, code = 403, "sso_required"

    def __init__(self, url: str) -> None:
        super().__init__(
            "the organisation enforces SAML single sign-on and this token is not authorized for it:"
            f" authorize it at {url}"
        )


class BadRequest(Refusal):
    status, code = 400, "bad_request"


class ClientClosedRequest(Refusal):
    """The client's connection was gone before its answer could be written: nobody reads this. 499,
    nginx's status for it, is what the access log and the metrics show."""

    status, code = 499, "client_closed_request"


class NoRoute(Refusal):
    status, code = 404, "not_found"

    def __init__(self, message: str = "no route matches this path") -> None:
        super().__init__(message)


class MethodNotAllowed(Refusal):
    status, code = 405, "method_not_allowed"

    def __init__(self, allowed: str) -> None:
        super().__init__(f"this endpoint answers {allowed} only", headers={"Allow": allowed})


class RequestTimeout(Refusal):
    status, code = 408, "request_timeout"


class PayloadTooLarge(Refusal):
    status, code = 413, "payload_too_large"


class HeadersTooLarge(Refusal):
    status, code = 431, "request_header_fields_too_large"


class TooManyRequests(Refusal):
    status, code = 429, "too_many_requests"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class ServiceUnavailable(Refusal):
    status, code = 503, "github_unavailable"

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class BadGateway(Refusal):
    status, code = 502, "bad_gateway"


class GatewayTimeout(Refusal):
    status, code = 504, "gateway_timeout"


class InternalError(Refusal):
    status, code = 500, "internal_error"
