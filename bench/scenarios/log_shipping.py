"""What shipping worker logs costs a handler that prints: 100,000 lines, shipping on vs off.

Two `python -m worker tests/logs/handlers/flood.py` processes on one redis-server, one endpoint
each: one with PODQ_LOG_SHIPPING=true (the default: the tee, the buffer, the flusher on the
worker's loop) and one with PODQ_LOG_SHIPPING=false. Their stdout goes to a file, as the
process backend's does. Each round sends one job of N lines to each, in alternating order (so
neither always runs first), and takes the handler's own time for its print loop (the job's
output: time.perf_counter around the loop), then, for the shipping worker, the lines the round
added to the endpoint's drop counter (every line is shipped or counted: tests/logs/test_flood.py).
The figure is the median round; the ratio is the median of the rounds' on/off ratios.

    .venv/bin/python -m bench.run --only log_shipping [--quick] [--out DIR]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec

from bench.common import ROOT, start_redis
from bench.report import Row, Section
from serverless import keys
from serverless.model import RunRequest, Status
from serverless.queue import connect
from serverless.settings import Settings
from serverless.store import JobStore

FLOOD = ROOT / "tests" / "logs" / "handlers" / "flood.py"
ON, OFF = "shipping on", "shipping off"
MODES = {ON: "true", OFF: "false"}


def _worker(redis_url: str, mode: str, out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PODQ_LOG_SHIPPING": MODES[mode]}
    command = [sys.executable, "-m", "worker", str(FLOOD), "--endpoint", _endpoint(mode),
               "--redis", redis_url, "--worker-id", f"bench-{MODES[mode]}"]
    with out.open("wb") as stdout:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=stdout, stderr=subprocess.STDOUT)


def _endpoint(mode: str) -> str:
    return f"logs-{MODES[mode]}"


async def _ready(store: JobStore, endpoints: list[str]) -> None:
    async with asyncio.timeout(60):
        while not all([await store.workers(ep) for ep in endpoints]):
            await asyncio.sleep(0.1)


async def _dropped(store: JobStore, endpoint: str) -> int:
    return int(await store.redis.hget(keys.stats(endpoint), keys.LOG_LINES_DROPPED) or 0)


async def _one(store: JobStore, mode: str, lines: int) -> tuple[float, int]:
    """The handler's seconds for `lines` prints, and the lines dropped meanwhile."""
    endpoint = _endpoint(mode)
    before = await _dropped(store, endpoint)
    job = RunRequest(input=msgspec.Raw(msgspec.json.encode({"lines": lines})))
    done = await store.wait((await store.submit(endpoint, job)).id, 300)
    assert done.status is Status.COMPLETED, done.error
    await asyncio.sleep(0.5)  # the flusher sends the last batch and the drop count
    return msgspec.json.decode(done.output)["seconds"], await _dropped(store, endpoint) - before


async def run(opts) -> Section:
    lines, rounds = (20_000, 3) if opts.quick else (100_000, 7)
    server = start_redis()
    procs: list[subprocess.Popen[bytes]] = []
    store = JobStore(await connect(server.url), Settings(redis_url=server.url))
    try:
        with tempfile.TemporaryDirectory(prefix="podq-bench-logs-") as tmp:
            procs = [_worker(server.url, mode, Path(tmp) / f"{MODES[mode]}.log") for mode in MODES]
            await _ready(store, [_endpoint(m) for m in MODES])
            await _one(store, ON, lines // 10)  # warm-up: imports, first connections
            await _one(store, OFF, lines // 10)
            seconds: dict[str, list[float]] = {ON: [], OFF: []}
            dropped: list[int] = []
            for i in range(rounds):
                for mode in ((ON, OFF) if i % 2 == 0 else (OFF, ON)):
                    took, lost = await _one(store, mode, lines)
                    seconds[mode].append(took)
                    if mode == ON:
                        dropped.append(lost)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        await store.close()
        server.stop()
    return _section(seconds, dropped, lines, rounds)


def _section(seconds: dict[str, list[float]], dropped: list[int], lines: int, rounds: int) -> Section:
    on, off = statistics.median(seconds[ON]), statistics.median(seconds[OFF])
    ratio = statistics.median(a / b for a, b in zip(seconds[ON], seconds[OFF]))
    lost = statistics.median(dropped)
    print(f"{lines:,} prints: shipping off {off * 1000:.0f} ms, on {on * 1000:.0f} ms, on/off "
          f"{ratio:.2f}x; dropped {lost:,.0f} of {lines:,} (median round)", flush=True)
    rows = [Row(metric=f"handler time for {lines:,} prints, {OFF} (ms, median round)", podq=off * 1000),
            Row(metric=f"handler time for {lines:,} prints, {ON} (ms, median round)", podq=on * 1000),
            Row(metric="handler time, on / off (median of the rounds' ratios)", podq=ratio),
            Row(metric=f"lines dropped of {lines:,}, {ON} (median round)", podq=lost)]
    description = (
        f"Two podq workers (`python -m worker tests/logs/handlers/flood.py`) on one redis-server, "
        f"stdout to a file, PODQ_LOG_SHIPPING=true and =false, defaults otherwise (buffer "
        f"10,000 lines, flush every 100 ms or 500 lines, stream MAXLEN ~ 10,000). {rounds} rounds, "
        f"each one job of {lines:,} `print` calls per worker in alternating order; the time is "
        "the handler's own (perf_counter around its loop); dropped = the round's increase of the "
        "endpoint's `log_lines_dropped` counter.")
    notes = [f"per round ms, {mode}: " + ", ".join(f"{s * 1000:.0f}" for s in seconds[mode])
             for mode in (OFF, ON)]
    notes.append("per round lines dropped, shipping on: " + ", ".join(f"{d:,}" for d in dropped))
    return Section(title="Log shipping cost (a handler printing fast, shipping on and off)",
                   description=description, rows=rows, notes=notes)
