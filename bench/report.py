"""What a benchmark scenario hands back, and how `make bench` turns it into REPORT.md and charts.

A scenario (bench/scenarios/*.py) returns one `Section`: rows of figures (podq's and each peer's
from the same run) and, optionally, charts. This module renders them; it measures nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Row:
    """One metric: podq's figure, each peer's figure from the same run, and the target if any."""

    metric: str  # "run_sync p50 (ms)": the unit goes in the name
    podq: float | None
    peers: dict[str, float | None] = field(default_factory=dict)
    lower_is_better: bool = True
    target: str = ""  # "<= 1.5 ms"; '' when the issue sets none
    met: bool | None = None  # whether podq's figure meets the target (None: no target)


@dataclass
class Chart:
    """A PNG to draw: 'cdf' (series of latency samples) or 'lines' (series of (x, y) points)."""

    name: str  # file stem: bench/results/<name>.png
    title: str
    kind: str  # "cdf" | "lines"
    series: dict[str, list[float]] | dict[str, list[tuple[float, float]]]
    xlabel: str = ""
    ylabel: str = ""
    logx: bool = False


@dataclass
class Section:
    title: str
    description: str  # how it was measured: sizes, clients, workers, settings of each peer
    rows: list[Row] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # peers skipped and why, caveats
    seconds: float = 0.0  # filled in by the runner


def ratio(row: Row, peer: str) -> float | None:
    """How many times better podq is than `peer` on this row (>1: podq ahead)."""
    ours, theirs = row.podq, row.peers.get(peer)
    if not ours or not theirs or math.isnan(ours) or math.isnan(theirs):
        return None
    return theirs / ours if row.lower_is_better else ours / theirs


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:,.2f}"


def section_markdown(section: Section) -> str:
    peers: list[str] = []
    for row in section.rows:
        peers += [p for p in row.peers if p not in peers]
    columns = ["metric", "podq"] + [c for p in peers for c in (p, f"podq vs {p}")] + ["target"]
    head = "| " + " | ".join(columns) + " |"
    lines = [f"## {section.title}", "", section.description, ""]
    if section.rows:
        lines += [head, "|---|---:|" + "---:|---:|" * len(peers) + "---|"]
        for row in section.rows:
            cells = [row.metric, _fmt(row.podq)]
            for p in peers:
                r = ratio(row, p)
                cells += [_fmt(row.peers.get(p)), "" if r is None else f"{r:.2f}x"]
            verdict = "" if row.met is None else (" (met)" if row.met else " (MISSED)")
            cells.append(row.target + verdict)
            lines.append("| " + " | ".join(cells) + " |")
        if peers:
            lines.append("")
            lines.append("Ratios: above 1.00x podq is ahead (peer time / podq time, podq rate / peer rate).")
    for chart in section.charts:
        lines += ["", f"![{chart.title}]({chart.name}.png)"]
    if section.notes:
        lines += [""] + [f"- {n}" for n in section.notes]
    lines += ["", f"_took {section.seconds:.0f} s_", ""]
    return "\n".join(lines)


def report_markdown(sections: Sequence[Section], machine: str, command: str, cpu: str = "",
                    versions: str = "") -> str:
    missed = [(s.title, r.metric) for s in sections for r in s.rows if r.met is False]
    facts = [f"Command: `{command}`", f"Machine: {machine}",
             *([f"CPU: {cpu}"] if cpu else []), *([f"Versions: {versions}"] if versions else [])]
    head = [
        "# podq benchmark report", "",
        "  \n".join(facts), "",  # two trailing spaces: a line break in markdown
        "Every figure in a row comes from the same run on the same machine; only ratios within a",
        "run are comparable (this VM's CPU speed drifts run to run).", "",
    ]
    if missed:
        head += ["Targets missed in this run: " + "; ".join(f"{t}: {m}" for t, m in missed), ""]
    return "\n".join(head + [section_markdown(s) for s in sections])


def draw(chart: Chart, out_dir: Path) -> Path | None:
    """Write the chart as a PNG; None when matplotlib is not installed (`pip install '.[bench]'`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # 20 distinct colours, not 10
    for label, values in chart.series.items():
        if not values:
            continue
        if chart.kind == "cdf":
            xs = sorted(values)  # type: ignore[type-var]
            ys = [(i + 1) / len(xs) * 100 for i in range(len(xs))]
            ax.step([xs[0], *xs], [0.0, *ys], where="post", label=label)
        else:
            xs, ys = zip(*values)  # type: ignore[misc]
            ax.plot(xs, ys, marker="o", label=label)
    if chart.kind == "cdf":
        ax.set_ylabel(chart.ylabel or "percentile")
        ax.set_xscale("log")
    else:
        ax.set_ylabel(chart.ylabel)
        if chart.logx:
            ax.set_xscale("log", base=2)
    ax.set_xlabel(chart.xlabel)
    ax.set_title(chart.title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path = out_dir / f"{chart.name}.png"
    fig.savefig(path)
    plt.close(fig)
    return path
