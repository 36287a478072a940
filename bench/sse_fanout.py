"""SSE fan-out: M open streams on one gateway, one chunk published to every stream's job, the
time until each client has it; and the gateway's memory with M streams open.

The parent (`measure`) starts a private redis-server and one `podq gateway` process, queues M
jobs (no worker: they stay IN_QUEUE, so no lease runs out while the clients connect) and starts
the client process. The client process (`python -m bench.sse_fanout`, one aiohttp session, its
fd limit raised to the hard limit) opens one SSE stream per job (GET /v2/{ep}/stream/{id},
Accept: text/event-stream) and stamps every event with time.time() as it is read.

Each round, the parent writes one chunk to every job's chunk stream in one burst: M XADDs
(field `d`, as serverless/lua/chunks.lua writes them) packed beforehand and sent in one write
on a raw socket, so the burst leaves in a few ms; a chunk's latency is its arrival at the
client minus the moment the burst was sent. The next round starts when every client has the
chunk. At the end every job is cancelled and each client must see its final `event: status`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import msgspec
import psutil
import redis.asyncio as aioredis

from bench.common import ROOT, percentile, stop, wait_http
from serverless import eventloop, keys
from serverless.model import RunRequest
from serverless.redis_server import RedisProcess, free_port
from serverless.settings import Settings
from serverless.store import JobStore

EP = "fanout"
KEY = "bench-key"
SSE = {"Accept": "text/event-stream", "Authorization": f"Bearer {KEY}"}
OPEN_CONCURRENCY = 256  # streams being opened at once (the gateway's listen backlog is 1,024)
MAX_REDIS_CLIENTS = "19000"  # redis-server's default of 10,000 would refuse a stream per connection
BATCH = 200  # Redis calls in flight while queuing and cancelling jobs


# ---- the parent -----------------------------------------------------------------------------

def _xadd(key: str, data: bytes) -> bytes:
    parts = [b"XADD", key.encode(), b"*", b"d", data]
    return b"*5\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


async def _publish(port: int, job_ids: list[str], rnd: int) -> float:
    """One chunk `{"r": rnd}` to every job in one write; the time.time() it was sent."""
    blob = b"".join(_xadd(keys.chunks(j), b'{"r":%d}' % rnd) for j in job_ids)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        sent = time.time()
        writer.write(blob)
        await writer.drain()
        for _ in range(len(job_ids)):  # each reply: `$<n>` then the entry id
            head = await reader.readline()
            if not head.startswith(b"$"):
                raise RuntimeError(f"XADD answered {head!r}")
            await reader.readline()
        return sent
    finally:
        writer.close()


async def _in_batches(calls: list, size: int = BATCH) -> list:
    out = []
    for i in range(0, len(calls), size):
        out += await asyncio.gather(*(c() for c in calls[i:i + size]))
    return out


async def _line(proc: asyncio.subprocess.Process, want: str, timeout: float) -> str:
    line = (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode().strip()
    if not line.startswith(want):
        raise RuntimeError(f"client process: {line or 'exited'} (waiting for {want!r})")
    return line


def _gateway(redis_url: str, port: int):
    from bench.scenarios.streaming import spawn_gateway

    return spawn_gateway(redis_url, port)


async def measure(m: int, rounds: int) -> dict:
    """Open `m` streams, publish `rounds` chunks to each, cancel every job.

    Returns:
        p50 / p99 / max ms publish -> client over every chunk, the gateway's RSS before and
        with the streams open (MB), its CPU % while they idle, Redis connections in use, and
        the CPU ms the gateway and the client process spent per round.
    """
    redis = RedisProcess("--maxclients", MAX_REDIS_CLIENTS).start()
    port = free_port()
    gateway = _gateway(redis.url, port)
    store = JobStore(aioredis.Redis.from_url(redis.url), Settings(redis_url=redis.url))
    work = Path(tempfile.mkdtemp(prefix="podq-fanout-"))
    client = None
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz", procs=[gateway])
        request = RunRequest(input=msgspec.Raw(b"{}"))
        jobs = await _in_batches([lambda: store.submit(EP, request)] * m)
        ids = [j.id for j in jobs]
        (work / "ids").write_text("\n".join(ids))
        gw = psutil.Process(gateway.pid)
        rss_before = gw.memory_info().rss
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.sse_fanout", f"http://127.0.0.1:{port}/v2/{EP}",
            str(work / "ids"), str(work / "out.json"), cwd=ROOT, stdout=asyncio.subprocess.PIPE)
        await _line(client, "open", 60 + m / 100)
        await asyncio.sleep(1.0)  # every stream parked on its wait
        cpu0, t0 = sum(gw.cpu_times()[:2]), time.monotonic()
        await asyncio.sleep(2.0)
        idle_cpu = (sum(gw.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0) * 100
        rss_open = gw.memory_info().rss
        conns = (await store.redis.info("clients"))["connected_clients"]
        sent, cpu = [], {gw: 0.0, psutil.Process(client.pid): 0.0}
        for rnd in range(rounds):
            before = {proc: sum(proc.cpu_times()[:2]) for proc in cpu}
            sent.append(await _publish(redis.port, ids, rnd))
            await _line(client, f"round {rnd}", 60)
            for proc in cpu:
                cpu[proc] += sum(proc.cpu_times()[:2]) - before[proc]
            await asyncio.sleep(0.2)
        gw_cpu, client_cpu = (v * 1000 / rounds for v in cpu.values())
        await _in_batches([lambda j=j: store.cancel(j) for j in ids])
        await asyncio.wait_for(client.wait(), 60)
        result = msgspec.json.decode((work / "out.json").read_bytes())
    finally:
        if client is not None and client.returncode is None:
            client.kill()
        stop([gateway])
        await store.redis.aclose()
        redis.stop()
    return _summary(result, sent, m, rounds) | {
        "rss_before": rss_before / 2**20, "rss_open": rss_open / 2**20,
        "mb_per_1000": (rss_open - rss_before) / 2**20 / m * 1000, "idle_cpu": idle_cpu,
        "redis_clients": conns, "gateway_cpu_ms": gw_cpu, "client_cpu_ms": client_cpu}


def _summary(result: dict, sent: list[float], m: int, rounds: int) -> dict:
    lat = []
    for got in result["chunks"]:
        if [r for r, _ in got] != list(range(rounds)):
            raise RuntimeError(f"a client got rounds {[r for r, _ in got]}, not 0..{rounds - 1}")
        lat += [(t - sent[r]) * 1000 for r, t in got]
    if sum(result["status"]) != m:
        raise RuntimeError(f"{sum(result['status'])} of {m} clients got the final status event")
    return {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "max": max(lat), "lat": lat}


# ---- the client process ---------------------------------------------------------------------

class _Stream:
    """One SSE client: the (round, arrival) of each chunk event and whether the status came."""

    def __init__(self) -> None:
        self.got: list[tuple[int, float]] = []
        self.status = False
        self._pending = b""

    def feed(self, data: bytes, now: float) -> list[int]:
        events = (self._pending + data).split(b"\n\n")
        self._pending = events.pop()
        rounds = []
        for event in events:
            if event.startswith(b"id:"):
                body = msgspec.json.decode(event[event.index(b"data: ") + 6:])
                rounds.append(body["output"]["r"])
                self.got.append((rounds[-1], now))
            elif event.startswith(b"event: status"):
                self.status = True
        return rounds


async def _clients(base: str, ids: list[str], out: Path) -> None:
    m = len(ids)
    streams = [_Stream() for _ in ids]
    counts: dict[int, int] = {}
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    opened = [asyncio.get_running_loop().create_future() for _ in ids]
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as s:

        async def one(i: int) -> None:
            try:
                async with gate:
                    r = await s.get(f"{base}/stream/{ids[i]}", headers=SSE)
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}: {(await r.read())[:200]!r}")
            except BaseException as e:
                opened[i].set_exception(e)
                return
            opened[i].set_result(None)
            async with r:
                async for data in r.content.iter_any():
                    for rnd in streams[i].feed(data, time.time()):
                        counts[rnd] = counts.get(rnd, 0) + 1
                        if counts[rnd] == m:
                            print(f"round {rnd}", flush=True)

        tasks = [asyncio.create_task(one(i)) for i in range(m)]
        done = await asyncio.gather(*opened, return_exceptions=True)
        failed = [e for e in done if isinstance(e, BaseException)]
        if failed:
            print(f"failed: {m - len(failed)} of {m} streams opened; first error {failed[0]!r}",
                  flush=True)
            os._exit(1)
        print("open", flush=True)
        await asyncio.gather(*tasks)
    out.write_bytes(msgspec.json.encode(
        {"chunks": [s.got for s in streams], "status": [s.status for s in streams]}))


def main() -> None:
    p = argparse.ArgumentParser(description="the client process of the SSE fan-out benchmark")
    p.add_argument("base", help="http://host:port/v2/<endpoint>")
    p.add_argument("ids", help="a file of job ids, one a line")
    p.add_argument("out", help="where the JSON result goes")
    args = p.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ids = Path(args.ids).read_text().split()
    eventloop.run(_clients(args.base, ids, Path(args.out)))


if __name__ == "__main__":
    main()
