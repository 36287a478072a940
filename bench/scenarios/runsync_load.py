"""Scenario: /runsync under load, 64 concurrent clients, podq beside RunPod's dev server.

podq: `podq gateway` + 4 worker processes on the no-op handler; RunPod: its dev server (one
process, the handler in-process: no queue, no worker hop, nothing durable). Each client posts
/runsync and waits for the answer, then posts the next. The two systems take turns, `ROUNDS`
times, each round on a freshly started system, and the rows hold the median of the rounds: on
this VM the speed drifts within minutes, and alternating keeps both under the same drift.

Beside jobs/s and the latency of each call under load, the CPU each process spent per job
(utime + stime from /proc, µs) shows where the time goes: the client is the same code for both,
so the ratio of the servers' own CPU per job is the figure that does not depend on the box.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field

from bench.common import fan_out, percentile
from bench.peers.podq_http import PodqHttp
from bench.peers.runpod_peer import RunpodPeer
from bench.report import Row, Section

CLIENTS = 64
WORKERS = 4
TARGET_RATIO = 1.0  # podq's jobs/s over RunPod's dev server's, same run
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Round:
    rate: float  # jobs/s
    p50: float  # ms per call under load
    p99: float
    cpu_us: dict[str, float] = field(default_factory=dict)  # role -> µs of CPU per job


def plan(quick: bool) -> tuple[int, int]:
    """(jobs per round, rounds)."""
    return (3_000, 1) if quick else (20_000, 3)


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:  # not Linux, or the process is gone
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _roles(system) -> dict[str, list[int]]:
    """The processes of `system` by role: the server (gateway or dev server), workers, Redis."""
    pids = [p.pid for p in system.procs.procs]
    roles = {"server": pids[:1], "workers": pids[1:]}
    redis = getattr(system.redis, "proc", None) if system.redis is not None else None
    if redis is not None:
        roles["redis"] = [redis.pid]
    return roles


async def one_round(system, total: int) -> Round:
    latencies: list[float] = []

    async def call() -> None:
        t0 = time.perf_counter()
        await system.roundtrip()
        latencies.append((time.perf_counter() - t0) * 1000)

    await fan_out(min(1_000, total), CLIENTS, call)  # warm: connections, caches, JIT-less paths
    latencies.clear()
    roles = _roles(system)
    before = {role: sum(map(_cpu_seconds, pids)) for role, pids in roles.items()}
    client_before = time.process_time()
    seconds = await fan_out(total, CLIENTS, call)
    cpu = {role: (sum(map(_cpu_seconds, pids)) - before[role]) / total * 1e6
           for role, pids in roles.items()}
    cpu["client"] = (time.process_time() - client_before) / total * 1e6
    return Round(total / seconds, percentile(latencies, 50), percentile(latencies, 99), cpu)


async def run(opts) -> Section:
    total, rounds = plan(opts.quick)
    results: dict[str, list[Round]] = {"podq": [], RunpodPeer.name: []}
    notes: list[str] = []
    for _ in range(rounds):
        for name, system in (("podq", PodqHttp(workers=WORKERS)), (RunpodPeer.name, RunpodPeer())):
            async with system:
                results[name].append(await one_round(system, total))

    def med(name: str, pick) -> float | None:
        values = [pick(r) for r in results[name]]
        return statistics.median(values) if values else None

    peer = RunpodPeer.name
    rate, peer_rate = med("podq", lambda r: r.rate), med(peer, lambda r: r.rate)
    rows = [
        Row(metric=f"jobs/s, {CLIENTS} clients", podq=rate, peers={peer: peer_rate},
            lower_is_better=False, target=f">= {TARGET_RATIO:.1f}x RunPod's dev server",
            met=None if not rate or not peer_rate else rate / peer_rate >= TARGET_RATIO),
        Row(metric="call p50 under load (ms)", podq=med("podq", lambda r: r.p50),
            peers={peer: med(peer, lambda r: r.p50)}),
        Row(metric="call p99 under load (ms)", podq=med("podq", lambda r: r.p99),
            peers={peer: med(peer, lambda r: r.p99)}),
        Row(metric="server CPU per job, all processes (µs)",
            podq=med("podq", lambda r: sum(v for k, v in r.cpu_us.items() if k != "client")),
            peers={peer: med(peer, lambda r: sum(v for k, v in r.cpu_us.items() if k != "client"))}),
    ]
    for role in ("server", "workers", "redis", "client"):
        ours = med("podq", lambda r: r.cpu_us.get(role))
        theirs = med(peer, lambda r: r.cpu_us.get(role)) if role in ("server", "client") else None
        label = {"server": "gateway (podq) / dev server (RunPod)", "workers": f"{WORKERS} workers",
                 "redis": "redis-server", "client": "the load generator (same code)"}[role]
        rows.append(Row(metric=f"CPU per job: {label} (µs)", podq=ours,
                        peers={peer: theirs} if theirs is not None else {}))
    rates = ", ".join(f"{r.rate:,.0f} vs {p.rate:,.0f}" for r, p in zip(results["podq"], results[peer]))
    notes.append(f"jobs/s per round (podq vs RunPod's dev server): {rates}")
    description = (
        f"{total:,} no-op calls per round from {CLIENTS} concurrent clients (aiohttp, one "
        f"keep-alive connection each), {rounds} round(s); the systems alternate, each started "
        "afresh per round, and each row is the median of the rounds.\n\n"
        f"- **podq**: `podq gateway` (rate limits off) + {WORKERS} worker processes "
        "(`bench/handlers/noop.py`, 10 jobs at a time each), its own redis-server; "
        "POST `/v2/{ep}/runsync`: the job is queued durably, taken by a worker, and its "
        "result read back.\n"
        "- **RunPod dev server**: `runpod` package, `handler.py --rp_serve_api` (FastAPI/uvicorn; "
        "the handler runs inside the server process, nothing is queued or stored); POST "
        "`/runsync`.\n"
        "- CPU per job: utime + stime of each process from `/proc` over the measured calls, "
        "divided by the calls; the load generator's own CPU is the same code for both. Both "
        "share the machine's cores with the load generator."
    )
    return Section(title=f"/runsync under load ({CLIENTS} clients)", description=description,
                   rows=rows, notes=notes)
