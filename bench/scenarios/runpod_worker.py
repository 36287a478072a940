"""Scenario 7: an unmodified RunPod SDK worker served by podq, beside podq's own runtime and
RunPod's dev server, in the same run.

Every system gets the same no-op handler and the same clients. podq and the RunPod workers on
podq are driven through podq's gateway exactly as in scenarios 1 and 2: POST /v2/{ep}/runsync,
sequential, for latency; `clients` concurrent POST /v2/{ep}/run, done when /health's `completed`
count has grown by the number submitted, for throughput. RunPod's dev server has no queue: POST
/runsync for both. Only the worker side differs:
- podq: `python -m worker bench/handlers/noop.py` (10 jobs at a time per process);
- RunPod worker c=1 on podq: `python bench/handlers/runpod_noop.py` (`runpod.serverless.start`,
  nothing else) with the RUNPOD_* environment from `serverless.runpod_protocol.worker_env`;
- RunPod worker c=8 on podq: the same with `concurrency_modifier` -> 8
  (bench/handlers/runpod_concurrent_noop.py).

The SDK's own take loop sets the pace: while a worker holds as many jobs as its concurrency it
sleeps 1 s before it asks again, and its job runner sleeps 0.1 s whenever it has nothing to run.
So a concurrency-1 worker runs at most ~1 job/s and a concurrency-8 one ~8 jobs/s: counts are
sized to that (a few seconds per cell), and --quick measures 1 worker process only.
"""

from __future__ import annotations

import importlib.util
import traceback

from bench.common import percentile
from bench.peers.podq_http import PodqHttp
from bench.peers.podq_runpod_worker import PING_MS, PodqRunpodWorker, PodqRunpodWorkerConcurrent
from bench.peers.runpod_peer import RunpodPeer
from bench.report import Chart, Row, Section

# (adapter, the module it needs, the pip line that provides it)
SYSTEMS = [
    (PodqHttp, "serverless", ""),
    (RunpodPeer, "runpod", "runpod"),
    (PodqRunpodWorker, "runpod", "runpod"),
    (PodqRunpodWorkerConcurrent, "runpod", "runpod"),
]
CLIENTS = 64
SDK = (PodqRunpodWorker, PodqRunpodWorkerConcurrent)


def worker_counts(cls: type, quick: bool) -> list[int]:
    if cls is RunpodPeer:
        return [1]  # one process, the handler in-process: no worker count to vary
    return [1] if quick else [1, 4]


def latency_counts(cls: type, quick: bool) -> tuple[int, int]:
    """(measured calls, warm-up calls): a concurrency-1 SDK worker costs ~1 s a call."""
    if cls is PodqRunpodWorker:
        return (4, 1) if quick else (20, 2)
    if cls is PodqRunpodWorkerConcurrent:
        return (30, 5) if quick else (200, 20)
    return (100, 20) if quick else (500, 50)


def jobs(cls: type, workers: int, quick: bool) -> int:
    """Jobs in a throughput cell: ~6 s of work at the SDK's pace (~concurrency jobs/s per
    worker) in --quick, ~30 s in full runs; podq and the dev server as in scenario 2."""
    if cls in SDK:
        per_slot = 6 if quick else 30
        return per_slot * cls.concurrency * workers
    return 2_000 if quick else 20_000


def metric(workers: int) -> str:
    return f"jobs/s, {CLIENTS} clients, {workers} worker{'s' * (workers > 1)}"


async def run(opts) -> Section:
    samples: dict[str, list[float]] = {}
    rates: dict[tuple[str, int], float] = {}  # (system, workers) -> jobs/s
    sizes: dict[tuple[str, int], int] = {}
    notes: list[str] = []
    for cls, module, pip in SYSTEMS:
        if importlib.util.find_spec(module) is None:
            notes.append(f"{cls.name} skipped: not installed (`pip install {pip}`, or `pip install -e '.[bench]'`)")
            continue
        for workers in worker_counts(cls, opts.quick):
            try:
                async with cls(workers=workers) as system:
                    if workers == 1:
                        count, warmup = latency_counts(cls, opts.quick)
                        samples[cls.name] = await system.latency(count, warmup)
                    total = jobs(cls, workers, opts.quick)
                    rates[(cls.name, workers)] = await system.throughput(total, CLIENTS)
                    sizes[(cls.name, workers)] = total
            except Exception as e:  # noqa: BLE001 - one broken peer must not cost the others
                notes.append(f"{cls.name} with {workers} worker(s) failed: {e!r}\n```\n"
                             f"{traceback.format_exc()[-1200:]}\n```")

    names = [cls.name for cls, _, _ in SYSTEMS if cls is not PodqHttp]
    rows = []
    for pct in (50, 90):
        rows.append(Row(
            metric=f"run_sync p{pct} (ms), 1 worker process",
            podq=percentile(samples["podq"], pct) if "podq" in samples else None,
            peers={n: percentile(samples[n], pct) for n in names if n in samples},
        ))
    for workers in ([1] if opts.quick else [1, 4]):
        rows.append(Row(
            metric=metric(workers), podq=rates.get(("podq", workers)),
            peers={n: rates[(n, workers)] for n in names if (n, workers) in rates},
            lower_is_better=False,
        ))
    notes += sdk_notes(samples, rates)
    if opts.quick:
        notes.append("--quick: 1 worker process per system only, fewer calls and jobs; the full "
                     "run adds the 4-worker cell.")

    counts = "; ".join(f"{name}: {len(s)} calls" for name, s in samples.items())
    cells = "; ".join(f"{name} x{w}: {n:,} jobs" for (name, w), n in sizes.items())
    description = (
        "An unmodified RunPod worker (`runpod.serverless.start`, runpod 1.12) taking jobs from podq "
        "through the gateway's RunPod worker routes (job-take, job-take-batch, job-done, ping, "
        "job-stop), beside podq's own worker runtime and RunPod's dev server, with the same no-op "
        "handler and the same clients. Each system has its own redis-server.\n\n"
        "- **podq**: `podq gateway` (rate limits off) + N `python -m worker bench/handlers/noop.py` "
        "(10 jobs at a time each).\n"
        "- **RunPod worker c=1 on podq**: the same gateway (`PODQ_RUNPOD_PING_MS="
        f"{PING_MS}`) + N processes running `bench/handlers/runpod_noop.py` (the file the dev "
        "server runs: it only calls `runpod.serverless.start`), each in its own session with a "
        "fresh HOME and working directory, the environment from "
        "`serverless.runpod_protocol.worker_env` plus `RUNPOD_SKIP_GPU_CHECK=true` and "
        "`RUNPOD_LOG_LEVEL=ERROR` (as a template env).\n"
        "- **RunPod worker c=8 on podq**: the same with `concurrency_modifier` returning 8 "
        "(`bench/handlers/runpod_concurrent_noop.py`): the SDK then takes with job-take-batch.\n"
        "- **RunPod dev server**: `runpod_noop.py --rp_serve_api`, handler in the server process, "
        "no queue; POST `/runsync` for both measurements (its `/run` does not run jobs).\n\n"
        "Latency: sequential `/runsync` calls through 1 worker process after a warm-up. "
        f"Throughput: {CLIENTS} concurrent clients; podq and the SDK workers: POST `/run`, done "
        "when `/health`'s `completed` count has grown by the number submitted. "
        f"Sizes: {counts}; {cells}."
    )
    chart = Chart(name="runpod_worker_latency_cdf",
                  title="run_sync latency: podq's worker vs an unmodified RunPod worker on podq",
                  kind="cdf", series=samples, xlabel="latency (ms, log scale)")
    return Section(title="Unmodified RunPod workers on podq", description=description,
                   rows=rows, charts=[chart] if samples else [], notes=notes)


def sdk_notes(samples: dict[str, list[float]], rates: dict[tuple[str, int], float]) -> list[str]:
    """What the SDK's loop explains, with this run's figures."""
    notes = []
    c1, c8, dev = PodqRunpodWorker.name, PodqRunpodWorkerConcurrent.name, RunpodPeer.name
    if c1 in samples:
        notes.append(
            f"{c1}: p50 {percentile(samples[c1], 50):,.0f} ms. The SDK's take loop "
            "(`JobScaler.get_jobs`, runpod/serverless/modules/rp_scale.py) sleeps 1 s whenever the "
            "worker holds as many jobs as its concurrency; at concurrency 1 that is right after "
            "every take, so the next call waits for that sleep to end: ~1 s a call, and at most "
            "~1 job/s per worker process whatever the server does. RunPod's cloud runs the same loop."
        )
    if c8 in samples:
        notes.append(
            f"{c8}: p50 {percentile(samples[c8], 50):,.0f} ms. With free slots the SDK keeps a "
            "take open, so a call is handed over at once; it then waits for the SDK's job runner "
            "(`JobScaler.run_jobs`), which sleeps 0.1 s whenever it has nothing to run: it starts "
            "that sleep as the previous call's job ends, and the next sequential call arrives a "
            "few ms later, so nearly all of it is waited out. Under load a take-batch fills all 8 "
            "slots and the 1 s sleep follows: ~8 jobs/s per process."
        )
    for workers in (1, 4):
        for name, slots in ((c1, 1), (c8, 8)):
            rate = rates.get((name, workers))
            if rate is not None:
                notes.append(f"{name}, {workers} worker(s): {rate:,.2f} jobs/s = "
                             f"{rate / (slots * workers):.2f} jobs/s per job slot (the SDK loop's "
                             "ceiling for short jobs: ~1 job/s per slot).")
    if dev in samples:
        for name in (c1, c8):
            if name in samples:
                notes.append(f"{name} vs {dev}, run_sync p50: "
                             f"{percentile(samples[name], 50) / percentile(samples[dev], 50):,.0f}x "
                             "slower (the dev server has no queue and no take loop).")
    return notes
