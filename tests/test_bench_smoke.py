"""The benchmark harness's own parts (bench/), fast and without load: what the full run relies on keeps
working as the gateway changes (`make bench-smoke` runs the whole benchmark in seconds)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench import cachemem, chart, load, measure, report, servers
from bench.measure import MIB, Herd, Upload
from gateway import config

WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:8080/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.50us  300.12us   1.20s    90.00%
    Req/Sec    38.12k     1.20k   40.00k    80.00%
  Latency Distribution
     50%  750.00us
     75%    1.10ms
     90%    1.50ms
     99%    2.31s
  190000 requests in 5.00s, 25.00MB read
  Non-2xx or 3xx responses: 7
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  38000.42
Transfer/sec:      5.00MB
"""


def test_wrk_output_is_read_with_its_units() -> None:
    result = load.parse_wrk(WRK_OUTPUT, cpu_s=1.5)
    assert result == load.LoadResult(
        requests=190000, errors=10, seconds=5.0, rps=38000.42, p50_ms=0.75, p99_ms=2310.0, cpu_s=1.5
    )


def test_unreadable_wrk_output_is_an_error() -> None:
    with pytest.raises(load.LoadError):
        load.parse_wrk("wrk: connection refused\n")


def test_percentiles_are_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert (load.percentile(values, 0.5), load.percentile(values, 0.99)) == (50.0, 99.0)
    assert load.percentile([], 0.99) == 0.0


async def test_the_builtin_generator_counts_requests_and_errors() -> None:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=200 if request.headers.get("Authorization") == "Bearer good1" else 401)

    app = web.Application()
    app.router.add_get("/", handle)
    async with TestServer(app) as server:
        url = str(server.make_url("/"))
        ok = await load.generate(url, headers={"Authorization": "Bearer good1"}, concurrency=4, duration=0.2)
        refused = await load.generate(url, headers={}, concurrency=2, duration=0.1)
    assert ok.requests > 0 and ok.errors == 0 and ok.p50_ms <= ok.p99_ms
    assert refused.requests > 0 and refused.errors == refused.requests


async def test_idle_clients_hold_their_connections_open_after_one_answer() -> None:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(text="yes" if request.headers.get("Authorization") == "Bearer good1" else "no")

    app = web.Application()
    app.router.add_get("/", handle)
    async with TestServer(app) as server:
        assert server.port is not None
        async with measure.idle_clients("127.0.0.1", server.port, "good1", 60) as answered:
            assert answered == 60
            open_now = (
                sum(1 for p in server.runner.server.connections)
                if server.runner and server.runner.server
                else 0
            )
        assert open_now == 60


def test_the_generated_gateway_config_is_valid(tmp_path: Path) -> None:
    github, upstream = "http://127.0.0.1:1", "http://127.0.0.1:2"
    path = tmp_path / "gateway.yaml"
    for raw in (
        servers.gateway_config(port=8080, github=github, upstream=upstream),
        servers.gateway_config(
            port=8080,
            github=github,
            upstream=upstream,
            workers=2,
            max_concurrent_checks=64,
            route_timeout="10m",
        ),
    ):
        path.write_text(yaml.safe_dump(raw))
        loaded = config.load(str(path))
        assert loaded.admin is None and loaded.rate_limit.failed_auth_per_minute == 0


@pytest.mark.parametrize("name", ["upstream", "peers"])
def test_the_nginx_templates_render_completely(tmp_path: Path, name: str) -> None:
    ports = {"upstream": 1, "github": 2, "gateway": 3, "auth_request": 4, "forward_auth": 5, "sink": 6}
    ports["upload_proxy"] = 7
    text = servers.render_nginx(
        (servers.HERE / f"nginx-{name}.conf").read_text(), servers.nginx_values(tmp_path, ports)
    )
    assert "@" not in text.replace("$bearer", "")
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx is not installed")
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    done = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_template_placeholder_without_a_value_is_an_error() -> None:
    with pytest.raises(ValueError, match="@MISSING_PORT@"):
        servers.render_nginx("listen 127.0.0.1:@MISSING_PORT@;", {})


async def test_bytes_per_identity_is_measured_through_the_real_cache() -> None:
    assert 100 < await cachemem.bytes_per_identity(500) < 10_000


def _results() -> report.Results:
    fast = load.LoadResult(requests=1, errors=0, seconds=1.0, rps=1600.0, p50_ms=1.0, p99_ms=2.0, cpu_s=0.0)
    slow = load.LoadResult(requests=1, errors=0, seconds=1.0, rps=1000.0, p50_ms=1.0, p99_ms=3.0, cpu_s=0.0)
    rows = [report.Row("b", "bare", "", load=slow), report.Row("e", "gateway", "", load=fast)]
    return report.Results(meta={"summary": "test", "cpus": 2}, rows=rows)


def test_targets_are_judged_on_the_run_numbers() -> None:
    upload = report.UploadReport(
        direct=Upload(MIB, MIB, 200, 1.0, 1.0),
        gateway=Upload(MIB, MIB, 200, 4.0, 0.25),
        rss_before_kib=0,
        peak_after_kib=1024,
        peak_reset=True,
    )
    results = _results()
    results.herds, results.bytes_per_identity, results.upload = (
        {"gateway": Herd(10, {200: 10}, 1)},
        500.0,
        upload,
    )
    verdicts = {c.name: c.passed for c in report.checks(results)}
    # the upload through nginx was not measured here: that check says so rather than pass or fail
    assert list(verdicts.values()) == [True, True, True, False, True, False, None, None]
    assert "(b) bare" in report.table(results) and "1.60" in report.table(results)


def test_cache_hits_are_judged_in_every_round() -> None:
    results = _results()
    results.rows[0].rounds_rps = [1000.0, 1000.0, 1000.0]
    results.rows[1].rounds_rps = [1600.0, 1600.0, 1450.0]  # the median passes, the third round does not
    [verdict] = [c for c in report.checks(results) if c.name.startswith("cache-hit req/s")]
    assert verdict.passed is False and "1.45x" in verdict.detail


def test_the_json_holds_the_table_with_its_ratios(tmp_path: Path) -> None:
    results = _results()
    report.write_json(results, report.checks(results), tmp_path / "out" / "latest.json")
    data = json.loads((tmp_path / "out" / "latest.json").read_text())
    assert [row["vs_b"]["rps"] for row in data["rows"]] == [1.0, 1.6]
    assert data["rows"][0]["vs_d"] is None and data["targets"][0]["passed"] is True


def test_the_chart_draws_every_measured_row(tmp_path: Path) -> None:
    results = _results()
    report.write_json(results, report.checks(results), tmp_path / "latest.json")

    assert chart.main([str(tmp_path / "latest.json")]) == 0

    svg = (tmp_path / "latest.svg").read_text()
    assert svg.startswith("<?xml") and "<svg" in svg
    for label in ("(b) bare", "(e) gateway", "1,600", "3.0"):
        assert label in svg, label
