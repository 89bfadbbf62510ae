"""What one run measured, printed as one table and a few lines, judged against issue 5's targets,
and written as JSON."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .load import LoadResult
from .measure import MIB, Herd, Idle, Misses, Upload

# issue 5's targets, and issue 15's
RPS_VS_BARE = 1.5  # issue 15 (issue 5 asked 1.3x): cache hits against the bare proxy, in every round
FORWARD_AUTH_VS_NGINX = (
    0.5  # issue 15: nginx -> the gateway's forward-auth, against nginx's own cached auth_request
)
BYTES_PER_IDENTITY = 400
UPLOAD_RSS_MIB = 64
UPLOAD_VS_DIRECT = 0.5
WORKERS_SCALING = 1.6
GATED_VS_PLAIN = 0.9  # issue 11: a route gated by an org and a team costs at most 10% of cache-hit speed
UPLOAD_VS_NGINX = 0.9  # issue 15: a proxy's yardstick is another proxy, nginx with the same upload
# issues 12 and 15: signing is not paid per request, so the identity token costs little, on a plain
# route (h) and on one gated by an organisation and a team (i)
SIGNED_VS_PLAIN = 0.9


@dataclass
class Row:
    """One target of the table: loaded with the same generator and concurrency as every other."""

    key: str  # a..i
    name: str
    url: str
    load: LoadResult | None = None
    skipped: str = ""  # why there is no measurement
    cpu_s: dict[str, float] = field(default_factory=dict)  # server / upstream / load generator
    rounds_rps: list[float] = field(default_factory=list)  # every round; `load` is the median one


@dataclass
class UploadReport:
    """The large upload, straight to the sink and through the gateway."""

    direct: Upload
    gateway: Upload
    rss_before_kib: int
    peak_after_kib: int
    peak_reset: bool  # VmHWM was reset to the RSS before the upload (else: the startup peak stood)
    nginx: Upload | None = None  # through nginx as a plain proxy (proxy_request_buffering off)

    @property
    def growth_mib(self) -> float:
        """The gateway's peak RSS during the upload, above its RSS before it."""
        return (self.peak_after_kib - self.rss_before_kib) / 1024


@dataclass
class WorkersReport:
    """Cache hits on `workers: 1` and `workers: 2`, the same load on each."""

    one: LoadResult
    two: LoadResult
    serving_one: int | None  # processes accepting on the port (a supervisor holding it not counted)
    serving_two: int | None
    cpu_one: dict[str, float]
    cpu_two: dict[str, float]


@dataclass
class Results:
    """Everything one run measured."""

    meta: dict[str, object]
    rows: list[Row]
    herds: dict[str, Herd] = field(default_factory=dict)
    misses: Misses | None = None
    misses_note: str = ""
    hits_after_misses: LoadResult | None = None  # (e) again once the misses are cached too
    bytes_per_identity: float | None = None
    cache_entries: int = 0
    upload: UploadReport | None = None
    idle: Idle | None = None
    workers: WorkersReport | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Check:
    """One target: passed (True), failed (False) or not measurable in this run (None)."""

    name: str
    passed: bool | None
    detail: str

    def line(self) -> str:
        """`PASS  name: detail`"""
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]
        return f"{verdict}  {self.name}: {self.detail}"


def _row(results: Results, key: str) -> LoadResult | None:
    return next((r.load for r in results.rows if r.key == key), None)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:6.2f}" if b else f"{'-':>6}"


def table(results: Results) -> str:
    """The comparison table: requests/s, p50, p99, and each as a ratio to (b) and to (d)."""
    b, d = _row(results, "b"), _row(results, "d")
    width = max(len(r.name) for r in results.rows) + 4
    head = (
        f"{'target':<{width}} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} | {'/(b) req/s':>11} {'p50':>6}"
        f" {'p99':>6} | {'/(d) req/s':>11} {'p50':>6} {'p99':>6} | {'errors':>6} | cores: server load upstr"
    )
    lines = [head, "-" * len(head)]
    for row in results.rows:
        label = f"({row.key}) {row.name}"
        m = row.load
        if m is None:
            lines.append(f"{label:<{width}} skipped: {row.skipped}")
            continue
        ratios = [
            f"{_ratio(m.rps, ref.rps):>11} {_ratio(m.p50_ms, ref.p50_ms)} {_ratio(m.p99_ms, ref.p99_ms)}"
            if ref is not None
            else f"{'-':>11} {'-':>6} {'-':>6}"
            for ref in (b, d)
        ]
        cores = "  ".join(f"{row.cpu_s.get(k, 0.0) / m.seconds:5.2f}" for k in ("server", "load", "upstream"))
        lines.append(
            f"{label:<{width}} {m.rps:8.0f} {m.p50_ms:7.2f} {m.p99_ms:7.2f} | {ratios[0]} | {ratios[1]}"
            f" | {m.errors:6d} |        {cores}"
        )
    return "\n".join(lines)


def details(results: Results) -> str:
    """The measurements after the table, one paragraph each."""
    out = []
    if results.herds:
        herd = next(iter(results.herds.values()))
        calls = " · ".join(f"{name}: {h.check_calls}" for name, h in results.herds.items())
        statuses = " · ".join(f"{name}: {h.statuses}" for name, h in results.herds.items())
        out.append(
            f"thundering herd ({herd.requests} concurrent requests, one new token): check calls {calls}"
        )
        out.append(f"  statuses: {statuses}")
    if results.misses is not None:
        m = results.misses
        out.append(
            f"miss-heavy ({m.tokens:,} distinct valid tokens, {m.concurrency} at a time,"
            f" {results.misses_note}): {m.seconds:.2f} s, {m.rps:.0f} req/s, {m.check_calls:,} check calls,"
            f" statuses {m.statuses}"
        )
    if (after := results.hits_after_misses) is not None and (e := _row(results, "e")) is not None:
        out.append(
            f"  then (e) again, {results.misses.tokens if results.misses else 0:,} more identities cached:"
            f" {after.rps:.0f} req/s ({after.rps / e.rps:.2f}x), p50 {after.p50_ms:.2f} ms, p99"
            f" {after.p99_ms:.2f} ms ({after.p99_ms / e.p99_ms:.2f}x), {after.errors} errors"
        )
    if results.bytes_per_identity is not None:
        out.append(
            f"bytes per cached identity ({results.cache_entries:,} entries in"
            f" gateway.identity.cache.IdentityCache, tracemalloc): {results.bytes_per_identity:.0f}"
        )
    if (i := results.idle) is not None:
        out.append(
            f"{i.connections:,} idle keep-alive connections ({i.answered:,} answered 200 first): gateway RSS"
            f" {i.rss_before_kib / 1024:.0f} -> {i.rss_after_kib / 1024:.0f} MiB,"
            f" {i.kib_per_connection:.1f} KiB per connection"
        )
    if (u := results.upload) is not None:
        how = "VmHWM reset to VmRSS first" if u.peak_reset else "VmHWM after - VmRSS before"
        out.append(
            f"{u.direct.sent / MIB:,.0f} MiB upload: direct {u.direct.mib_per_s:.0f} MiB/s ·"
            f" through the gateway {u.gateway.mib_per_s:.0f} MiB/s"
            f" ({u.gateway.mib_per_s / u.direct.mib_per_s:.2f}x direct) · gateway peak RSS growth"
            f" {u.growth_mib:.1f} MiB ({how}; RSS before {u.rss_before_kib / 1024:.0f} MiB)"
            + (
                f" · through nginx as a plain proxy {u.nginx.mib_per_s:.0f} MiB/s"
                f" (gateway {u.gateway.mib_per_s / u.nginx.mib_per_s:.2f}x nginx)"
                if u.nginx is not None
                else ""
            )
        )
    if (w := results.workers) is not None:
        out.append(
            f"workers: 1 -> {w.one.rps:.0f} req/s, p99 {w.one.p99_ms:.2f} ms · workers: 2 -> {w.two.rps:.0f}"
            f" req/s, p99 {w.two.p99_ms:.2f} ms ({w.two.rps / w.one.rps:.2f}x);"
            f" processes serving the port: {w.serving_one} / {w.serving_two}"
        )
        for label, cpu, load in (("workers: 1", w.cpu_one, w.one), ("workers: 2", w.cpu_two, w.two)):
            used = ", ".join(f"{k} {v:.1f} ({v / load.seconds:.2f} cores)" for k, v in cpu.items())
            per_cpu_second = load.requests / cpu["gateway"] if cpu.get("gateway") else 0.0
            out.append(
                f"  {label}, CPU seconds in {load.seconds:.1f} s: {used};"
                f" {per_cpu_second:.0f} requests per gateway CPU-second"
            )
    out.extend(f"note: {note}" for note in results.notes)
    return "\n".join(out)


def _rounds(results: Results, key: str) -> list[float]:
    """A row's requests/s in every round (just the one measured, when the rounds were not kept)."""
    row = next((r for r in results.rows if r.key == key), None)
    if row is None or row.load is None:
        return []
    return row.rounds_rps or [row.load.rps]


def checks(results: Results) -> list[Check]:
    """Each of issues 5 and 15's targets, judged on this run's numbers."""
    found: list[Check] = []
    b, e = _row(results, "b"), _row(results, "e")
    if b is None or e is None:
        found.append(Check("cache hits vs bare proxy", None, "(b) or (e) was not measured"))
    else:
        invalid = f"; {b.errors + e.errors} error answers make it void" if b.errors or e.errors else ""
        ok = not invalid
        # round by round: each round loads (b) and (e) a few seconds apart, on the same machine
        ratios = [ei / bi for ei, bi in zip(_rounds(results, "e"), _rounds(results, "b"), strict=False) if bi]
        found.append(
            Check(
                f"cache-hit req/s >= {RPS_VS_BARE} x bare proxy, in every round",
                ok and bool(ratios) and min(ratios) >= RPS_VS_BARE,
                f"{e.rps:.0f} vs {b.rps:.0f} = {e.rps / b.rps:.2f}x (rounds: "
                + ", ".join(f"{r:.2f}x" for r in ratios)
                + f"){invalid}",
            )
        )
        found.append(
            Check(
                "cache-hit p99 <= bare proxy p99",
                ok and e.p99_ms <= b.p99_ms,
                f"{e.p99_ms:.2f} ms vs {b.p99_ms:.2f} ms{invalid}",
            )
        )
    for key, base, share, name in (
        ("g", "e", GATED_VS_PLAIN, "org + team route cache hits >= {share} x (e)"),
        ("h", "e", SIGNED_VS_PLAIN, "identity token on, cache hits >= {share} x (e)"),
        ("i", "e", SIGNED_VS_PLAIN, "org + team route with the identity token, cache hits >= {share} x (e)"),
        (
            "f",
            "d",
            FORWARD_AUTH_VS_NGINX,
            "nginx -> gateway forward-auth req/s >= {share} x nginx auth_request",
        ),
    ):
        row, against = _row(results, key), _row(results, base)
        if row is not None and against is not None:
            found.append(
                Check(
                    name.format(share=share),
                    not (against.errors or row.errors) and row.rps >= share * against.rps,
                    f"{row.rps:.0f} vs {against.rps:.0f} = {row.rps / against.rps:.2f}x",
                )
            )
    herd = results.herds.get("gateway")
    found.append(
        Check("thundering herd: exactly 1 check call", None, "not measured")
        if herd is None
        else Check(
            "thundering herd: exactly 1 check call",
            herd.check_calls == 1 and set(herd.statuses) == {200},
            f"{herd.check_calls} for {herd.requests} requests, statuses {herd.statuses}",
        )
    )
    per = results.bytes_per_identity
    found.append(
        Check(
            f"<= {BYTES_PER_IDENTITY} bytes per cached identity",
            None if per is None else per <= BYTES_PER_IDENTITY,
            "not measured" if per is None else f"{per:.0f} bytes at {results.cache_entries:,} entries",
        )
    )
    found.extend(_upload_checks(results.upload))
    found.append(_workers_check(results.workers, results.meta.get("cpus")))
    return found


def _upload_checks(u: UploadReport | None) -> list[Check]:
    rss = f"upload: peak RSS growth <= {UPLOAD_RSS_MIB} MiB"
    speed = f"upload: throughput >= {UPLOAD_VS_DIRECT} x direct"
    proxy = f"upload: throughput >= {UPLOAD_VS_NGINX} x nginx as a plain proxy"
    if u is None:
        return [Check(name, None, "not measured") for name in (rss, speed, proxy)]
    broken = [
        f"{name} answered {x.status}, received {x.received:,} of {x.sent:,} bytes"
        for name, x in (("direct", u.direct), ("gateway", u.gateway), ("nginx", u.nginx))
        if x is not None and (x.status != 200 or x.received != x.sent)
    ]
    void = "; " + "; ".join(broken) if broken else ""
    return [
        Check(rss, not broken and u.growth_mib <= UPLOAD_RSS_MIB, f"{u.growth_mib:.1f} MiB{void}"),
        Check(
            speed,
            not broken and u.gateway.mib_per_s >= UPLOAD_VS_DIRECT * u.direct.mib_per_s,
            f"{u.gateway.mib_per_s:.0f} vs {u.direct.mib_per_s:.0f} MiB/s ="
            f" {u.gateway.mib_per_s / u.direct.mib_per_s:.2f}x{void}",
        ),
        Check(proxy, None, "not measured (no nginx)")
        if u.nginx is None
        else Check(
            proxy,
            not broken and u.gateway.mib_per_s >= UPLOAD_VS_NGINX * u.nginx.mib_per_s,
            f"{u.gateway.mib_per_s:.0f} vs {u.nginx.mib_per_s:.0f} MiB/s ="
            f" {u.gateway.mib_per_s / u.nginx.mib_per_s:.2f}x{void}",
        ),
    ]


def _workers_check(w: WorkersReport | None, cpus: object) -> Check:
    name = f"workers: 2 >= {WORKERS_SCALING} x workers: 1"
    if w is None:
        return Check(name, None, "not measured")
    detail = (
        f"{w.two.rps:.0f} vs {w.one.rps:.0f} req/s = {w.two.rps / w.one.rps:.2f}x"
        f" ({w.serving_two} processes serving with workers: 2)"
    )
    if not isinstance(cpus, int) or cpus < 2:
        return Check(name, None, f"{detail}; needs 2 CPUs, this machine has {cpus}")
    errors = w.one.errors + w.two.errors
    if errors:
        return Check(name, False, f"{detail}; {errors} error answers make it void")
    return Check(name, w.two.rps >= WORKERS_SCALING * w.one.rps, detail)


def render(results: Results, found: Sequence[Check], *, enforced: bool) -> str:
    """The whole report: header, table, details, targets."""
    verdicts = "targets" if enforced else "targets (smoke run: not enforced)"
    return "\n".join(
        [
            str(results.meta["summary"]),
            "",
            table(results),
            "",
            details(results),
            "",
            f"{verdicts}:",
            *(c.line() for c in found),
        ]
    )


def _ratios(m: LoadResult, ref: LoadResult) -> dict[str, float | None]:
    return {
        k: round(getattr(m, k) / getattr(ref, k), 3) if getattr(ref, k) else None
        for k in ("rps", "p50_ms", "p99_ms")
    }


def write_json(results: Results, found: Sequence[Check], path: Path) -> None:
    """Everything, for tools: `bench/results/latest.json` by default."""
    data = dataclasses.asdict(results)
    if results.upload is not None:
        data["upload"]["growth_mib"] = round(results.upload.growth_mib, 2)
    refs = {"b": _row(results, "b"), "d": _row(results, "d")}
    for row, measured in zip(data["rows"], results.rows, strict=True):
        for key, ref in refs.items():
            row[f"vs_{key}"] = None if measured.load is None or ref is None else _ratios(measured.load, ref)
    data["targets"] = [dataclasses.asdict(c) for c in found]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
