"""The command line as a user runs it: `python -m gateway …` in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from gateway.metrics import FLUSH_INTERVAL_ENV
from gateway.testing.echo import echo_app
from gateway.testing.fake_github import FakeGitHub

from .support.headers import bearer, seen_headers, status_of
from .support.metrics import sample
from .support.processes import REPO, children, eventually, rss_kib, serving
from .support.sockets import free_port
from .support.tls import self_signed
from .support.world import CLIENT_ID, CLIENT_SECRET


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.yaml"
    bad.write_text(
        "server: {port: 99999, colour: blue}\n"
        "github: {apps: [{client_id: a, client_secret: '${MISSING_SECRET_VAR}'}], timeout: soon}\n"
        "routes: [{path: /api, upstream: 'ftp://x'}]\n"
    )
    result = run("check-config", "-c", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith(f"{bad}: ") for line in lines)
    text = result.stderr
    for expected in (
        "server.port:",
        "server.colour: unknown key",
        "github.apps[0].client_secret: environment variable MISSING_SECRET_VAR is not set",
        "github.timeout: expected a duration",
        "routes[0].upstream: expected an http:// or https:// URL",
    ):
        assert expected in text


def test_check_config_refuses_each_header_the_gateway_sets_or_strips_as_an_identity_header(
    tmp_path: Path,
) -> None:
    named = {"user": "X-Real-IP", "user_id": "X-Original-URL", "scopes": "Cookie", "client_id": "Forwarded"}
    bad = tmp_path / "gateway.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "github": {"apps": [{"client_id": "Iv1.x", "client_secret": "s"}]},
                "identity_headers": named,
                "routes": [{"path": "/", "upstream": "http://127.0.0.1:1"}],
            }
        )
    )
    result = run("check-config", "-c", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(named)
    for (key, header), why in zip(
        named.items(),
        ("set or removed by the gateway", "another method or path", "credentials", "trusted proxies"),
        strict=True,
    ):
        [line] = [line for line in lines if f": identity_headers.{key}: " in line]
        assert line.startswith(f"{bad}: ") and repr(header) in line and why in line, line


def test_check_config_accepts_the_repos_gateway_yaml_and_hides_the_secret() -> None:
    secrets = {
        "GITHUB_CLIENT_SECRET": "sekrit-value-1234",
        "GITHUB_OAUTH_CLIENT_SECRET": "sekrit-value-5678",
        "GATEWAY_COOKIE_SECRET": "sekrit-cookie-secret-of-32-characters-or-more",
    }
    result = run("check-config", "-c", "gateway.yaml", env=secrets)
    assert result.returncode == 0, result.stderr
    assert all(secret not in result.stdout + result.stderr for secret in secrets.values())


def test_check_config_reads_gateway_config_from_the_environment(tmp_path: Path) -> None:
    result = run("check-config", env={"GATEWAY_CONFIG": str(tmp_path / "absent.yaml")})
    assert result.returncode == 1
    assert "absent.yaml: cannot read" in result.stderr


def test_serve_refuses_to_start_with_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: []\n")
    result = run("serve", "-c", str(bad))
    assert result.returncode == 2
    assert "github: required key is missing" in result.stderr


def server_options(options: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """`server` keys for the `served` fixture; `tls: True` makes a self-signed certificate."""
    options = dict(options)
    if options.pop("tls", False):
        cert, key = self_signed(tmp_path, "gateway")
        options["tls"] = {"cert_file": str(cert), "key_file": str(key)}
    return options


@pytest.fixture
async def served(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]], request: pytest.FixtureRequest
) -> AsyncIterator[tuple[str, FakeGitHub, subprocess.Popen[bytes]]]:
    """`gateway serve` in a subprocess; `server` options from an indirect parameter (see server_options),
    but for `stdout: pipe`: its stdout is a pipe (`proc.stdout`) the test reads when it likes."""
    options = dict(getattr(request, "param", {}))
    piped = options.pop("stdout", None) == "pipe"
    github = FakeGitHub({CLIENT_ID: CLIENT_SECRET})
    gh = await aiohttp_server(github.app())
    up = await aiohttp_server(echo_app())
    port = free_port()
    cfg = {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            **server_options(options, tmp_path),
        },
        "admin": {"host": "127.0.0.1", "port": free_port()},
        "github": {
            "api_url": str(gh.make_url("")).rstrip("/"),
            "apps": [{"client_id": CLIENT_ID, "client_secret": "${S}"}],
        },
        "routes": [{"path": "/", "upstream": str(up.make_url("")).rstrip("/")}],
    }
    # workers add what they tallied to the metrics within 10 ms instead of a second
    env = {"S": CLIENT_SECRET, FLUSH_INTERVAL_ENV: "0.01"}
    async with serving(cfg, tmp_path, env=env, piped=piped) as proc:
        yield f"{'https' if 'tls' in cfg['server'] else 'http'}://127.0.0.1:{port}", github, proc


async def test_serve_streams_a_large_upload_with_flat_memory(
    served: tuple[str, FakeGitHub, subprocess.Popen[bytes]],
) -> None:
    url, github, proc = served
    token = github.add_token("alice", 7)
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/warm", headers=bearer(token)) as resp:
            assert resp.status == 200
        before = rss_kib(proc.pid, peak=True)
        block = os.urandom(1 << 20)
        digest = hashlib.sha256()
        megabytes = 256

        def chunks() -> Iterator[bytes]:
            for i in range(megabytes):
                chunk = block[i:] + block[:i]
                digest.update(chunk)
                yield chunk

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks():
                yield chunk

        async with session.put(url + "/upload", data=body(), headers=bearer(token)) as resp:
            echo: dict[str, Any] = await resp.json()
    assert echo["body_length"] == megabytes << 20
    assert echo["body_sha256"] == digest.hexdigest()
    growth_mib = (rss_kib(proc.pid, peak=True) - before) / 1024
    assert growth_mib < 32, f"the gateway's peak RSS grew {growth_mib:.0f} MiB for a {megabytes} MiB body"


async def test_serve_drains_and_exits_0_on_sigterm(
    served: tuple[str, FakeGitHub, subprocess.Popen[bytes]],
) -> None:
    _, _, proc = served
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


@pytest.mark.parametrize("served", [{"workers": 2}], indirect=True)
async def test_two_workers_share_the_port_and_a_dead_one_is_replaced(
    served: tuple[str, FakeGitHub, subprocess.Popen[bytes]],
) -> None:
    url, github, proc = served
    await eventually(lambda: len(children(proc.pid)) == 2, "two workers")
    first = children(proc.pid)
    token = github.add_token("alice", 7)
    async with aiohttp.ClientSession() as session:
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        await eventually(lambda: len(children(proc.pid) - {victim}) == 2, "a replacement worker")
        for _ in range(20):
            async with session.get(url + "/x", headers=bearer(token)) as resp:
                assert resp.status == 200
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0
    assert not children(proc.pid)


@pytest.mark.parametrize("served", [{}, {"workers": 2}], indirect=True, ids=["one-process", "two-workers"])
async def test_sighup_reloads_the_config_and_refuses_a_broken_one(
    served: tuple[str, FakeGitHub, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    url, github, proc = served
    token = github.add_token("alice", 7)
    path = tmp_path / "gateway.yaml"
    cfg = yaml.safe_load(path.read_text())
    assert await status_of(url + "/x", token) == 200
    cfg["routes"][0]["users"] = ["somebody-else"]
    path.write_text(yaml.safe_dump(cfg))
    proc.send_signal(signal.SIGHUP)

    async def reloaded() -> bool:  # the new policy, once every worker has it (ten new connections)
        return [await status_of(url + "/x", token) for _ in range(10)] == [403] * 10

    await eventually(reloaded, "the reload never took effect")
    path.write_text("routes: [}\n")
    proc.send_signal(signal.SIGHUP)
    await eventually(lambda: "reload refused" in (tmp_path / "gateway.log").read_text(), "a refused reload")
    assert await status_of(url + "/x", token) == 403  # the running config stays
    assert proc.poll() is None


async def admin_get(tmp_path: Path, what: str) -> tuple[int, str]:
    port = yaml.safe_load((tmp_path / "gateway.yaml").read_text())["admin"]["port"]
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{what}") as resp:
        return resp.status, await resp.text()


@pytest.mark.parametrize("served", [{}, {"workers": 2}], indirect=True, ids=["one-process", "two-workers"])
async def test_the_admin_port_answers_health_readiness_and_metrics_summed_over_workers(
    served: tuple[str, FakeGitHub, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    url, github, _ = served
    token = github.add_token("alice", 7)
    for _ in range(10):
        assert await status_of(url + "/x", token) == 200
    assert await status_of(url + "/x", "gho_" + "0" * 36) == 401
    assert (await admin_get(tmp_path, "/healthz"))[0] == 200
    status, body = await admin_get(tmp_path, "/readyz")
    assert status == 200 and '"ready": true' in body

    async def all_counted() -> bool:  # a worker adds what it tallied within its interval
        metrics = (await admin_get(tmp_path, "/metrics"))[1]
        return sample(metrics, "gateway_requests_total", code="200", route="/") == 10

    await eventually(all_counted, "the requests never all reached /metrics", within=10)
    status, metrics = await admin_get(tmp_path, "/metrics")
    assert status == 200
    assert sample(metrics, "gateway_auth_decisions_total", result="invalid_token") == 1
    assert sample(metrics, "gateway_github_calls_total", code="200", endpoint="apps/check-token") >= 1
    assert token not in metrics and "alice" not in metrics


@pytest.mark.parametrize("served", [{"tls": True}], indirect=True)
async def test_serve_speaks_tls_with_the_configured_certificate(
    served: tuple[str, FakeGitHub, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    url, github, _ = served
    assert url.startswith("https://")
    context = ssl.create_default_context(cafile=str(tmp_path / "gateway.pem"))
    context.check_hostname = False  # the certificate names 127.0.0.1 as CN only
    token = github.add_token("alice", 7)
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/x", headers=bearer(token), ssl=context) as resp,
    ):
        assert resp.status == 200
        echo = await resp.json()
    assert echo["path"] == "/x"
    assert seen_headers(echo, "X-Forwarded-Proto") == ["https"]  # the upstream hears how the caller came


async def test_sigterm_lets_a_request_in_flight_finish(
    served: tuple[str, FakeGitHub, subprocess.Popen[bytes]],
) -> None:
    url, github, proc = served
    token = github.add_token("alice", 7)
    rest = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"first half, "
        await rest.wait()
        yield b"second half"

    async with aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(session.put(url + "/slow", data=body(), headers=bearer(token)))
        await github.wait_for_calls(1)  # the gateway is handling the request (checking its token)
        proc.send_signal(signal.SIGTERM)
        rest.set()
        async with await request as resp:
            assert resp.status == 200
            assert (await resp.json())["body_length"] == len(b"first half, second half")
    assert await asyncio.to_thread(proc.wait, 20) == 0


LONG_PATH = "/" + "x" * 3000  # a ~3 KB access-log line per request: a few hundred fill pipe and buffer
PROMPTLY = aiohttp.ClientTimeout(total=5)


async def get_long_path(url: str, token: str, requests: int) -> None:
    """`requests` GETs of LONG_PATH over 10 connections, each answered 200 within PROMPTLY."""
    async with aiohttp.ClientSession(timeout=PROMPTLY) as session:

        async def some(count: int) -> None:
            for _ in range(count):
                async with session.get(url + LONG_PATH, headers=bearer(token)) as resp:
                    assert resp.status == 200
                    await resp.read()

        await asyncio.gather(*(some(requests // 10) for _ in range(10)))


def read_available(fd: int) -> bytes:
    """What a pipe holds now, without waiting for more."""
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 1 << 16):
            data += chunk
    return data


@pytest.mark.parametrize(
    "served",
    [{"stdout": "pipe"}, {"stdout": "pipe", "workers": 2}],
    indirect=True,
    ids=["one-process", "two-workers"],
)
async def test_a_stalled_stdout_holds_up_no_request_and_every_line_is_written_or_counted_dropped(
    served: tuple[str, FakeGitHub, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """A log shipper that stops reading: stdout's pipe fills at 64 KiB, then the gateway's buffer; past
    them, requests and probes are answered as ever, and access-log lines are dropped and counted."""
    url, github, proc = served
    assert proc.stdout is not None
    token = github.add_token("alice", 7)
    requests = 1500  # ~5 MB of access log: more than the pipe and the buffers of two workers hold
    await get_long_path(url, token, requests)
    assert (await asyncio.wait_for(admin_get(tmp_path, "/healthz"), 5))[0] == 200

    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    out = b""

    async def all_written_or_dropped() -> bool:  # the reader catches up; the buffer empties into it
        nonlocal out
        out += read_available(fd)
        written = [json.loads(line) for line in out[: out.rfind(b"\n") + 1].splitlines()]
        metrics = (await asyncio.wait_for(admin_get(tmp_path, "/metrics"), 5))[1]
        dropped = sample(metrics, "gateway_log_lines_dropped_total", stream="stdout")
        return dropped > 0 and sum(line["path"] == LONG_PATH for line in written) + dropped == requests

    await eventually(all_written_or_dropped, "access-log lines were lost without being counted", within=10)


@pytest.mark.parametrize(
    "served",
    [{"stdout": "pipe"}, {"stdout": "pipe", "workers": 2}],
    indirect=True,
    ids=["one-process", "two-workers"],
)
async def test_the_access_log_buffered_behind_a_slow_stdout_is_written_before_the_gateway_exits(
    served: tuple[str, FakeGitHub, subprocess.Popen[bytes]],
) -> None:
    """The reader comes back only once SIGTERM has been sent: what the gateway buffered meanwhile still
    reaches it before the process ends."""
    url, github, proc = served
    assert proc.stdout is not None
    token = github.add_token("alice", 7)
    requests = 200  # ~600 KB: past the 64 KiB the pipe holds, within the buffer of the gateway (1 MiB)
    await get_long_path(url, token, requests)
    proc.send_signal(signal.SIGTERM)
    out = await asyncio.wait_for(asyncio.to_thread(proc.stdout.read), 20)  # to the end: the gateway exits
    assert await asyncio.to_thread(proc.wait, 20) == 0
    assert sum(json.loads(line)["path"] == LONG_PATH for line in out.splitlines()) == requests
