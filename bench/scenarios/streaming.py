"""Streaming: how fast a chunk a handler yields reaches the client, and how many one job can push.

podq: `podq gateway` (rate limits off) + one worker process on bench/handlers/stream_chunks.py,
on a private redis-server. Peer: RunPod's local dev server (runpod 1.12, `--rp_serve_api`) on the
same generator (bench/handlers/runpod_stream.py).

(a) yield -> client latency: a job yields chunks stamped with time.time(), `gap` apart; the SSE
    client (GET /v2/{ep}/stream/{id}, Accept: text/event-stream) subtracts on arrival.
(b) chunks/s of ONE job yielding small chunks (ints) as fast as it can: at the SSE client, from
    the first chunk to the last, and from submit to the last; also through RunPod's polling
    contract (POST /stream/{id} in a tight loop until an empty stream with a terminal status).
(c) fan-out: 100 / 1,000 / 10,000 SSE streams open on one gateway (100 / 1,000 with --quick),
    one chunk written to every stream's job at once, publish -> client p50/p99/max; the
    gateway's RSS per 1,000 open streams (bench/sse_fanout.py: clients in their own process).

This module also holds the podq process helpers the scale and footprint scenarios use.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import aiohttp

from bench import sse_fanout
from bench.common import percentile, spawn, start_redis, stop, wait_http
from bench.report import Chart, Row, Section
from serverless.redis_server import free_port

KEY = "bench-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SSE = {"Accept": "text/event-stream"}
EP = "stream"
RUNPOD = "RunPod dev server"
WAIT = 0.2  # s the handler sleeps before its first chunk, so the client is connected by then


# ---- helpers shared with scale.py and footprint.py ----------------------------------------

def podq_env(redis_url: str) -> dict[str, str]:
    return {"PODQ_REDIS_URL": redis_url, "PODQ_API_KEY": KEY, "PODQ_RATE_LIMITS": "false"}


def spawn_gateway(redis_url: str, port: int) -> subprocess.Popen[bytes]:
    return spawn([sys.executable, "-m", "serverless.cli", "gateway", "--port", str(port)],
                 podq_env(redis_url))


def spawn_worker(redis_url: str, handler: str, endpoint: str, worker_id: str,
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return spawn([sys.executable, "-m", "serverless.cli", "worker", f"bench/handlers/{handler}",
                  "--endpoint", endpoint, "--worker-id", worker_id],
                 {**podq_env(redis_url), **(extra_env or {})})


async def wait_workers(s: aiohttp.ClientSession, base: str, endpoint: str, count: int,
                       timeout: float = 30) -> None:
    """Until /health counts `count` idle or running workers on the endpoint."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with s.get(f"{base}/{endpoint}/health") as r:
            workers = (await r.json())["workers"]
        if workers["idle"] + workers["running"] >= count:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{count} worker(s) of {endpoint} did not register in {timeout:.0f} s")


async def submit(s: aiohttp.ClientSession, url: str, job_input: dict) -> str:
    async with s.post(url, json={"input": job_input}) as r:
        body = await r.json()
        if r.status != 200:
            raise RuntimeError(f"POST {url}: {r.status} {body}")
        return body["id"]


# ---- podq --------------------------------------------------------------------------------

async def sse_latency(s: aiohttp.ClientSession, base: str, n: int,
                      gap: float) -> tuple[list[float], float]:
    """yield -> SSE client, ms, for each of `n` stamped chunks; and the ms from the job's end
    (its last yield + `gap`, the handler's last sleep) to the final `event: status`."""
    job_id = await submit(s, f"{base}/{EP}/run", {"n": n, "gap": gap, "wait": WAIT})
    samples: list[float] = []
    last_t, end_ms = 0.0, float("nan")
    async with s.get(f"{base}/{EP}/stream/{job_id}", headers=SSE) as r:
        async for raw in r.content:
            arrived = time.time()
            if raw.startswith(b"data:"):
                data = json.loads(raw[5:])
                if isinstance(data.get("output"), dict) and "t" in data["output"]:
                    last_t = data["output"]["t"]
                    samples.append((arrived - last_t) * 1000)
                elif data.get("status") == "COMPLETED":
                    end_ms = (arrived - last_t - gap) * 1000
    if len(samples) != n:
        raise RuntimeError(f"SSE latency: got {len(samples)} of {n} chunks")
    return samples, end_ms


async def sse_rate(s: aiohttp.ClientSession, base: str, n: int) -> tuple[float, float]:
    """One job of `n` chunks over SSE: (chunks/s first -> last chunk, chunks/s submit -> last).

    The handler sleeps WAIT s before its first chunk so the stream is open by then; that sleep
    is taken out of the submit -> last figure.
    """
    t_submit = time.perf_counter()
    job_id = await submit(s, f"{base}/{EP}/run", {"n": n, "wait": WAIT})
    count, first, last, status = 0, 0.0, 0.0, b""
    pending = b""
    async with s.get(f"{base}/{EP}/stream/{job_id}", headers=SSE) as r:
        async for data in r.content.iter_any():
            now = time.perf_counter()
            events = (pending + data).split(b"\n\n")
            pending = events.pop()
            got = 0
            for event in events:
                if event.startswith(b"id: "):
                    got += 1
                elif event.startswith(b"event: status"):
                    status = event
            if got:
                first = first or now
                last = now
                count += got
    if count != n or b'"COMPLETED"' not in status:
        raise RuntimeError(f"SSE rate: {count} of {n} chunks, final event {status[:200]!r}")
    return rates(n, first, last, t_submit)


def rates(n: int, first: float, last: float, t_submit: float) -> tuple[float, float]:
    first_last = (n - 1) / (last - first) if last > first else float("nan")
    return first_last, n / (last - t_submit - WAIT)


async def polling_rate(s: aiohttp.ClientSession, base: str, n: int) -> tuple[float, float]:
    """The same through RunPod's polling contract: POST /stream/{id} until empty and terminal."""
    t_submit = time.perf_counter()
    job_id = await submit(s, f"{base}/{EP}/run", {"n": n, "wait": WAIT})
    count, first, last = 0, 0.0, 0.0
    while True:
        async with s.post(f"{base}/{EP}/stream/{job_id}") as r:
            body = await r.json()
        now = time.perf_counter()
        if body["stream"]:
            first = first or now
            last = now
            count += len(body["stream"])
        elif body["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
            break
    if count != n or body["status"] != "COMPLETED":
        raise RuntimeError(f"polling /stream: {count} of {n} chunks, status {body['status']}")
    return rates(n, first, last, t_submit)


async def bench_podq(n_lat: int, gap: float, n_rate: int) -> dict:
    redis = start_redis()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port = free_port()
        procs.append(spawn_gateway(redis.url, port))
        procs.append(spawn_worker(redis.url, "stream_chunks.py", EP, f"{EP}-0"))
        base = f"http://127.0.0.1:{port}/v2"
        await wait_http(f"http://127.0.0.1:{port}/healthz", procs=procs)
        async with aiohttp.ClientSession(headers=AUTH) as s:
            await wait_workers(s, base, EP, 1)
            await sse_latency(s, base, 20, 0.001)  # warm-up
            await sse_rate(s, base, 1000)
            lat, end_ms = await sse_latency(s, base, n_lat, gap)
            sse_first_last, sse_e2e = await sse_rate(s, base, n_rate)
            poll_first_last, poll_e2e = await polling_rate(s, base, n_rate)
        return {"lat": lat, "end": end_ms, "sse": sse_first_last, "sse_e2e": sse_e2e,
                "poll": poll_first_last, "poll_e2e": poll_e2e}
    finally:
        stop(procs)
        redis.stop()


# ---- RunPod's dev server -----------------------------------------------------------------

async def bench_runpod(n_lat: int, gap: float, n_rate: int) -> dict:
    """Its /stream runs the whole generator inside the request and answers once, at the end."""
    port = free_port()
    procs = [spawn([sys.executable, "bench/handlers/runpod_stream.py", "--rp_serve_api",
                    "--rp_api_port", str(port), "--rp_log_level", "ERROR"])]
    root = f"http://localhost:{port}"
    try:
        await wait_http(f"{root}/", procs=procs)
        async with aiohttp.ClientSession() as s:
            async def stream(job_input: dict) -> tuple[list, float, float]:
                t_submit = time.perf_counter()
                job_id = await submit(s, f"{root}/run", job_input)
                async with s.post(f"{root}/stream/{job_id}") as r:
                    body = await r.json()
                if body.get("status") != "COMPLETED":
                    raise RuntimeError(f"RunPod /stream: {body}")
                return body["stream"], time.time(), time.perf_counter() - t_submit

            await stream({"n": 20, "gap": 0.001})  # warm-up
            items, arrived, _ = await stream({"n": n_lat, "gap": gap, "wait": WAIT})
            lat = [(arrived - item["output"]["t"]) * 1000 for item in items]
            items, _, elapsed = await stream({"n": n_rate, "wait": WAIT})
            if len(items) != n_rate or len(lat) != n_lat:
                raise RuntimeError(f"RunPod /stream: {len(items)} of {n_rate} chunks")
        return {"lat": lat, "e2e": n_rate / (elapsed - WAIT)}
    finally:
        stop(procs)


async def run(opts) -> Section:
    n_lat, gap = (200, 0.005) if opts.quick else (1000, 0.005)
    n_rate = 20_000 if opts.quick else 100_000
    podq = await bench_podq(n_lat, gap, n_rate)
    notes = []
    try:
        rp = await bench_runpod(n_lat, gap, n_rate)
    except Exception as e:  # the peer failing must not cost podq's figures
        rp = {"lat": [], "e2e": None}
        notes.append(f"RunPod's dev server failed in this run: {e!r}")
    notes.append(
        "RunPod's dev server (runpod 1.12, rp_fastapi.py `_sim_stream`) cannot stream: POST "
        "/stream/{id} runs the whole generator inside the request and answers once with every "
        "chunk, so a chunk's latency there is the time until the job ends, and a first -> last "
        "chunk rate does not exist (all chunks arrive in one response). It has no SSE route.")
    notes.append("Job end -> final status event: the finishing script publishes the job id on its "
                 "endpoint's done channel, and the gateway's SSE stream re-reads the status then.")
    notes.append("podq's polling figures come from a client calling POST /stream/{id} in a tight "
                 "loop (RunPod's own client polls once a second).")
    lat = podq["lat"]
    rp_lat = rp["lat"]
    p50 = percentile(lat, 50)
    rows = [
        Row("chunk latency, yield -> SSE client, p50 (ms)", p50,
            {RUNPOD: percentile(rp_lat, 50) if rp_lat else None}, target="<= 2 ms", met=p50 <= 2),
        Row("chunk latency, yield -> SSE client, p99 (ms)", percentile(lat, 99),
            {RUNPOD: percentile(rp_lat, 99) if rp_lat else None}),
        Row("job end -> final SSE `event: status` at client (ms)", podq["end"]),
        Row(f"one job, {n_rate:,} chunks: chunks/s at SSE client, first -> last chunk",
            podq["sse"], lower_is_better=False, target=">= 20,000 chunks/s",
            met=podq["sse"] >= 20_000),
        Row(f"one job, {n_rate:,} chunks: chunks/s, submit -> last chunk (SSE)", podq["sse_e2e"],
            {RUNPOD: rp["e2e"]}, lower_is_better=False),
        Row(f"one job, {n_rate:,} chunks: chunks/s via polling /stream, first -> last chunk",
            podq["poll"], lower_is_better=False),
        Row(f"one job, {n_rate:,} chunks: chunks/s via polling /stream, submit -> last chunk",
            podq["poll_e2e"], {RUNPOD: rp["e2e"]}, lower_is_better=False),
    ]
    series = {"podq (SSE)": lat}
    if rp_lat:
        series[f"{RUNPOD} (/stream, answers at job end)"] = rp_lat
    chart = Chart(name="streaming_chunk_latency", title="Chunk latency, yield -> client",
                  kind="cdf", series=series, xlabel="ms (log scale)")
    description = (
        f"podq: `podq gateway` (rate limits off) and one worker process on a generator handler "
        f"(bench/handlers/stream_chunks.py), private redis-server. Latency: one job yields "
        f"{n_lat:,} chunks stamped with time.time(), {gap * 1000:.0f} ms apart; the client "
        f"(aiohttp, GET /v2/{{ep}}/stream/{{id}} with Accept: text/event-stream) subtracts on "
        f"arrival. Rate: one job yields {n_rate:,} ints as fast as its generator runs; counted "
        f"at the client (submit -> last leaves out the {WAIT:.1f} s the handler sleeps before its "
        f"first chunk, so the client is connected first). Peer: RunPod's dev server (`--rp_serve_api`, one process) on the same "
        f"generator (bench/handlers/runpod_stream.py), POST /run then POST /stream/{{id}}.")
    fan_rows, fan_chart, fan_notes = await fanout_figures(opts)
    return Section(title="Streaming", description=description, rows=rows + fan_rows,
                   charts=[chart, fan_chart], notes=notes + fan_notes)


async def fanout_figures(opts) -> tuple[list[Row], Chart, list[str]]:
    """(c): one chunk to every one of M open SSE streams, M = 100, 1,000 (and 10,000)."""
    sizes, rounds = ((100, 1_000), 3) if opts.quick else ((100, 1_000, 10_000), 5)
    rows, series, notes = [], {}, []
    for m in sizes:
        try:
            fan = await sse_fanout.measure(m, rounds)
        except Exception as e:  # 10,000 may not open on a small box; the other sizes still count
            notes.append(f"{m:,} open SSE streams failed in this run: {e!r}")
            continue
        series[f"{m:,} streams"] = fan["lat"]
        rows += [
            Row(f"{m:,} open SSE streams: one chunk to every client, publish -> client p50 (ms)",
                fan["p50"]),
            Row(f"{m:,} open SSE streams: publish -> client p99 (ms)", fan["p99"],
                **({"target": "<= 50 ms", "met": fan["p99"] <= 50} if m == 1_000 else {})),
            Row(f"{m:,} open SSE streams: publish -> last client (ms)", fan["max"]),
            Row(f"{m:,} open SSE streams: gateway RSS per 1,000 open streams (MB)",
                fan["mb_per_1000"]),
        ]
        notes.append(
            f"{m:,} open SSE streams: gateway RSS {fan['rss_before']:.1f} MB before they opened, "
            f"{fan['rss_open']:.1f} MB with them open; gateway CPU {fan['idle_cpu']:.0f}% of a "
            f"core while they idle; {fan['redis_clients']:,} Redis connections in use; CPU per "
            f"round: gateway {fan['gateway_cpu_ms']:.0f} ms, client process "
            f"{fan['client_cpu_ms']:.0f} ms.")
    chart = Chart(name="streaming_fanout_latency", kind="cdf", series=series,
                  title="One chunk to every open SSE stream: publish -> client",
                  xlabel="ms (log scale)")
    notes.append(
        f"Fan-out: M jobs queued on an endpoint with no worker, one SSE client per job on one "
        f"`podq gateway`, the clients in one separate process (one aiohttp session, fd limit "
        f"raised); {rounds} rounds, each writing one chunk to every job's chunk stream in one "
        f"burst (M XADDs sent in one write), the next round once every client had the chunk; "
        f"the time is from the burst's send to each client's read (bench/sse_fanout.py). The "
        f"clients and the gateway share the machine's cores.")
    return rows, chart, notes
