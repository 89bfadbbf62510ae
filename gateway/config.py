"""`gateway.yaml`: typed models, `${VAR}` interpolation, durations, loading (DESIGN §2).

A loaded `Config` is immutable and validated all at once: `load()` raises one `ConfigError` listing
every problem as ``FILE: key.path: what was expected``. Nothing here has side effects beyond reading
the file and the environment.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
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
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from .errors import ConfigError
from .headers import refused_as_identity_header

DEFAULT_PATH = "gateway.yaml"
ENV_PATH = "GATEWAY_CONFIG"

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
_INTERPOLATED: dict[str, str] = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"}
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
                _INTERPOLATED,
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


class GitHubConfig(_Model):
    api_url: HttpUrl = "https://api.github.com"
    apps: tuple[GitHubApp, ...] = Field(min_length=1)
    check_method: Literal["token", "legacy"] = "token"
    timeout: PositiveDuration = 5.0
    retries: Int = Field(1, ge=0, le=10)
    max_concurrent_checks: Int = Field(32, ge=1)

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
    methods: tuple[Annotated[str, BeforeValidator(_method)], ...] = ()
    skip_auth_preflight: bool = False
    strip_prefix: bool = False
    timeout: Duration = 60.0
    upstream_token: UpstreamTokenConfig | None = None

    @model_validator(mode="after")
    def _auth_consistent(self) -> Route:
        if self.auth != "none":
            return self
        problems: list[tuple[Loc, str, object]] = [
            ((key,), f"expected no {key} on a route with auth: none (no token is checked there)", None)
            for key in ("scopes", "users", "user_ids", "upstream_token")
            if getattr(self, key)
        ]
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


# ---------------------------------------------------------------------------------------------------
# Interpolation and loading

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _location(path: Loc) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def interpolate(tree: Any, env: Mapping[str, str], problems: list[tuple[Loc, str]], path: Loc = ()) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string; note each unset variable at its path.

    As in the shell, the default also applies when the variable is set but empty.
    """
    if isinstance(tree, dict):
        return {k: interpolate(v, env, problems, (*path, k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [interpolate(v, env, problems, (*path, i)) for i, v in enumerate(tree)]
    if not isinstance(tree, str):
        return tree

    def substitute(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        value = env.get(name)
        if value or (value is not None and default is None):
            return value
        if default is not None:
            return default
        expected = f"expected it set, or a default as in ${{{name}:-value}}"
        problems.append((path, f"environment variable {name} is not set: {expected}"))
        return m.group(0)

    return _VAR.sub(substitute, tree)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (it would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        first: dict[object, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and first.setdefault(key, key_node) is not key_node:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"found key {key!r} again (first on line {first[key].start_mark.line + 1})",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # SECURITY: str(exc) quotes the offending source line, which may hold a secret: use the mark only
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = " ".join(filter(None, [exc.problem, exc.context]))
        return f"line {mark.line + 1}, column {mark.column + 1}: expected valid YAML, {what}"
    return f"(top level): expected valid YAML, {exc}".replace("\n", " ")


_SECRET_KEYS = frozenset({"client_secret"})
_UNION_TAGS = {"int", "str", "float", "bool", "function-after", "function-before"}
_EXPECTED = {
    "missing": "required key is missing: expected a value",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
}


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if (model := _model_in(arg)) is not None:
            return model
    return None


def _sort_key(loc: Loc) -> list[tuple[int, str]]:
    """Problems in the order of DESIGN §2 (the models' field order), list items by index."""
    key: list[tuple[int, str]] = []
    model: type[BaseModel] | None = Config
    for part in loc:
        if isinstance(part, int):
            key.append((part, ""))
            continue
        fields = list(model.model_fields) if model else []
        key.append((fields.index(part) if part in fields else len(fields), part))
        model = _model_in(model.model_fields[part].annotation) if model and part in fields else None
    return key


def _known_keys(loc: Loc) -> list[str]:
    model: type[BaseModel] | None = Config
    for part in loc:
        if isinstance(part, str):
            field = model.model_fields.get(part) if model else None
            model = _model_in(field.annotation) if field else None
    return list(model.model_fields) if model else []


def _describe(err: Mapping[str, Any]) -> tuple[Loc, str]:
    # pydantic names the member of a union it tried (`int`, `literal['auto']`): keep the user's path only
    loc: Loc = tuple(p for p in err["loc"] if isinstance(p, int) or ("[" not in p and p not in _UNION_TAGS))
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind in ("value_error", "config"):
        return loc, msg
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return loc, f"unknown key: expected one of {', '.join(known)}{hint}"
    if kind == "too_short":
        items = "a non-empty value" if isinstance(value, str) else f"at least {ctx['min_length']} item(s)"
        return loc, f"expected {items}"
    if kind in _EXPECTED:
        msg = _EXPECTED[kind]
    elif kind == "greater_than_equal":
        msg = f"expected a number of at least {ctx['ge']}"
    elif kind == "less_than_equal":
        msg = f"expected a number of at most {ctx['le']}"
    elif kind == "literal_error":
        msg = f"expected {ctx['expected']}"
    elif msg.startswith("Input should be "):
        msg = "expected " + msg.removeprefix("Input should be ")
    else:
        msg = f"expected a valid value ({msg})"
    # SECURITY: a secret's value is never echoed, whatever is wrong with it
    if (
        kind != "missing"
        and not isinstance(value, dict | list)
        and not _SECRET_KEYS.intersection(map(str, loc))
    ):
        msg = f"{msg}, got {value!r}"
    return loc, msg


def _errors(exc: ValidationError) -> list[tuple[Loc, str]]:
    errors = exc.errors(include_url=False)
    locs = [e["loc"] for e in errors]
    # a tuple whose only item failed is also reported as too short: keep the item's error only
    return [
        _describe(e)
        for e in errors
        if not (
            e["type"] == "too_short" and any(o != e["loc"] and o[: len(e["loc"])] == e["loc"] for o in locs)
        )
    ]


def _secrets(tree: Mapping[str, Any]) -> list[str]:
    github = tree.get("github")
    apps = github.get("apps") if isinstance(github, dict) else None
    if not isinstance(apps, list):
        return []
    return [s for a in apps if isinstance(a, dict) and isinstance(s := a.get("client_secret"), str) and s]


def parse(text: str, *, source: str, env: Mapping[str, str] | None = None) -> Config:
    """A Config from YAML text; every problem is reported at once, prefixed by `source`."""
    try:
        tree = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: {_yaml_problem(exc)}"]) from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(
            [f"{source}: (top level): expected a mapping of sections, got {type(tree).__name__}"]
        )
    problems: list[tuple[Loc, str]] = []
    tree = interpolate(tree, os.environ if env is None else env, problems)
    unset = [loc for loc, _ in problems]
    try:
        config: Config | None = Config.model_validate(tree)
    except ValidationError as exc:
        # a value still holding an unset ${VAR} has already been reported: skip what pydantic says of it
        problems += [(loc, msg) for loc, msg in _errors(exc) if not any(loc[: len(u)] == u for u in unset)]
        config = None
    if problems or config is None:
        lines = [
            f"{source}: {_location(loc)}: {msg}"
            for loc, msg in sorted(problems, key=lambda p: _sort_key(p[0]))
        ]
        for secret in _secrets(tree):
            # SECURITY: belt and braces: a secret quoted anywhere in a message is masked
            pattern = re.compile(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])")
            lines = [pattern.sub("***", line) for line in lines]
        raise ConfigError(list(dict.fromkeys(lines)))
    return config


def resolve_path(path: str | None) -> Path:
    """The config file to use: the argument, else ``$GATEWAY_CONFIG``, else ``./gateway.yaml``."""
    return Path(path or os.environ.get(ENV_PATH) or DEFAULT_PATH)


def load(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file."""
    file = resolve_path(None if path is None else os.fspath(path))
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise ConfigError([f"{file}: cannot read ({reason}): expected a readable UTF-8 YAML file"]) from exc
    return parse(text, source=str(file), env=env)


class _SchemaGenerator(GenerateJsonSchema):
    """Numbers and booleans may also be written as a ``${VAR}`` string, as `port: ${PORT:-8080}`."""

    def int_schema(self, schema: core_schema.IntSchema) -> JsonSchemaValue:
        return {"anyOf": [super().int_schema(schema), _INTERPOLATED]}

    def float_schema(self, schema: core_schema.FloatSchema) -> JsonSchemaValue:
        return {"anyOf": [super().float_schema(schema), _INTERPOLATED]}

    def bool_schema(self, schema: core_schema.BoolSchema) -> JsonSchemaValue:
        return {"anyOf": [super().bool_schema(schema), _INTERPOLATED]}


def json_schema() -> str:
    """The JSON Schema of `gateway.yaml` (before interpolation), generated from the models."""
    schema = Config.model_json_schema(schema_generator=_SchemaGenerator)
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return json.dumps(schema, indent=2) + "\n"
