"""The benchmark of issue 5, in one run on loopback: `make bench` (full), `make bench-smoke` (CI).

    python -m bench.run [--smoke] [--duration S] [--rounds R] [--concurrency N] [--no-nginx]
                        [--no-wrk] [--output PATH]

Starts a fake GitHub answering after 50 ms, an upstream (nginx with a static answer, else aiohttp),
the peers and the gateway, loads each target with one generator at one concurrency (wrk, else the
built-in aiohttp one), then measures the thundering herd, a miss-heavy load, bytes per cached
identity, a large upload and `workers: 2` against `workers: 1`. Prints one table and the rest, judges
the targets (PASS/FAIL; a full run exits 1 on a FAIL, a smoke run only on a crash) and writes JSON.

Environment: BENCH_DURATION (seconds per target and round, default 5), BENCH_FALLBACK=1 (= --no-nginx
--no-wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import aiohttp

from . import chart, eventloop, load, measure, servers
from .load import LoadResult
from .measure import MIB
from .procs import (
    HOST,
    Proc,
    Processes,
    cpu_seconds_since,
    cpu_ticks,
    free_ports,
    memory_kib,
    reset_peak_rss,
    serving_processes,
)
from .report import Results, Row, UploadReport, WorkersReport, checks, render, write_json

T = TypeVar("T")
PORTS = (
    *(
        "github",
        "upstream",
        "bare",
        "naive",
        "gateway",
        "auth_request",
        "forward_auth",
        "gated",
        "signed",
        "gated_signed",
    ),
    *("sink", "upload_gateway", "upload_proxy", "workers_1", "workers_2"),
)
GITHUB_LATENCY = 0.05


@dataclass(frozen=True)
class Settings:
    """How big and how long this run is, and which tools it uses."""

    smoke: bool
    duration: float
    warmup: float
    rounds: int
    concurrency: int
    herd: int
    misses: int
    miss_concurrency: int
    cache_entries: int
    idle: int
    upload_bytes: int
    nginx: str | None
    wrk: str | None
    output: Path


def settings(argv: Sequence[str] | None) -> Settings:
    """Settings from the command line and the environment."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="seconds, small sizes, targets not enforced")
    parser.add_argument(
        "--duration", type=float, help="seconds per target and round (default $BENCH_DURATION or 5)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="connections for every target")
    parser.add_argument("--rounds", type=int, help="times the table's targets are loaded in turn (default 3)")
    fallback = os.environ.get("BENCH_FALLBACK", "") not in ("", "0")
    parser.add_argument("--no-nginx", action="store_true", default=fallback, help="aiohttp upstream")
    parser.add_argument("--no-wrk", action="store_true", default=fallback, help="built-in load generator")
    parser.add_argument("--output", type=Path, help="JSON (default bench/results/latest.json or smoke.json)")
    args = parser.parse_args(argv)
    smoke = bool(args.smoke)
    duration = args.duration or float(os.environ.get("BENCH_DURATION") or (1 if smoke else 5))
    results = servers.HERE / "results"
    return Settings(
        smoke=smoke,
        duration=duration,
        warmup=0.0 if smoke else 1.0,
        rounds=args.rounds or (1 if smoke else 3),
        concurrency=args.concurrency,
        herd=50 if smoke else 200,
        misses=500 if smoke else 10_000,
        miss_concurrency=64,
        cache_entries=10_000 if smoke else 100_000,
        idle=500 if smoke else 10_000,
        upload_bytes=(32 if smoke else 1024) * MIB,
        nginx=None if args.no_nginx else shutil.which("nginx") or _sbin("nginx"),
        wrk=None if args.no_wrk else shutil.which("wrk"),
        output=args.output or results / ("smoke.json" if smoke else "latest.json"),
    )


def _sbin(name: str) -> str | None:
    path = Path("/usr/sbin") / name  # not on a non-root PATH on Debian
    return str(path) if path.exists() else None


def _run(coro: Coroutine[Any, Any, T], timeout: float = 600) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    with asyncio.Runner(loop_factory=eventloop.new_event_loop) as runner:
        return runner.run(bounded())


_T0 = time.monotonic()


def progress(message: str) -> None:
    """A progress line on stderr (the report goes to stdout)."""
    print(f"bench [{time.monotonic() - _T0:6.1f} s] {message}", file=sys.stderr, flush=True)


@dataclass
class Lab:
    """One run's servers, ports and token."""

    settings: Settings
    procs: Processes
    workdir: Path
    ports: dict[str, int]
    token: str = field(default_factory=measure.new_token)
    started: dict[str, Proc] = field(default_factory=dict)

    def url(self, port: str) -> str:
        """The base URL of the server on that port."""
        return servers.url(self.ports[port])

    def load(self, port: str, duration: float) -> LoadResult:
        """The run's load generator on a server, at the run's concurrency."""
        s = self.settings
        url = self.url(port) + "/"
        return load.run(url, token=self.token, concurrency=s.concurrency, duration=duration, wrk=s.wrk)

    def start_gateway(self, name: str, port: str, upstream: str, **options: Any) -> Proc:
        """A gateway on that port, checking tokens with the fake GitHub, with one route to `upstream`."""
        config = servers.gateway_config(
            port=self.ports[port], github=self.url("github"), upstream=self.url(upstream), **options
        )
        proc = servers.start_gateway(self.procs, self.workdir, name, config, port=self.ports[port])
        self.started[port] = proc
        return proc

    def measured(
        self, port: str, server: Sequence[str], *, warm: bool = True
    ) -> tuple[LoadResult, dict[str, float]]:
        """Warm-up (unless `warm` is False), then the measured load, with the CPU seconds each side
        used meanwhile."""
        if warm and self.settings.warmup:
            self.load(port, self.settings.warmup)
        roots = {"server": [self.started[n].pid for n in server], "upstream": [self.started["upstream"].pid]}
        before = {role: cpu_ticks(pids) for role, pids in roots.items()}
        result = self.load(port, self.settings.duration)
        cpu = {role: round(cpu_seconds_since(before[role], pids), 2) for role, pids in roots.items()}
        return result, {**cpu, "load": round(result.cpu_s, 2)}


def start_servers(lab: Lab) -> None:
    """The fake GitHub, the upstream, the peers and the gateway, all ready."""
    s, procs, started = lab.settings, lab.procs, lab.started
    github, upstream = lab.url("github"), lab.url("upstream")
    values = servers.nginx_values(lab.workdir, lab.ports)
    started["github"] = servers.start_peer(procs, "fake-github", lab.ports["github"])
    if s.nginx:
        started["upstream"] = servers.start_nginx(procs, s.nginx, "upstream", values, lab.ports["upstream"])
        started["nginx"] = servers.start_nginx(procs, s.nginx, "peers", values, lab.ports["auth_request"])
    else:
        started["upstream"] = servers.start_peer(procs, "upstream", lab.ports["upstream"])
    started["bare"] = servers.start_peer(procs, "bare-proxy", lab.ports["bare"], upstream)
    started["naive"] = servers.start_peer(procs, "naive-gateway", lab.ports["naive"], upstream, github)
    lab.start_gateway("gateway", "gateway", "upstream", max_concurrent_checks=s.miss_concurrency)
    lab.start_gateway("gated", "gated", "upstream", policy=servers.GATED)
    signing = {"signing_key_file": servers.signing_key(lab.workdir), "issuer": "bench"}
    lab.start_gateway("signed", "signed", "upstream", identity_token=signing)
    lab.start_gateway(
        "gated-signed", "gated_signed", "upstream", policy=servers.GATED, identity_token=signing
    )
    procs.wait_ready(started.values())


def measure_table(lab: Lab, forward_auth: str | None) -> list[Row]:
    """(a) to (f): the same load on each target; `forward_auth` says why (f) is skipped, if it is.

    The targets are loaded in turn, `rounds` times over, and each reports its median round: a machine
    whose speed drifts during the run (a shared one does) moves every target alike, not just the one
    measured while it was slow.
    """
    no_nginx = "nginx is not installed (or --no-nginx)" if not lab.settings.nginx else ""
    upstream = "nginx static" if lab.settings.nginx else "aiohttp static"
    spec = [
        ("a", f"upstream direct ({upstream})", "upstream", ["upstream"], ""),
        ("b", "bare aiohttp pass-through proxy", "bare", ["bare"], ""),
        ("c", "naive gateway (TTLCache, no single flight)", "naive", ["naive"], ""),
        ("d", "nginx auth_request + cached check-token", "auth_request", ["nginx"], no_nginx),
        ("e", "gateway, reverse proxy, cache hits", "gateway", ["gateway"], ""),
        ("f", "nginx auth_request -> gateway forward-auth", "forward_auth", ["nginx", "gateway"], no_nginx),
        ("g", "gateway, cache hits, route gated by an org and a team", "gated", ["gated"], ""),
        ("h", "gateway, cache hits, identity token signed (ES256)", "signed", ["signed"], ""),
        ("i", "gateway, cache hits, org + team route, identity token", "gated_signed", ["gated_signed"], ""),
    ]
    rows, measurable = [], []
    for key, name, port, server, skipped in spec:
        if key == "f" and forward_auth:
            skipped = skipped or forward_auth
        row = Row(key, name, lab.url(port) + "/", skipped=skipped)
        rows.append(row)
        if not row.skipped:
            status, body = _run(measure.fetch(row.url, lab.token), 30)
            if status != 200:
                row.skipped = f"a valid token got {status}: {body[:120]!r}"
        if row.skipped:
            progress(f"({key}) {name}: skipped, {row.skipped}")
        else:
            measurable.append((row, port, server))
    runs: dict[str, list[tuple[LoadResult, dict[str, float]]]] = {row.key: [] for row, _, _ in measurable}
    for turn in range(lab.settings.rounds):
        for row, port, server in measurable:
            progress(f"({row.key}) {row.name}, round {turn + 1} of {lab.settings.rounds}")
            runs[row.key].append(lab.measured(port, server, warm=turn == 0))
    for row, _, _ in measurable:
        ranked = sorted(runs[row.key], key=lambda run: run[0].rps)
        row.load, row.cpu_s = ranked[len(ranked) // 2]
        row.rounds_rps = [load.rps for load, _ in runs[row.key]]
    return rows


def measure_herds(lab: Lab, forward_auth: bool) -> dict[str, measure.Herd]:
    """One new token, `herd` concurrent requests, on each authenticating target."""
    targets = {"gateway": "gateway", "naive gateway": "naive"}
    if lab.settings.nginx:
        targets["nginx auth_request"] = "auth_request"
        if forward_auth:
            targets["nginx -> gateway forward-auth"] = "forward_auth"
    herds = {}
    for name, port in targets.items():
        progress(f"thundering herd: {name}")
        herds[name] = _run(measure.herd(lab.url(port) + "/", lab.url("github"), lab.settings.herd), 120)
    return herds


def bytes_per_identity(entries: int) -> float:
    """`bench.cachemem` in a process of its own."""
    argv = [sys.executable, "-m", "bench.cachemem", str(entries)]
    done = subprocess.run(  # noqa: S603 (our own argv)
        argv, capture_output=True, text=True, timeout=900, check=True, cwd=servers.PROJECT
    )
    return float(json.loads(done.stdout)["bytes_per_identity"])


def _answers(lab: Lab, port: str) -> None:
    status, body = _run(measure.fetch(lab.url(port) + "/", lab.token), 30)
    if status != 200:
        raise RuntimeError(f"the gateway on {port} answered {status} to a valid token: {body[:200]!r}")


def measure_idle(lab: Lab) -> measure.Idle:
    """The gateway's RSS growth while it holds `idle` keep-alive connections, each having had one
    request answered, and now silent."""
    pid, count = lab.started["gateway"].pid, lab.settings.idle

    async def held() -> measure.Idle:
        before = memory_kib(pid, "VmRSS") or 0
        async with measure.idle_clients(HOST, lab.ports["gateway"], lab.token, count) as answered:
            return measure.Idle(count, answered, before, memory_kib(pid, "VmRSS") or 0)

    return _run(held(), 300)


def measure_upload(lab: Lab) -> UploadReport:
    """The upload straight to a sink, then through a fresh gateway routed to it."""
    s, procs = lab.settings, lab.procs
    sink = lab.started["sink"] = servers.start_peer(procs, "sink", lab.ports["sink"])
    gateway = lab.start_gateway("upload-gateway", "upload_gateway", "sink", route_timeout="10m")
    try:
        procs.wait_ready([sink, gateway])
        _answers(lab, "upload_gateway")
        progress(f"upload {s.upload_bytes // MIB} MiB direct")
        direct = _run(measure.upload(lab.url("sink") + "/upload", s.upload_bytes, lab.token))
        rss_before = memory_kib(gateway.pid, "VmRSS") or 0
        reset = reset_peak_rss(gateway.pid)
        progress(f"upload {s.upload_bytes // MIB} MiB through the gateway")
        through = _run(measure.upload(lab.url("upload_gateway") + "/upload", s.upload_bytes, lab.token))
        peak = memory_kib(gateway.pid, "VmHWM") or 0
        via_nginx = None
        if s.nginx:
            progress(f"upload {s.upload_bytes // MIB} MiB through nginx as a plain proxy")
            via_nginx = _run(measure.upload(lab.url("upload_proxy") + "/upload", s.upload_bytes, lab.token))
    finally:
        procs.stop(gateway)
        procs.stop(sink)
    return UploadReport(direct, through, rss_before, peak, reset, via_nginx)


def measure_workers(lab: Lab) -> WorkersReport:
    """Cache hits on a fresh `workers: 1` gateway, then on a fresh `workers: 2` one, the same load."""
    one, cpu_one, serving_one = _workers(lab, 1)
    two, cpu_two, serving_two = _workers(lab, 2)
    return WorkersReport(one, two, serving_one, serving_two, cpu_one, cpu_two)


def _workers(lab: Lab, count: int) -> tuple[LoadResult, dict[str, float], int | None]:
    port = f"workers_{count}"
    proc = lab.start_gateway(f"gateway-workers-{count}", port, "upstream", workers=count)
    try:
        lab.procs.wait_ready([proc])
        time.sleep(0.5)  # let every worker start accepting
        _answers(lab, port)
        progress(f"workers: {count}")
        if not lab.settings.warmup:
            lab.load(port, 1)  # each worker has a cache of its own to fill
        result, cpu = lab.measured(port, [port])
        serving = serving_processes(proc.pid, lab.ports[port])
    finally:
        lab.procs.stop(proc)
    return result, {"gateway": cpu.pop("server"), **cpu}, serving


def meta(s: Settings, forward_auth: str) -> dict[str, object]:
    """Where and how this run was made."""
    cpus = os.cpu_count()
    loop = eventloop.name()
    generator = f"wrk -t1 -c{s.concurrency}" if s.wrk else f"built-in aiohttp, {s.concurrency} connections"
    upstream = f"nginx static ({_version([s.nginx, '-v'])})" if s.nginx else "aiohttp static"
    summary = (
        f"gateway benchmark{' (smoke)' if s.smoke else ''}: {cpus} CPUs, 127.0.0.1 · load: {generator},"
        f" {s.duration:g} s per target and round, {s.rounds} round{'s' if s.rounds > 1 else ''} in turn"
        f" (median shown), after {s.warmup:g} s warm-up · upstream: {upstream} · aiohttp"
        f" {aiohttp.__version__} on {loop}, one process each · fake GitHub: {GITHUB_LATENCY * 1000:.0f} ms"
        f" per check"
    )
    return {
        "summary": summary,
        "cpus": cpus,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "event_loop": loop,
        "load_generator": generator,
        "wrk": _version([s.wrk, "-v"]) if s.wrk else None,
        "upstream": upstream,
        "duration_s": s.duration,
        "warmup_s": s.warmup,
        "concurrency": s.concurrency,
        "forward_auth": forward_auth,
        "git": _version(["git", "-C", str(servers.PROJECT), "describe", "--always", "--dirty"]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "smoke": s.smoke,
    }


def _version(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    except OSError:
        return None
    line = (done.stdout or done.stderr).strip().splitlines()
    return line[0].removeprefix("nginx version: ") if line else None


def bench(lab: Lab) -> Results:
    """Every measurement of one run."""
    s = lab.settings
    progress(f"starting the servers in {lab.workdir}")
    start_servers(lab)
    present, probe = _run(measure.forward_auth_present(lab.url("gateway"), servers.CONTROL_PREFIX, lab.token))
    results = Results(meta=meta(s, probe), rows=measure_table(lab, None if present else probe))
    results.herds = measure_herds(lab, present)
    progress(f"miss-heavy: {s.misses:,} tokens")
    results.misses = _run(
        measure.misses(lab.url("gateway") + "/", lab.url("github"), s.misses, s.miss_concurrency), 900
    )
    results.misses_note = f"github.max_concurrent_checks: {s.miss_concurrency}"
    progress("(e) again, its cache now holding the miss-heavy load's identities too")
    results.hits_after_misses = lab.measured("gateway", ["gateway"])[0]
    progress(f"bytes per cached identity: {s.cache_entries:,} entries")
    results.bytes_per_identity, results.cache_entries = bytes_per_identity(s.cache_entries), s.cache_entries
    progress(f"{s.idle:,} idle keep-alive connections")
    results.idle = measure_idle(lab)
    results.upload = measure_upload(lab)
    results.workers = measure_workers(lab)
    results.notes = notes(s, present, probe)
    return results


def notes(s: Settings, forward_auth: bool, probe: str) -> list[str]:
    """What a reader of the numbers should know about this run."""
    found = []
    if not forward_auth:
        found.append(f"(f) skipped: {probe}")
    if not s.nginx:
        found.append("nginx not used: the upstream is aiohttp's, (d) and (f) are skipped")
    if not s.wrk:
        found.append(
            "wrk not used: the built-in aiohttp generator needs about a core by itself (about 5k req/s on"
            " one core), so it caps the fast targets and compresses the ratios between them"
        )
    found.append(
        "the load generator, the upstream and the servers share the machine's cores (nothing is pinned):"
        " see the CPU lines of workers: 1 and 2 for the gateway's scaling per core"
    )
    return found


def _raise(exc: BaseException) -> Any:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise exc

    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 unless a target failed (full run) or something crashed."""
    s = settings(argv)
    budget = 300 + 20 * int(s.duration)
    signal.signal(signal.SIGTERM, _raise(SystemExit(143)))
    signal.signal(signal.SIGALRM, _raise(TimeoutError(f"the benchmark took more than {budget} s")))
    signal.alarm(budget)
    try:
        with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp, Processes(Path(tmp)) as procs:
            ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
            results = bench(Lab(s, procs, Path(tmp), ports))
    except KeyboardInterrupt:
        print("bench: interrupted; every server it started is stopped", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
    found = checks(results)
    print(render(results, found, enforced=not s.smoke), flush=True)
    write_json(results, found, s.output)
    chart.draw(json.loads(s.output.read_text()), s.output.with_suffix(".svg"))
    print(f"\nwritten: {s.output} and {s.output.with_suffix('.svg')}")
    return 0 if s.smoke or all(c.passed is not False for c in found) else 1


if __name__ == "__main__":
    sys.exit(main())
