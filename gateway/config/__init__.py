"""`gateway.yaml` (README: Configuration): its typed models, loading it, and its JSON Schema.

A loaded `Config` is immutable and validated all at once: `load()` raises one `ConfigError` listing
every problem as ``FILE: key.path: what was expected``.
"""

from .loading import DEFAULT_PATH, ENV_PATH, interpolate, load, parse, resolve_path
from .models import (
    AdminConfig,
    CacheConfig,
    Config,
    GitHubApp,
    GitHubConfig,
    IdentityHeaders,
    IdentityTokenConfig,
    MembershipConfig,
    RateLimitConfig,
    Route,
    ServerConfig,
    SessionsConfig,
    TLSConfig,
    UpstreamTokenConfig,
    parse_duration,
)
from .schema import json_schema

__all__ = [
    "DEFAULT_PATH",
    "ENV_PATH",
    "AdminConfig",
    "CacheConfig",
    "Config",
    "GitHubApp",
    "GitHubConfig",
    "IdentityHeaders",
    "IdentityTokenConfig",
    "MembershipConfig",
    "RateLimitConfig",
    "Route",
    "ServerConfig",
    "SessionsConfig",
    "TLSConfig",
    "UpstreamTokenConfig",
    "interpolate",
    "json_schema",
    "load",
    "parse",
    "parse_duration",
    "resolve_path",
]
