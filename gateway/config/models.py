"""`gateway.yaml`'s typed models (README: Configuration): the value types of its fields (durations,
URLs, header
names, path prefixes, networks), and the sections they make up, each validated all at once.

Longer than most modules here: every validator in the first half serves the models in the second,
and a reader checking what a key accepts finds both in one place.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Literal
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from ..headers import fold, refused_as_identity_header
from ..signing_keys import KeyProblem, load_public_jwk, load_signing_key

# ---------------------------------------------------------------------------------------------------
# Scalars

Loc = tuple[str | int, ...]


def _not_bool(value: object) -> object:
    # YAML reads `no`, `off` and `false` as booleans, which pydantic would take for 0
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {value!r}")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]

# In the JSON Schema, a number or boolean may also be written as ${VAR}: it is resolved before validation
INTERPOLATED: dict[str, str] = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"}
_DURATION_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$"
_DURATION = re.compile(_DURATION_PATTERN)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``500ms``, ``5s``, ``10m``, ``1h``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"expected a duration: seconds or a string like 500ms, 5s, 10m, 1h, got {value!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration, got {value!r}")
    if seconds < 0:
        raise ValueError(f"expected a duration of zero or more, got {value!r}")
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": _DURATION_PATTERN},
                INTERPOLATED,
            ]
        }
    ),
]


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError(f"expected a duration greater than zero, got {seconds!r}")
    return seconds


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"expected an HTTP header name (letters, digits, '-'), got {value!r}")
    if (why := refused_as_identity_header(value)) is not None:
        raise ValueError(f"expected a header name the gateway leaves to identities, got {value!r}: {why}")
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]


def _shown(url: str) -> str:
    # SECURITY: a URL may carry a password (redis://:pw@host); error messages show it masked
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return repr(url)
    return repr(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl())


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 (raises on a port out of range)
    except ValueError:
        parts = parts._replace(scheme="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {_shown(value)}")
    if "?" in value or "#" in value:
        raise ValueError(f"expected a URL without query or fragment, got {_shown(value)}")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]


def _origin_url(value: str) -> str:
    if urlsplit(value).path not in ("", "/"):
        raise ValueError(f"expected scheme://host[:port] without a path, got {_shown(value)}")
    return value


OriginUrl = Annotated[HttpUrl, AfterValidator(_origin_url)]


def _redis_url(value: str) -> str:
    if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {_shown(value)}")
    return value


# RFC 3986 path characters, without percent-encoding: a prefix is compared with the normalised path
_PATH_CHARS = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@/]*$")


def _path_prefix(value: str) -> str:
    if not value.startswith("/") or "//" in value or not _PATH_CHARS.match(value):
        raise ValueError(
            f"expected an absolute path such as /api (letters, digits, -._~!$&'()*+,;=:@ between single"
            f" slashes), got {value!r}"
        )
    if any(seg in (".", "..") for seg in value.split("/")):
        raise ValueError(f"expected a path without . or .. segments, got {value!r}")
    return value.rstrip("/") or "/"


PathPrefix = Annotated[str, AfterValidator(_path_prefix)]


def _workers(value: object) -> object:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)  # from ${WORKERS}
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f'expected a number of processes of 1 or more, or "auto", got {value!r}')


def _network(value: object) -> object:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    expected = "expected a network such as 10.0.0.0/8, fd00::/8 or a single address"
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {value!r}")
    try:
        return ipaddress.ip_network(value)
    except ValueError as exc:
        raise ValueError(f"{expected} ({exc}), got {value!r}") from None


def _method(value: object) -> object:
    if not isinstance(value, str):
        return value
    if not re.fullmatch(r"[A-Za-z]+(?:-[A-Za-z]+)*", value):
        raise ValueError(f"expected an HTTP method name such as GET, got {value!r}")
    return value.upper()


def _client_id(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", value):
        raise ValueError(f"expected an app's client ID such as Iv1.8a61f9b3a7aba766, got {value!r}")
    return value


def _frozen_mapping(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


# GitHub's names: an account (user or organisation) is letters, digits and single hyphens, at most 39;
# a team slug is the name GitHub derived for the team's URL (lower-case letters, digits, `-`, `_`);
# a repository name is letters, digits, `.`, `_` and `-`, at most 100
_ACCOUNT = r"[A-Za-z0-9](?:-?[A-Za-z0-9]){0,38}"
_SLUG = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,99}"
_REPOSITORY = r"[A-Za-z0-9._-]{1,100}"
# GitHub's repository permission levels, lowest first
REPOSITORY_LEVELS = ("read", "triage", "write", "maintain", "admin")


def _organisation(value: str) -> str:
    if not re.fullmatch(_ACCOUNT, value):
        raise ValueError(f"expected an organisation's login such as acme (letters, digits, -), got {value!r}")
    return value.lower()  # GitHub's names compare case-insensitively


def _team(value: str) -> str:
    org, _, slug = value.partition("/")
    if not re.fullmatch(_ACCOUNT, org) or not re.fullmatch(_SLUG, slug):
        hint = (
            " (a team's display name is not its slug: use the name in the team's URL)" if " " in slug else ""
        )
        raise ValueError(
            f"expected a team as org/team-slug such as acme/site-reliability, got {value!r}{hint}"
        )
    return value.lower()


def _repository(value: str) -> str:
    owner, _, name = value.partition("/")
    if not re.fullmatch(_ACCOUNT, owner) or not re.fullmatch(_REPOSITORY, name) or name in (".", ".."):
        raise ValueError(f"expected a repository as owner/name such as acme/api, got {value!r}")
    return value.lower()


def _invalid(title: str, problems: list[tuple[Loc, str, object]]) -> ValidationError:
    """One ValidationError holding several problems, each at its own location below the validated value."""
    return ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(type=PydanticCustomError("config", msg), loc=loc, input=value)
            for loc, msg, value in problems
        ],
    )


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------------
# Sections


class TLSConfig(_Model):
    cert_file: str
    key_file: str


class ServerConfig(_Model):
    host: str = "0.0.0.0"
    port: Int = Field(8080, ge=0, le=65535)
    workers: Annotated[Annotated[int, Field(ge=1)] | Literal["auto"], BeforeValidator(_workers)] = 1
    tls: TLSConfig | None = None
    trusted_proxies: tuple[
        Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_network)], ...
    ] = ()
    shutdown_timeout: Duration = 30.0
    header_timeout: PositiveDuration | None = 10.0
    keepalive_timeout: PositiveDuration = 75.0
    body_timeout: PositiveDuration | None = 60.0
    max_header_size: Int = Field(65536, ge=1024)
    max_connections: Int = Field(10000, ge=1)
    max_body_size: Int | None = Field(None, ge=0)
    control_prefix: PathPrefix = "/_gateway"
    forward_auth_headers: Literal["original", "forwarded"] = "original"
    public_url: OriginUrl | None = None

    @field_validator("control_prefix")
    @classmethod
    def _not_root(cls, v: str) -> str:
        if v == "/":
            raise ValueError("expected a prefix other than /, such as /_gateway")
        return v

    @property
    def worker_count(self) -> int:
        """The number of processes, with "auto" resolved to the CPU count."""
        return (os.cpu_count() or 1) if self.workers == "auto" else int(self.workers)


class AdminConfig(_Model):
    host: str = "127.0.0.1"
    port: Int = Field(9090, ge=0, le=65535)


class GitHubApp(_Model):
    client_id: Annotated[str, AfterValidator(_client_id)]
    client_secret: SecretStr = Field(min_length=1)


def _app_key_problem(path: str) -> str | None:
    """What is wrong with a GitHub App's private key file, if anything (it signs RS256 JWTs)."""
    expected = "expected a readable, unencrypted PEM file of the GitHub App's RSA private key"
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        return f"{expected}; cannot read {path!r} ({exc.strerror or exc})"
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return f"{expected}; {path!r} is not one (or is encrypted)"
    if not isinstance(key, rsa.RSAPrivateKey):
        return f"{expected}; {path!r} holds another kind of key"
    return None


class MembershipConfig(_Model):
    """How organisation, team and repository facts are asked of GitHub (`github.membership`)."""

    as_: Literal["user", "app"] = Field("user", alias="as")
    app_id: Int | None = Field(None, ge=1)
    private_key_file: str | None = None
    ttl: Duration = 300.0
    negative_ttl: Duration = 60.0

    @model_validator(mode="after")
    def _app_has_its_credentials(self) -> MembershipConfig:
        if self.as_ != "app":
            return self
        problems: list[tuple[Loc, str, object]] = [
            ((key,), f"expected {what} with as: app", None)
            for key, what in (
                ("app_id", "the GitHub App's id"),
                ("private_key_file", "its private key (PEM)"),
            )
            if getattr(self, key) is None
        ]
        if self.private_key_file is not None and (problem := _app_key_problem(self.private_key_file)):
            problems.append((("private_key_file",), problem, self.private_key_file))
        if problems:
            raise _invalid("MembershipConfig", problems)
        return self


class GitHubConfig(_Model):
    api_url: HttpUrl = "https://api.github.com"
    apps: tuple[GitHubApp, ...] = Field(min_length=1)
    check_method: Literal["token", "legacy"] = "token"
    timeout: PositiveDuration = 5.0
    retries: Int = Field(1, ge=0, le=10)
    max_concurrent_checks: Int = Field(32, ge=1)
    membership: MembershipConfig = MembershipConfig()
    web_url: HttpUrl | None = None

    @property
    def web(self) -> str:
        """Where people sign in: `web_url`, else github.com for api.github.com, https://HOST for GHES's
        https://HOST/api/v3, and the API's own URL for anything else (the fake GitHub serves both)."""
        if self.web_url is not None:
            return self.web_url
        parts = urlsplit(self.api_url)
        if parts.hostname == "api.github.com":
            return "https://github.com"
        return self.api_url.removesuffix("/api/v3")

    @field_validator("apps")
    @classmethod
    def _unique_apps(cls, v: tuple[GitHubApp, ...]) -> tuple[GitHubApp, ...]:
        first: dict[str, int] = {}
        problems: list[tuple[Loc, str, object]] = []
        for i, app in enumerate(v):
            if (j := first.setdefault(app.client_id, i)) != i:
                msg = f"expected each client_id once, {app.client_id!r} is also apps[{j}].client_id"
                problems.append(((i, "client_id"), msg, app.client_id))
        if problems:
            raise _invalid("GitHubConfig", problems)
        return v


class CacheConfig(_Model):
    ttl: Duration = 300.0
    negative_ttl: Duration = 30.0
    max_entries: Int = Field(100_000, ge=1)
    stale_if_error: Duration = 0.0
    # SECURITY: the URL may hold a password; keep it out of repr(config)
    redis_url: Annotated[str, AfterValidator(_redis_url)] | None = Field(None, repr=False)


class IdentityHeaders(_Model):
    user: HeaderName | None = "X-Auth-User"
    user_id: HeaderName | None = "X-Auth-User-Id"
    scopes: HeaderName | None = "X-Auth-Scopes"
    expires_at: HeaderName | None = "X-Auth-Token-Expires-At"
    client_id: HeaderName | None = "X-Auth-Client-Id"
    groups: HeaderName | None = "X-Auth-Groups"

    @model_validator(mode="after")
    def _distinct(self) -> IdentityHeaders:
        # upstream servers may read `X_Auth_User` as `x-auth-user`: names collide in any case, `_` or `-`
        first: dict[str, str] = {}
        problems: list[tuple[Loc, str, object]] = []
        for field, name in self.model_dump().items():
            if name and (other := first.setdefault(name.lower().replace("_", "-"), field)) != field:
                msg = f"expected a header name distinct from identity_headers.{other}, got {name!r}"
                problems.append(((field,), msg, name))
        if problems:
            raise _invalid("IdentityHeaders", problems)
        return self


def _claim_text(value: str) -> str:
    # a JWT's iss and aud are compared as exact strings by every verifier: no stray whitespace
    if not value or value != value.strip() or any(c < " " or c == "\x7f" for c in value):
        raise ValueError(f"expected a non-empty string without surrounding whitespace, got {value!r}")
    return value


ClaimText = Annotated[str, AfterValidator(_claim_text)]


class IdentityTokenConfig(_Model):
    """The signed identity token upstreams verify (`identity_token`, DESIGN §11)."""

    header: HeaderName = "X-Auth-Jwt"
    signing_key_file: str
    previous_public_keys: tuple[str, ...] = ()
    issuer: ClaimText | None = None  # default: server.public_url, else "gateway"
    ttl: Annotated[PositiveDuration, Field(le=86400.0)] = 60.0

    @model_validator(mode="after")
    def _keys_usable(self) -> IdentityTokenConfig:
        problems: list[tuple[Loc, str, object]] = []
        try:
            load_signing_key(self.signing_key_file)
        except KeyProblem as exc:
            problems.append((("signing_key_file",), str(exc), self.signing_key_file))
        for i, path in enumerate(self.previous_public_keys):
            try:
                load_public_jwk(path)
            except KeyProblem as exc:
                problems.append((("previous_public_keys", i), str(exc), path))
        if problems:
            raise _invalid("IdentityTokenConfig", problems)
        return self


_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$")  # RFC 6265 cookie-name (a token)
MIN_COOKIE_SECRET = 32


def _cookie_name(value: str) -> str:
    if not _COOKIE_NAME.match(value):
        raise ValueError(f"expected a cookie name (letters, digits, -._ and no spaces), got {value!r}")
    return value


def _cookie_secret(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value()) < MIN_COOKIE_SECRET:
        raise ValueError(
            f"expected at least {MIN_COOKIE_SECRET} characters of random text (openssl rand -base64 32)"
        )
    return value


CookieSecret = Annotated[SecretStr, AfterValidator(_cookie_secret)]


class SessionsConfig(_Model):
    """Browser sign-in's session cookie (`sessions`, DESIGN §12)."""

    cookie_secret: CookieSecret
    previous_cookie_secrets: tuple[CookieSecret, ...] = ()
    cookie_name: Annotated[str, AfterValidator(_cookie_name)] = "gateway_session"
    max_age: PositiveDuration = 8 * 3600.0


class RateLimitConfig(_Model):
    failed_auth_per_minute: Int = Field(30, ge=0)


class UpstreamTokenConfig(_Model):
    """A scoped token minted from the caller's GitHub App user token (POST …/token/scoped)."""

    target: str | None = None
    target_id: Int | None = None
    repositories: tuple[str, ...] = ()
    repository_ids: tuple[Int, ...] = ()
    permissions: Annotated[
        Mapping[str, Literal["read", "write", "admin"]],
        AfterValidator(_frozen_mapping),
        PlainSerializer(dict, return_type=dict[str, str]),
    ] = Field(default_factory=lambda: MappingProxyType({}))

    @model_validator(mode="after")
    def _has_target(self) -> UpstreamTokenConfig:
        if self.target is None and self.target_id is None:
            raise ValueError("expected target (an organization or user login) or target_id")
        return self


class Route(_Model):
    path: PathPrefix
    upstream: HttpUrl
    auth: Literal["required", "none", "optional"] = "required"
    scopes: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    user_ids: tuple[Int, ...] = ()
    orgs: tuple[Annotated[str, AfterValidator(_organisation)], ...] = ()
    teams: tuple[Annotated[str, AfterValidator(_team)], ...] = ()
    repos: Annotated[
        Mapping[Annotated[str, AfterValidator(_repository)], Literal[REPOSITORY_LEVELS]],  # type: ignore[valid-type]
        AfterValidator(_frozen_mapping),
        PlainSerializer(dict, return_type=dict[str, str]),
    ] = Field(default_factory=lambda: MappingProxyType({}))
    methods: tuple[Annotated[str, BeforeValidator(_method)], ...] = ()
    skip_auth_preflight: bool = False
    strip_prefix: bool = False
    timeout: Duration = 60.0
    upstream_token: UpstreamTokenConfig | None = None
    audience: ClaimText | None = None
    browser_login: bool = False

    @model_validator(mode="after")
    def _auth_consistent(self) -> Route:
        if self.auth != "none":
            return self
        problems: list[tuple[Loc, str, object]] = [
            ((key,), f"expected no {key} on a route with auth: none (no token is checked there)", None)
            for key in ("scopes", "users", "user_ids", "orgs", "teams", "repos", "upstream_token")
            if getattr(self, key)
        ]
        if self.browser_login:
            msg = "expected browser_login: false on a route with auth: none (nobody signs in there)"
            problems.append((("browser_login",), msg, True))
        if problems:
            raise _invalid("Route", problems)
        return self


class Config(_Model):
    """The whole of `gateway.yaml`, immutable once loaded."""

    server: ServerConfig = ServerConfig()
    admin: AdminConfig | None = AdminConfig()
    github: GitHubConfig
    cache: CacheConfig = CacheConfig()
    identity_headers: IdentityHeaders = IdentityHeaders()
    identity_token: IdentityTokenConfig | None = None
    sessions: SessionsConfig | None = None
    pass_authorization: bool = False
    rate_limit: RateLimitConfig = RateLimitConfig()
    routes: tuple[Route, ...] = Field(min_length=1)

    @field_validator("routes")
    @classmethod
    def _distinct_paths(cls, v: tuple[Route, ...], info: ValidationInfo) -> tuple[Route, ...]:
        server = info.data.get("server")
        prefix = server.control_prefix if isinstance(server, ServerConfig) else None
        first: dict[str, int] = {}
        problems: list[tuple[Loc, str, object]] = []
        for i, route in enumerate(v):
            key = route.path.lower()
            if (j := first.setdefault(key, i)) != i:
                msg = f"expected each path once (case-insensitive), {route.path!r} is also routes[{j}].path"
                problems.append(((i, "path"), msg, route.path))
            if prefix and (key == prefix.lower() or key.startswith(prefix.lower() + "/")):
                msg = (
                    f"expected a path outside server.control_prefix {prefix!r} (the gateway's own endpoints)"
                )
                problems.append(((i, "path"), f"{msg}, got {route.path!r}", route.path))
        if problems:
            raise _invalid("Config", problems)
        return v

    @model_validator(mode="after")
    def _identity_token_complete(self) -> Config:
        token = self.identity_token
        if token is None:
            return self
        name = token.header
        for field, other in self.identity_headers.model_dump().items():
            if other and fold(other) == fold(name):
                msg = f"expected a header name distinct from identity_headers.{field}, got {name!r}"
                raise _invalid("Config", [(("identity_token", "header"), msg, name)])
        if token.issuer is not None:
            return self
        issuer = self.server.public_url or "gateway"
        return self.model_copy(update={"identity_token": token.model_copy(update={"issuer": issuer})})

    @model_validator(mode="after")
    def _sign_in_has_what_it_needs(self) -> Config:
        problems: list[tuple[Loc, str, object]] = []
        if self.sessions is not None and self.server.public_url is None:
            msg = (
                "expected the URL users reach the gateway at (https://gw.example.com): sessions needs it"
                " for the sign-in redirect_uri"
            )
            problems.append((("server", "public_url"), msg, None))
        if self.sessions is None:
            msg = "expected sessions to be set: browser_login signs browsers in with a session cookie"
            problems += [
                (("routes", i, "browser_login"), msg, True)
                for i, r in enumerate(self.routes)
                if r.browser_login
            ]
        if problems:
            raise _invalid("Config", problems)
        return self
