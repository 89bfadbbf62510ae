"""Instructions per proxied request, counted by valgrind's callgrind: `make bench-instructions`.

    python -m bench.instructions [--requests N] [--concurrency C]

Requests per second on a shared machine drift by tens of percent between runs; the instructions a
server executes in user space for the same requests do not. This runs the bare aiohttp pass-through
proxy (b), the gateway (e, cache hits) and the gateway's forward-auth decision (f, `GET
/_gateway/auth` as nginx's auth_request sends it, cache hits) and the gateway on a route gated by an
organisation and a team with the identity token on (i, cache hits) under callgrind, one after the other,
behind the same aiohttp upstream and fake GitHub; sends each a warm-up, then N requests over C
connections; and prints the user-space instructions per request of each and their ratios. The
kernel's share (the sockets) is not counted. Under callgrind a server runs some 50 times slower:
keep N in thousands.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import yaml

from . import servers
from .measure import new_token
from .procs import Processes, free_ports

WARMUP = 200


async def send(
    url: str, token: str, count: int, concurrency: int, extra: dict[str, str] | None = None
) -> None:
    """`count` GETs (with `extra` headers) over `concurrency` keep-alive connections; each must answer
    200."""
    left = count
    headers = {"Authorization": f"Bearer {token}", **(extra or {})}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def connection() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")

        await asyncio.gather(*(connection() for _ in range(concurrency)))


def summary(dump: Path) -> int:
    """The instructions a callgrind dump counted."""
    for line in dump.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise ValueError(f"{dump} has no summary line")


def count(
    procs: Processes,
    workdir: Path,
    name: str,
    argv: Sequence[str],
    port: int,
    requests: int,
    concurrency: int,
    path: str = "/",
    extra: dict[str, str] | None = None,
) -> float:
    """Instructions per request of one server (`argv`, listening on `port`) under callgrind, for GETs
    of `path` with `extra` headers."""
    out = workdir / f"{name}.callgrind"
    proc = procs.start(
        name,
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
        port=port,
        quiet_stdout=True,
        cwd=servers.PROJECT,
    )
    procs.wait_ready([proc], timeout=180)
    url, token = servers.url(port) + path, new_token()
    asyncio.run(send(url, token, WARMUP, concurrency, extra))
    callgrind(proc.pid, "--zero")
    asyncio.run(send(url, token, requests, concurrency, extra))
    callgrind(proc.pid, "--dump")
    procs.stop(proc)
    (dump,) = workdir.glob(f"{name}.callgrind.*")  # the --dump, numbered by callgrind
    return summary(dump) / requests


def callgrind(pid: int, command: str) -> None:
    """Tell the callgrind running as `pid` to zero its counts, or dump them to a file."""
    subprocess.run(["callgrind_control", command, str(pid)], check=True, capture_output=True)  # noqa: S603,S607


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per server")
    parser.add_argument("--concurrency", type=int, default=16, help="connections")
    args = parser.parse_args(argv)
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        print("bench.instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gateway-instructions-") as tmp:
        workdir = Path(tmp)
        ports = dict(zip(("github", "upstream", "bare", "gateway"), free_ports(4), strict=True))
        with Processes(workdir) as procs:
            helpers = [
                servers.start_peer(procs, "fake-github", ports["github"]),
                servers.start_peer(procs, "upstream", ports["upstream"]),
            ]
            procs.wait_ready(helpers)
            upstream = servers.url(ports["upstream"])
            bare_argv = [sys.executable, "-m", "bench.peers", "bare-proxy", str(ports["bare"]), upstream]
            config = servers.gateway_config(
                port=ports["gateway"], github=servers.url(ports["github"]), upstream=upstream
            )
            (workdir / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            gateway_argv = [sys.executable, "-m", "gateway", "serve", "-c", str(workdir / "gateway.yaml")]
            gated = servers.gateway_config(
                port=ports["gateway"],
                github=servers.url(ports["github"]),
                upstream=upstream,
                policy=servers.GATED,
                identity_token={"signing_key_file": servers.signing_key(workdir), "issuer": "bench"},
            )
            (workdir / "gated.yaml").write_text(yaml.safe_dump(gated, sort_keys=False))
            gated_argv = [sys.executable, "-m", "gateway", "serve", "-c", str(workdir / "gated.yaml")]
            sizes = (int(args.requests), int(args.concurrency))
            bare = count(procs, workdir, "bare", bare_argv, ports["bare"], *sizes)
            gateway = count(procs, workdir, "gateway", gateway_argv, ports["gateway"], *sizes)
            original = {"X-Original-URI": "/svc/x?y=1", "X-Original-Method": "GET"}
            decision = count(
                procs,
                workdir,
                "forward-auth",
                gateway_argv,
                ports["gateway"],
                *sizes,
                path=servers.CONTROL_PREFIX + "/auth",
                extra=original,
            )
            gated_signed = count(procs, workdir, "gated-signed", gated_argv, ports["gateway"], *sizes)
    print(
        f"user-space instructions per request (callgrind, {args.requests} requests over"
        f" {args.concurrency} connections after {WARMUP} to warm up):\n"
        f"  (b) bare aiohttp pass-through proxy  {bare:10,.0f}\n"
        f"  (e) gateway, cache hits              {gateway:10,.0f}   {gateway / bare:.2f} x (b)\n"
        f"  (f) gateway forward-auth decision    {decision:10,.0f}   {decision / gateway:.2f} x (e)\n"
        f"  (i) org + team route, identity token {gated_signed:10,.0f}   {gated_signed / gateway:.2f} x (e)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
