"""Redis CPU per job: what Redis itself spends on one job, and in how many calls.

Each case runs on a private redis-server pinned to a core of its own (the last one; the bench,
the gateway and the workers share the others), so time Redis spends is not stretched by the
other processes taking its core. `CONFIG RESETSTAT` before and `INFO commandstats` after give
each command's calls and usec; the bench's own commands (INFO, CONFIG, SUBSCRIBE) are left out.

- Redis usec per job: the usec of the scripted commands (FCALL, or EVALSHA before Redis
  Functions: they include the commands they run) plus the usec of every other command that no
  script in serverless/lua/ runs (BLPOP on the doorbell, ...), divided by the jobs. A command
  that a script runs is counted inside its script only, so nothing is counted twice.
- calls per job: the commands clients sent (scripted calls + the others); commands run inside
  scripts per job are their own row.
- redis-server CPU: the process's user + system time in the window (network I/O included).

Cases:
1. end to end: `podq gateway` (rate limits off) + 2 worker processes; 64 clients POST /run;
   done when every id has been published on the endpoint's done channel. No-op jobs
   (bench/handlers/noop.py, 10 at a time per worker) and streaming jobs yielding 3 small chunks
   (bench/handlers/stream_chunks.py): everything podq ran in the window counts (submits, takes,
   finishes, chunk writes, heartbeats, lease renewals, reaps, the doorbell).
2. the job store alone, one client, one operation after another: submit N, take N (10 per
   call, as a worker with 10 free slots), finish N.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources

import aiohttp
import psutil
from redis.asyncio import Redis

from bench.common import fan_out, start_redis, wait_http
from bench.peers.base import PY, Procs
from bench.report import Row, Section
from bench.scenarios.streaming import AUTH, podq_env
from serverless import keys
from serverless.codec import run_request_decoder
from serverless.model import Status
from serverless.queue import connect
from serverless.redis_server import RedisProcess, free_port
from serverless.settings import Settings
from serverless.store import JobStore

OWN_COMMANDS = {"info", "config|resetstat", "subscribe", "unsubscribe", "ping"}
SCRIPT_COMMANDS = {"fcall", "fcall_ro", "evalsha", "evalsha_ro", "eval", "eval_ro"}
CLIENTS = 64
TAKE_BATCH = 10


def scripted_commands() -> set[str]:
    """The commands podq's Lua runs (`redis.call('HSET', ...)`), lower case."""
    folder = resources.files("serverless") / "lua"
    text = "".join(f.read_text() for f in folder.iterdir() if f.name.endswith(".lua"))
    return {name.lower() for name in re.findall(r"redis\.call\('(\w+)'", text)}


@dataclass
class Measure:
    jobs: int
    seconds: float
    commands: dict[str, tuple[int, int]]  # command -> (calls, usec)
    process_cpu_s: float  # redis-server user + system CPU in the window

    def _sum(self, top_level: bool, index: int) -> int:
        inner = scripted_commands()
        return sum(v[index] for name, v in self.commands.items()
                   if (name in SCRIPT_COMMANDS or name not in inner) == top_level)

    @property
    def usec_per_job(self) -> float:
        return self._sum(True, 1) / self.jobs

    @property
    def calls_per_job(self) -> float:
        return self._sum(True, 0) / self.jobs

    @property
    def inner_calls_per_job(self) -> float:
        return self._sum(False, 0) / self.jobs

    @property
    def process_usec_per_job(self) -> float:
        return self.process_cpu_s * 1e6 / self.jobs

    def table(self) -> str:
        inner = scripted_commands()
        lines = ["| command | calls/job | usec/job | usec/call |", "|---|---:|---:|---:|"]
        for name, (calls, usec) in sorted(self.commands.items(), key=lambda kv: -kv[1][1]):
            shown = f"{name} (in scripts)" if name in inner and name not in SCRIPT_COMMANDS else name
            lines.append(f"| {shown} | {calls / self.jobs:.3f} | {usec / self.jobs:.1f} | "
                         f"{usec / calls:.1f} |")
        return "\n".join(lines)


class Window:
    """Counts what one redis-server does between `start()` and `stop()`."""

    def __init__(self, server: RedisProcess, redis: Redis) -> None:
        assert server.proc is not None
        self.proc, self.redis = psutil.Process(server.proc.pid), redis

    async def start(self) -> None:
        await self.redis.config_resetstat()
        self.cpu0, self.t0 = sum(self.proc.cpu_times()[:2]), time.perf_counter()

    async def stop(self, jobs: int) -> Measure:
        seconds, cpu = time.perf_counter() - self.t0, sum(self.proc.cpu_times()[:2]) - self.cpu0
        stats = await self.redis.info("commandstats")
        commands = {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
                    for name, v in stats.items()}
        commands = {k: v for k, v in commands.items() if k not in OWN_COMMANDS and v[0]}
        return Measure(jobs, seconds, commands, cpu)


@contextmanager
def pinned_redis() -> Iterator[RedisProcess]:
    """A private redis-server alone on the last core; this process (and what it starts next)
    on the others. Without affinity support or with one core, nothing is pinned."""
    server = start_redis()
    me = psutil.Process()
    before = me.cpu_affinity() if hasattr(me, "cpu_affinity") else None
    try:
        if before is not None and len(before) > 1:
            assert server.proc is not None
            psutil.Process(server.proc.pid).cpu_affinity([before[-1]])
            me.cpu_affinity(before[:-1])
        yield server
    finally:
        if before is not None:
            me.cpu_affinity(before)
        server.stop()


class Podq:
    """A gateway and `workers` worker processes on `handler`, on `server`."""

    def __init__(self, server: RedisProcess, handler: str, endpoint: str, workers: int) -> None:
        self.server, self.handler, self.endpoint, self.workers = server, handler, endpoint, workers
        self.procs = Procs()

    async def __aenter__(self) -> Podq:
        env = podq_env(self.server.url)
        port = free_port()
        self.procs.spawn([PY, "-m", "serverless.cli", "gateway", "--port", str(port)], env)
        for i in range(self.workers):
            self.procs.spawn([PY, "-m", "worker", f"bench/handlers/{self.handler}", "--endpoint",
                              self.endpoint, "--worker-id", f"{self.endpoint}-{i}"], env)
        self.base = f"http://127.0.0.1:{port}/v2"
        self.session = aiohttp.ClientSession(headers=AUTH, connector=aiohttp.TCPConnector(limit=0))
        self.redis = Redis.from_url(self.server.url)
        await wait_http(f"http://127.0.0.1:{port}/healthz", self.procs.procs)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()
        await self.redis.aclose()
        self.procs.stop()

    async def wait_workers(self, timeout: float = 60) -> None:
        """Until /health counts every worker (it is a 404 until the first one registers)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with self.session.get(f"{self.base}/{self.endpoint}/health") as r:
                workers = (await r.json()).get("workers", {})
            if workers.get("idle", 0) + workers.get("running", 0) >= self.workers:
                return
            self.procs.check_alive()
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.workers} worker(s) of {self.endpoint} not ready in {timeout:.0f} s")

    async def submit(self, job_input: dict) -> None:
        async with self.session.post(f"{self.base}/{self.endpoint}/run", json={"input": job_input}) as r:
            if r.status != 200:
                raise RuntimeError(f"POST /run: HTTP {r.status} {await r.text()}")
            await r.read()

    async def run_jobs(self, n: int, job_input: dict) -> None:
        """Submit `n` jobs from CLIENTS concurrent clients; return once every one has ended."""
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(keys.done(self.endpoint))
        counter = asyncio.create_task(_count_done(pubsub, n))
        await fan_out(n, CLIENTS, lambda: self.submit(job_input))
        await asyncio.wait_for(counter, timeout=120)
        await pubsub.aclose()


async def _count_done(pubsub, n: int) -> None:
    seen = 0
    while seen < n:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is not None:
            seen += 1


async def end_to_end(handler: str, endpoint: str, workers: int, n: int, job_input: dict) -> Measure:
    with pinned_redis() as server:
        async with Podq(server, handler, endpoint, workers) as podq:
            await podq.wait_workers()
            await podq.run_jobs(min(n, 500), job_input)  # warm-up: connections, code paths
            window = Window(server, podq.redis)
            await window.start()
            await podq.run_jobs(n, job_input)
            return await window.stop(n)


async def store_ops(n: int) -> dict[str, Measure]:
    """submit, take and finish `n` jobs through one JobStore, one call at a time."""
    request = run_request_decoder.decode(b'{"input": {"prompt": "hello"}}')
    with pinned_redis() as server:
        store = JobStore(await connect(server.url), Settings(redis_url=server.url))
        window, out = Window(server, store.redis), {}
        try:
            for _ in range(2):  # the first round warms up
                await window.start()
                for _ in range(n):
                    await store.submit("ops", request)
                out["submit"] = await window.stop(n)
                await window.start()
                taken = []
                while len(taken) < n:
                    taken += await store.take_many("ops", "w", TAKE_BATCH)
                out["take"] = await window.stop(n)
                await window.start()
                for job in taken:
                    await store.finish(job.id, job.attempt, Status.COMPLETED, output=b'"ok"')
                out["finish"] = await window.stop(n)
        finally:
            await store.close()
    return out


def rows(label: str, m: Measure) -> list[Row]:
    return [
        Row(f"{label}: Redis usec per job (INFO commandstats)", m.usec_per_job),
        Row(f"{label}: Redis calls per job", m.calls_per_job),
        Row(f"{label}: commands run inside scripts per job", m.inner_calls_per_job),
        Row(f"{label}: redis-server CPU usec per job (process)", m.process_usec_per_job),
        Row(f"{label}: jobs/s", m.jobs / m.seconds, lower_is_better=False),
    ]


async def run(opts) -> Section:
    n = 3_000 if opts.quick else 20_000
    workers = 2
    noop = await end_to_end("noop.py", "cpu-noop", workers, n, {})
    stream = await end_to_end("stream_chunks.py", "cpu-stream", workers, n // 4, {"n": 3, "gap": 0})
    ops = await store_ops(n)
    out = rows("no-op /run", noop) + rows("3-chunk stream /run", stream)
    for name, m in ops.items():
        out += [Row(f"store {name}, one client: Redis usec per job", m.usec_per_job),
                Row(f"store {name}, one client: commands run inside scripts per job",
                    m.inner_calls_per_job)]
    total = sum(m.usec_per_job for m in ops.values())
    out.append(Row("store submit + take + finish, one client: Redis usec per job", total))
    notes = [f"no-op jobs through /run, per command:\n\n{noop.table()}",
             f"3-chunk streaming jobs through /run, per command:\n\n{stream.table()}"]
    notes += [f"store {name}, one client, per command:\n\n{m.table()}" for name, m in ops.items()]
    pinned = (os.cpu_count() or 1) > 1
    description = (
        f"{n:,} no-op jobs and {n // 4:,} streaming jobs (3 chunks each): {CLIENTS} concurrent "
        f"clients POST /run to `podq gateway`, {workers} worker processes; then {n:,} jobs "
        f"submitted, taken ({TAKE_BATCH} per call) and finished through one JobStore, one call at "
        "a time. Each case on its own redis-server"
        + (", pinned to a core of its own" if pinned else "") + ", after a warm-up. "
        "Redis usec: `INFO commandstats` usec of FCALL/EVALSHA plus the commands no script runs, "
        "per job (CONFIG RESETSTAT before); calls: the commands clients sent, per job; process "
        "CPU: redis-server's user + system time in the window (network I/O included)."
    )
    return Section(title="Redis CPU per job", description=description, rows=out, notes=notes)
