"""What the benchmark starts: the peers, nginx from the templates beside this file, and the gateway.

Everything listens on 127.0.0.1 on ports picked free at run time, and keeps its runtime files (configs,
logs, nginx's pid file, cache and temp dirs) under the run's own temporary directory, so two runs
never clash.
"""

from __future__ import annotations

import base64
import grp
import os
import pwd
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .peers import CLIENT_ID, CLIENT_SECRET
from .procs import HOST, Proc, Processes

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
CONTROL_PREFIX = "/_gateway"
GATED = {"orgs": ["acme"], "teams": ["acme/sre"]}  # who may pass on the gated rows: the fake's members


def url(port: int) -> str:
    """http://127.0.0.1:PORT"""
    return f"http://{HOST}:{port}"


def start_peer(procs: Processes, kind: str, port: int, *urls: str) -> Proc:
    """One of `bench/peers.py`'s servers."""
    argv = [sys.executable, "-m", "bench.peers", kind, str(port), *urls]
    return procs.start(kind, argv, port=port, cwd=PROJECT)


# ---------------------------------------------------------------------------------------------------
# nginx


def render_nginx(template: str, values: Mapping[str, str]) -> str:
    """The template with each `@KEY@` replaced; `ValueError` if one is left without a value."""
    text = re.sub(r"@([A-Z_]+)@", lambda m: values.get(m.group(1), m.group(0)), template)
    if left := sorted(set(re.findall(r"@[A-Z_]+@", text))):
        raise ValueError(f"no value for {', '.join(left)} in the nginx template")
    return text


def _user_line() -> str:
    # as root, nginx's workers would run as `nobody`, which cannot enter our private temp dir
    if os.geteuid() != 0:
        return ""
    return f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"


def nginx_values(workdir: Path, ports: Mapping[str, int]) -> dict[str, str]:
    """The values the nginx templates need."""
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    return {
        "DIR": str(workdir),
        "USER": _user_line(),
        "BASIC_AUTH": basic,
        "CLIENT_ID": CLIENT_ID,
        "CONTROL_PREFIX": CONTROL_PREFIX,
        **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }


def start_nginx(procs: Processes, nginx: str, name: str, values: Mapping[str, str], port: int) -> Proc:
    """nginx from `bench/nginx-NAME.conf`, in the foreground of its own process group."""
    workdir = Path(values["DIR"])
    conf = workdir / f"{name}.conf"
    conf.write_text(render_nginx((HERE / f"nginx-{name}.conf").read_text(), values))
    return procs.start(f"nginx-{name}", [nginx, "-p", str(workdir), "-c", str(conf)], port=port)


# ---------------------------------------------------------------------------------------------------
# the gateway


def gateway_config(
    *,
    port: int,
    github: str,
    upstream: str,
    workers: int = 1,
    max_concurrent_checks: int = 32,
    route_timeout: str = "60s",
    policy: Mapping[str, object] | None = None,
    identity_token: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """A `gateway.yaml` for the benchmark: one app (the fake's), one route `/` (with `policy`: who may
    pass), no admin, no rate limit; with `identity_token`, signing one."""
    return {
        "server": {"host": HOST, "port": port, "workers": workers, "shutdown_timeout": "2s"},
        "admin": None,
        "github": {
            "api_url": github,
            "apps": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}],
            "max_concurrent_checks": max_concurrent_checks,
        },
        "cache": {"ttl": "5m"},
        "rate_limit": {"failed_auth_per_minute": 0},
        "identity_token": identity_token,
        "routes": [{"path": "/", "upstream": upstream, "timeout": route_timeout, **(policy or {})}],
    }


def signing_key(workdir: Path) -> str:
    """An EC P-256 private key for the identity token, written to `workdir`; its path."""
    path = workdir / "identity-token.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(path)


def start_gateway(
    procs: Processes, workdir: Path, name: str, config: Mapping[str, object], *, port: int
) -> Proc:
    """`python -m gateway serve -c <generated yaml>`; its access log (stdout) is discarded."""
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    argv = [sys.executable, "-m", "gateway", "serve", "-c", str(path)]
    return procs.start(name, argv, port=port, quiet_stdout=True, cwd=PROJECT)
