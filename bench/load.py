"""One load generator for every target: wrk when installed, else a built-in aiohttp one.

Both keep `concurrency` connections busy for `duration` seconds with one `Authorization: Bearer`
header, and report requests/s, the median and 99th percentile latency, the responses that were not
2xx/3xx, and the CPU seconds the generator itself used. The built-in generator runs in its own
process (`python -m bench.load URL`) like wrk, so neither competes with the harness.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
from yarl import URL

from .eventloop import new_event_loop

_PROJECT = Path(__file__).resolve().parent.parent
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([\d.]+)(us|ms|s|m|h)"


class LoadError(RuntimeError):
    """The load generator failed or printed something unreadable."""


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured."""

    requests: int
    errors: int  # non-2xx/3xx answers and socket errors
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_s: float  # the load generator's own CPU time


def _to_ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(output: str, cpu_s: float = 0.0) -> LoadResult:
    """A `LoadResult` from what `wrk --latency` printed."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p50 = re.search(rf"^\s+50(?:\.0+)?%\s+{_TIME}", output, re.M)
    p99 = re.search(rf"^\s+99(?:\.0+)?%\s+{_TIME}", output, re.M)
    done = re.search(r"^\s+(\d+) requests in ([\d.]+)(us|ms|s|m|h)", output, re.M)
    if not (rps and p50 and p99 and done):
        raise LoadError(f"unreadable wrk output:\n{output}")
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors += sum(int(n) for n in m.groups())
    return LoadResult(
        requests=int(done.group(1)),
        errors=errors,
        seconds=_to_ms(done.group(2), done.group(3)) / 1000,
        rps=float(rps.group(1)),
        p50_ms=_to_ms(*p50.groups()),
        p99_ms=_to_ms(*p99.groups()),
        cpu_s=cpu_s,
    )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`-quantile (0 < q <= 1) of values sorted ascending; 0 for none."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def run(url: str, *, token: str, concurrency: int, duration: float, wrk: str | None) -> LoadResult:
    """Load `url` for `duration` seconds with `concurrency` connections (wrk if its path is given)."""
    header = f"Authorization: Bearer {token}"
    if wrk is not None:
        seconds = max(1, round(duration))  # wrk takes whole seconds
        argv = [wrk, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
        argv += ["-H", header, url]
    else:
        argv = [sys.executable, "-m", "bench.load", url, f"--concurrency={concurrency}"]
        argv += [f"--duration={duration}", f"--header={header}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(  # noqa: S603 (our own argv)
            argv, capture_output=True, text=True, timeout=duration + 60, check=False, cwd=_PROJECT
        )
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"{argv[0]} did not finish in {duration + 60:.0f} s") from exc
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise LoadError(f"{' '.join(argv[:3])}… exited with {done.returncode}:\n{done.stderr[-2000:]}")
    if wrk is not None:
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return parse_wrk(done.stdout, round(cpu, 3))
    try:
        return LoadResult(**json.loads(done.stdout))
    except (ValueError, TypeError) as exc:
        raise LoadError(f"unreadable output of the built-in load generator: {done.stdout!r}") from exc


async def generate(url: str, *, headers: dict[str, str], concurrency: int, duration: float) -> LoadResult:
    """The built-in generator: `concurrency` loops, one request at a time each, until `duration`."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
    ) as session:
        started = time.perf_counter()
        cpu_started = time.process_time()
        deadline = started + duration

        target = URL(url)

        async def loop() -> None:
            nonlocal errors
            while (sent := time.perf_counter()) < deadline:
                try:
                    async with session.get(target, headers=headers) as response:
                        await response.read()
                        failed = response.status >= 400
                except aiohttp.ClientError:
                    failed = True
                latencies.append(time.perf_counter() - sent)
                errors += failed

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    latencies.sort()
    return LoadResult(
        requests=len(latencies),
        errors=errors,
        seconds=round(seconds, 3),
        rps=round(len(latencies) / seconds, 1),
        p50_ms=round(percentile(latencies, 0.50) * 1000, 3),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 3),
        cpu_s=round(cpu, 3),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m bench.load URL`: run the built-in generator, print its `LoadResult` as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--header", action="append", default=[], help="NAME: VALUE")
    args = parser.parse_args(argv)
    headers = dict(h.split(": ", 1) for h in args.header)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        result = runner.run(
            generate(args.url, headers=headers, concurrency=args.concurrency, duration=args.duration)
        )
    sys.stdout.write(json.dumps(asdict(result)) + "\n")


if __name__ == "__main__":
    main()
