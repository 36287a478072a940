"""`make bench`: every scenario against its peers in one run -> bench/results/REPORT.md + PNGs.

    .venv/bin/python -m bench.run [--quick] [--only latency,streaming] [--serving-peers] [--docker]

Each scenario is a module in bench/scenarios/ with `async def run(opts: Options) -> Section`;
it starts what it needs (its own redis-server, podq's processes, the peers) and stops it all.
A scenario that fails is reported as failed in the report, and the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT, cpu_model, machine, versions
from bench.report import Section, draw, report_markdown, section_markdown

SCENARIOS = ("latency", "throughput", "runsync_load", "streaming", "scale", "coldstart", "footprint",
             "runpod_worker", "redis_cpu", "round_trip",
             "metrics_cost", "fleet",
             "log_shipping", "batch")
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Options:
    quick: bool = False  # the whole run under 2 minutes: smaller counts, fewer clients
    serving_peers: bool = False  # also Ray Serve and BentoML (installed separately)
    docker: bool = False  # cold start in Docker too (starts a private dockerd)


async def run_one(name: str, opts: Options) -> Section:
    started = time.perf_counter()
    try:
        module = importlib.import_module(f"bench.scenarios.{name}")
        section = await module.run(opts)
    except Exception:  # one broken scenario must not cost the rest of the report
        section = Section(title=name, description="this scenario failed in this run",
                          notes=["```\n" + traceback.format_exc()[-2000:] + "\n```"])
    section.seconds = time.perf_counter() - started
    return section


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller runs: the whole report in < 2 min")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    p.add_argument("--serving-peers", action="store_true", help="add Ray Serve and BentoML if installed")
    p.add_argument("--docker", action="store_true", help="cold start in Docker too")
    p.add_argument("--out", default=str(RESULTS), help="where REPORT.md and the charts go")
    args = p.parse_args()
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    opts = Options(quick=args.quick, serving_peers=args.serving_peers, docker=args.docker)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.run " + " ".join(sys.argv[1:])
    at_start = machine()
    print(f"machine: {at_start}", flush=True)
    sections = []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ...", flush=True)
        section = asyncio.run(run_one(name, opts))
        sections.append(section)
        print(section_markdown(section), flush=True)
    drawn = [draw(c, out) for s in sections for c in s.charts]
    text = report_markdown(sections, f"{at_start}; at the end: {machine()}", command.strip(),
                           cpu_model(), versions())
    if any(d is None for d in drawn):
        text += "\n_Charts were not drawn: matplotlib is missing (`pip install -e '.[bench]'`)._\n"
    (out / "REPORT.md").write_text(text)
    print(f"wrote {out / 'REPORT.md'} and {sum(d is not None for d in drawn)} chart(s)")


if __name__ == "__main__":
    main()
