"""The container image (Dockerfile; README: Operating it) built and run with podman, as `make docker-test`
runs it and `make test` does not (marker `container`): health and readiness answer, a bogus token is
refused by a GitHub the container reaches, the process is not root, the image's HEALTHCHECK passes, and
SIGTERM drains a request in flight and exits 0 within `shutdown_timeout`.

The container shares the host's network (`--network host`): the fake GitHub and the upstreams are this
test's own servers on 127.0.0.1, and every request stays on loopback. Where podman is missing or cannot
run a container, every test here is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.testing.echo import echo_app
from gateway.testing.fake_github import FakeGitHub

from .support.headers import bearer, seen_headers
from .support.processes import REPO, eventually
from .support.sockets import free_port
from .support.world import CLIENT_ID, CLIENT_SECRET

pytestmark = pytest.mark.container

BASE = "python:3.11-slim"  # the Dockerfile's FROM, made by scripts/base-image where no registry serves it
IMAGE = "localhost/gateway:docker-test"
MAX_IMAGE_MB = 220  # the image is ~190 MB: the base (~125 MB) and the gateway's dependencies
SHUTDOWN_TIMEOUT = 10.0
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # pip in the build trusts what the host trusts


def containers_conf(directory: Path) -> Path:
    """A containers.conf for podman here: runc, no systemd, and ulimits a container may have. Podman
    asks for more open files and processes than this process's hard limits (or than pid_max) allow,
    and runc cannot raise them in a sandbox without CAP_SYS_RESOURCE."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1] % (1 << 62), 65536)
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1] % (1 << 62), pid_max)
    path = directory / "containers.conf"
    path.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )
    return path


@dataclass
class Podman:
    executable: str
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.executable, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    """Podman with this machine's containers.conf and the base image; skips where it cannot run."""
    executable = shutil.which("podman")
    if executable is None:
        pytest.skip("podman is not installed (make docker-test installs it as root): image not tested")
    conf = containers_conf(tmp_path_factory.mktemp("podman"))
    run = Podman(executable, {**os.environ, "CONTAINERS_CONF": str(conf)})
    if run("image", "exists", BASE).returncode != 0:
        if os.geteuid() != 0 or shutil.which("debootstrap") is None:
            pytest.skip(f"no {BASE} image, and scripts/base-image needs root and debootstrap to make it")
        made = subprocess.run(
            [str(REPO / "scripts/base-image")], env=run.env, capture_output=True, text=True, check=False
        )
        assert made.returncode == 0, made.stdout + made.stderr
    probe = run("run", "--rm", "--network", "host", BASE, "python3", "-c", "print('ok')")
    if probe.returncode != 0 or probe.stdout.strip() != "ok":
        pytest.skip(f"podman cannot run a container here: {probe.stderr.strip()[-400:]}")
    return run


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    """The gateway's image, built from the Dockerfile (no pull: the base is local)."""
    before = podman("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    mount = ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"] if CA_BUNDLE.exists() else []
    # docker format: OCI images have no HEALTHCHECK; the host network: pip reaches PyPI as the host does
    built = podman(
        "build", "--pull=never", "--format", "docker", "--network", "host", *mount, "-t", IMAGE, str(REPO),
        timeout=900,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    # the image this tag named before a change (its build stage stays: the cache for pip install)
    if before and podman("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip() != before:
        podman("rmi", before)
    return IMAGE


@dataclass
class Running:
    name: str
    url: str  # the main port
    admin: str  # the admin port
    github: FakeGitHub
    arrived: asyncio.Event  # a request reached the held upstream ...
    release: asyncio.Event  # ... which answers once this is set


@pytest.fixture
async def running(
    podman: Podman, image: str, tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> AsyncIterator[Running]:
    """The image running with a config of its own, pointed at this test's fake GitHub and upstreams."""
    github = FakeGitHub({CLIENT_ID: CLIENT_SECRET})
    gh = await aiohttp_server(github.app())
    echo = await aiohttp_server(echo_app())
    arrived, release = asyncio.Event(), asyncio.Event()

    async def held(_request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(text="finished while draining")

    held_app = web.Application()
    held_app.router.add_get("/held", held)
    held_server = await aiohttp_server(held_app)
    port, admin = free_port(), free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "shutdown_timeout": f"{SHUTDOWN_TIMEOUT}s"},
        "admin": {"host": "127.0.0.1", "port": admin},
        "github": {
            "api_url": str(gh.make_url("")).rstrip("/"),
            "apps": [{"client_id": CLIENT_ID, "client_secret": "${GITHUB_CLIENT_SECRET}"}],
        },
        "routes": [
            {"path": "/held", "upstream": str(held_server.make_url("")).rstrip("/"), "auth": "none"},
            {"path": "/", "upstream": str(echo.make_url("")).rstrip("/")},
        ],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)  # the gateway runs as uid 10001
    name = f"gateway-test-{uuid.uuid4().hex[:8]}"
    started = podman(
        "run", "--detach", "--name", name, "--network", "host",
        "-v", f"{path}:/etc/gateway/gateway.yaml:ro",
        "-e", f"GITHUB_CLIENT_SECRET={CLIENT_SECRET}",
        "-e", f"GATEWAY_HEALTHCHECK_URL=http://127.0.0.1:{admin}/healthz",
        image,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        up = Running(name, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", github, arrived, release)
        async with aiohttp.ClientSession() as session:

            async def answers() -> bool:
                try:
                    async with session.get(up.admin + "/healthz") as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    assert state(podman, name) == "running", podman("logs", name).stderr
                    return False

            await eventually(answers, "the container's /healthz never answered", within=60)
        yield up
    finally:
        release.set()
        podman("rm", "--force", "--time", "0", name)


def state(podman: Podman, name: str) -> str:
    return podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()


def test_the_image_is_small_and_says_how_it_is_checked(podman: Podman, image: str) -> None:
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    assert size < MAX_IMAGE_MB * 1_000_000, f"{size / 1e6:.0f} MB"
    healthcheck = podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", image).stdout
    assert "/healthz" in healthcheck
    user = podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
    assert user not in ("", "0", "root")


async def test_the_container_is_healthy_ready_and_refuses_a_bogus_token(running: Running) -> None:
    token = running.github.add_token("alice", 7, ["repo"])
    async with aiohttp.ClientSession() as session:
        for probe in ("/healthz", "/readyz"):
            async with session.get(running.admin + probe) as resp:
                assert resp.status == 200, await resp.text()
        async with session.get(running.url + "/svc", headers=bearer("gho_bogus0000000000")) as resp:
            assert resp.status == 401
        async with session.get(running.url + "/svc", headers=bearer(token)) as resp:
            assert resp.status == 200
            assert seen_headers(await resp.json(), "X-Auth-User") == ["alice"]
    assert running.github.count("apps/check-token") == 2  # both asked the fake GitHub on the host


def test_the_gateway_in_the_container_is_not_root(podman: Podman, running: Running) -> None:
    pid = podman("inspect", "--format", "{{.State.Pid}}", running.name).stdout.strip()
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == ["10001"] * 4  # real, effective, saved and filesystem: none is root
    assert "gateway" in Path(f"/proc/{pid}/cmdline").read_text()


def test_the_image_healthcheck_passes_on_a_running_gateway(podman: Podman, running: Running) -> None:
    checked = podman("healthcheck", "run", running.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_sigterm_drains_a_request_in_flight_and_exits_0_within_shutdown_timeout(
    podman: Podman, running: Running
) -> None:
    pid = podman("inspect", "--format", "{{.State.Pid}}", running.name).stdout.strip()
    async with aiohttp.ClientSession() as session:
        in_flight = asyncio.ensure_future(session.get(running.url + "/held"))
        await asyncio.wait_for(running.arrived.wait(), 20)
        began = time.monotonic()
        # podman stop sends the image's STOPSIGNAL (SIGTERM), and SIGKILL only after --time seconds
        stopped = asyncio.ensure_future(
            asyncio.to_thread(podman, "stop", "--time", str(int(SHUTDOWN_TIMEOUT) + 20), running.name)
        )

        async def admin_closed() -> bool:  # draining: the admin listener closes at once
            try:
                async with session.get(running.admin + "/healthz"):
                    return False
            except aiohttp.ClientConnectionError:
                return True

        await eventually(admin_closed, "the admin port still answers after SIGTERM")
        alive = await asyncio.to_thread(Path(f"/proc/{pid}").exists)
        assert alive and not stopped.done()  # the request in flight holds it
        running.release.set()
        async with await in_flight as resp:
            assert resp.status == 200
            assert await resp.text() == "finished while draining"
        assert (await stopped).returncode == 0
    assert time.monotonic() - began < SHUTDOWN_TIMEOUT
    assert podman("inspect", "--format", "{{.State.ExitCode}}", running.name).stdout.strip() == "0"
