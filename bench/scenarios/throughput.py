"""Scenario 2: throughput, no-op jobs submitted by 1..256 concurrent clients, 1 and 4 worker
processes, podq vs its peers in the same run.

podq: `clients` concurrent POST /v2/{ep}/run (aiohttp), done when GET /health's `completed`
count has grown by the number submitted. SAQ, Dramatiq, Celery, arq: the same split of submits
over `clients` concurrent clients through each library's own client API, each client then waits
for the result of every job it submitted (done = every result available). RunPod's dev server
runs one process, so it only appears in the 1-worker cells (POST /runsync: its /run does not run
jobs). Each system has its own redis-server; workers are started once per worker count.
"""

from __future__ import annotations

import importlib.util
import traceback

from bench.peers.arq_peer import ArqPeer
from bench.peers.dramatiq_peer import WORKER_TIMEOUT_MS, DramatiqPeer
from bench.peers.podq_http import PodqHttp
from bench.peers.runpod_peer import RunpodPeer
from bench.peers.saq_peer import SaqPeer
from bench.report import Chart, Row, Section
from bench.scenarios.latency import SYSTEMS

HEADLINE = (64, 4)  # (clients, workers): the cell with the target
TARGET = ">= 2,500 jobs/s"
TARGET_RATE = 2_500
ARQ_DEFAULT_JOBS = 5_000  # arq with its 0.5 s polling: the headline cell of a full run only


def plan(quick: bool) -> tuple[int, list[int], list[int], list[tuple[type, str, str]]]:
    """(jobs per cell, client counts, worker counts, systems)."""
    if quick:  # podq and the two fastest peers, small cells: the whole `make bench` < 2 min
        return 2_000, [16, 64], [1, 4], [s for s in SYSTEMS if s[0] in (PodqHttp, SaqPeer, DramatiqPeer)]
    # arq with its defaults (0.5 s polling) runs only the headline cell, below
    return 20_000, [1, 16, 64, 256], [1, 4], [s for s in SYSTEMS if s[0] is not ArqPeer]


def metric(clients: int, workers: int) -> str:
    return f"jobs/s, {clients} client{'s' * (clients > 1)}, {workers} worker{'s' * (workers > 1)}"


async def run(opts) -> Section:
    total, client_counts, worker_counts, systems = plan(opts.quick)
    rates: dict[tuple[str, int, int], float] = {}  # (system, clients, workers) -> jobs/s
    notes: list[str] = []
    names = []
    for cls, module, pip in systems:
        if importlib.util.find_spec(module) is None:
            notes.append(f"{cls.name} skipped: not installed (`pip install {pip}`, or `pip install -e '.[bench]'`)")
            continue
        names.append(cls.name)
        for workers in worker_counts:
            if cls is RunpodPeer and workers > 1:
                continue  # one process, handler in-process: no worker count to vary
            try:
                async with cls(workers=workers) as system:
                    for clients in client_counts:
                        rates[(cls.name, clients, workers)] = await system.throughput(total, clients)
            except Exception as e:  # noqa: BLE001 - one broken peer must not cost the others
                notes.append(f"{cls.name} with {workers} worker(s) failed: {e!r}\n```\n"
                             f"{traceback.format_exc()[-1200:]}\n```")
    if not opts.quick:
        notes += await arq_defaults_headline(ARQ_DEFAULT_JOBS, rates)
        if "arq (poll 0.5 s)" in {k[0] for k in rates}:
            names.append("arq (poll 0.5 s)")
    if opts.serving_peers:
        notes += serving_peers_note()
    elif opts.quick:
        notes.append("--quick: podq, SAQ and Dramatiq only (the two fastest peers in full runs), "
                     f"{total:,} jobs per cell; `make bench` without --quick runs every peer, 20,000 jobs, "
                     "1/16/64/256 clients.")

    rows = []
    for workers in worker_counts:
        for clients in client_counts:
            ours = rates.get(("podq", clients, workers))
            headline = (clients, workers) == HEADLINE
            peers = {n: rates[(n, clients, workers)] for n in names
                     if n != "podq" and (n, clients, workers) in rates}
            rows.append(Row(metric=metric(clients, workers), podq=ours, peers=peers,
                            lower_is_better=False, target=TARGET if headline else "",
                            met=(ours >= TARGET_RATE if ours is not None else False) if headline else None))
    series = {}
    for name in names:
        for workers in worker_counts:
            points = [(c, rates[(name, c, workers)]) for c in client_counts if (name, c, workers) in rates]
            if points:
                series[f"{name}, {workers} worker{'s' * (workers > 1)}"] = points
    description = (
        f"{total:,} no-op jobs per cell, split over 1-256 concurrent clients; 1 and 4 worker "
        "processes per system, each system on its own redis-server, workers started once per "
        "worker count and warmed up. Jobs/s from the first submit until every job is done.\n\n"
        "- **podq**: `podq gateway` (rate limits off) + N worker processes (`bench/handlers/noop.py`, "
        "10 jobs at a time each); clients POST `/v2/{ep}/run` (aiohttp, one connection per "
        "client); done when `/health`'s `completed` count has grown by the number submitted.\n"
        "- **RunPod dev server** (1 process, 1-worker cells only): clients POST `/runsync` "
        "(its `/run` only stores the job until `/status` is called).\n"
        "- Peers submit through their own client; each client then waits for the result of every "
        "job it submitted. **SAQ**: N `saq` processes, concurrency 10 each, `enqueue`, then a wait on "
        "SAQ's pub/sub multiplexer (subscribe, then read the job). **Dramatiq**: `--processes N --threads 10`, Redis broker "
        f"+ Results (Redis), `dramatiq_worker_timeout={WORKER_TIMEOUT_MS}` ms; clients are threads. "
        "**Celery**: prefork `-c N`, Redis broker + Redis result backend, JSON, prefetch "
        "multiplier 16; `send_task` + `get()`, clients are threads. **arq (poll 5 ms)**: N `arq` "
        "processes, max_jobs 10, `poll_delay` 5 ms in the worker and `Job.result()`. "
        f"**arq (poll 0.5 s)** (arq's defaults): the headline cell only, {ARQ_DEFAULT_JOBS:,} jobs "
        "(at ~290 jobs/s, 20,000 would take over a minute per cell)."
    )
    chart = Chart(name="throughput", title=f"throughput, {total:,} no-op jobs", kind="lines",
                  series=series, xlabel="concurrent clients", ylabel="jobs/s", logx=True)
    return Section(title="Throughput (/run + completion)", description=description, rows=rows,
                   charts=[chart] if series else [], notes=notes)


async def arq_defaults_headline(total: int, rates: dict) -> list[str]:
    clients, workers = HEADLINE
    try:
        async with ArqPeer(workers=workers) as system:
            rates[(ArqPeer.name, clients, workers)] = await system.throughput(total, clients)
    except Exception as e:  # noqa: BLE001
        return [f"{ArqPeer.name} failed: {e!r}\n```\n{traceback.format_exc()[-1200:]}\n```"]
    return []


def serving_peers_note() -> list[str]:
    missing = [(name, pip) for name, module, pip in (("Ray Serve", "ray", "'ray[serve]'"),
                                                      ("BentoML", "bentoml", "bentoml"))
               if importlib.util.find_spec(module) is None]
    notes = []
    if missing:
        notes.append(" / ".join(n for n, _ in missing) + " not installed: pip install "
                     + " ".join(p for _, p in missing))
    installed = {"Ray Serve", "BentoML"} - {n for n, _ in missing}
    if installed:
        notes.append(" / ".join(sorted(installed)) + " installed, but this scenario has no adapter "
                     "for sync serving yet: not measured.")
    return notes
