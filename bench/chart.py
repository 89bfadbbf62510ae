"""The benchmark's table as a chart: req/s and p99 per target, side by side, from the JSON a run writes.

    python -m bench.chart [bench/results/latest.json]   # writes bench/results/latest.svg beside it

`make bench` draws it after every run (matplotlib, headless); the README shows the latest one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("svg")  # no display: this runs on servers and in CI

import matplotlib.pyplot as plt  # after choosing the backend

DEFAULT = Path(__file__).parent / "results" / "latest.json"
GATEWAY = "#2f6fbf"  # the gateway's own rows
PEER = "#9aa5b1"  # the yardsticks
GATEWAY_ROWS = frozenset("efghi")


def draw(data: Mapping[str, Any], path: Path) -> None:
    """An SVG of req/s and p99 for every measured row of a run's JSON."""
    plt.rcParams["svg.fonttype"] = "none"  # text stays text: small, searchable, selectable
    rows = [r for r in data["rows"] if r.get("load")]
    labels = [f"({r['key']}) {r['name']}" for r in rows]
    colours = [GATEWAY if r["key"] in GATEWAY_ROWS else PEER for r in rows]
    figure, (rps, p99) = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 1.6), sharey=True)
    _bars(
        rps,
        labels,
        [r["load"]["rps"] for r in rows],
        colours,
        "requests per second (more is better)",
        "{:,.0f}",
    )
    _bars(
        p99,
        labels,
        [r["load"]["p99_ms"] for r in rows],
        colours,
        "p99 latency, ms (less is better)",
        "{:.1f}",
    )
    rps.invert_yaxis()  # (a) on top, as in the table; the axes share y, so once, after the bars
    meta = data.get("meta", {})
    figure.suptitle(
        f"gateway benchmark {meta.get('time', '')[:10]} · commit {meta.get('git', '?')}",
        fontsize=11,
        x=0.01,
        ha="left",
    )
    figure.text(
        0.01, 0.005, _wrap(str(meta.get("summary", "")), 190), fontsize=7, color="#555555", va="bottom"
    )
    figure.tight_layout(rect=(0, 0.06, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="svg", metadata={"Date": None})  # no timestamp: the same run, the same file
    plt.close(figure)


def _bars(
    axes: Any, labels: Sequence[str], values: Sequence[float], colours: Sequence[str], title: str, fmt: str
) -> None:
    positions = range(len(labels))
    axes.barh(positions, values, color=colours)
    axes.set_yticks(list(positions), labels, fontsize=8)
    axes.set_title(title, fontsize=9, loc="left")
    axes.tick_params(axis="x", labelsize=7)
    axes.spines[["top", "right"]].set_visible(False)
    for y, value in zip(positions, values, strict=True):
        axes.text(value, y, " " + fmt.format(value), va="center", fontsize=7)
    axes.margins(x=0.15)


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    source = Path(args[0]) if args else DEFAULT
    target = source.with_suffix(".svg")
    draw(json.loads(source.read_text()), target)
    print(f"written: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
