"""Fleet: one real scaler against 10, 100 and 1,000 simulated workers (podq issue 11).

Real: a private redis-server (bench/common.start_redis), the JobStore and Registry, the scaler's
own loop (scaler/loop.py `Scaler.run`, each `tick()` timed) and every worker's Redis traffic:
bench/fleet_backend.py's generator process plays each worker with podq's worker runtime
(`worker.runtime.Worker`: take, doorbell, heartbeat every 2 s, lease renewal, reap, cancel watch,
fenced finish; its own connections), its handler sleeping a uniform 50-200 ms. Not real: the
workers are not processes. `RecordingBackend` starts none; it records the scaler's starts and
stops and hands them to the generator.

For each fleet size N, on a fresh redis-server, generator and scaler (tick 1 s, the CLI's
default), with an endpoint of workers_max N, idle_timeout 5 s, REQUEST_COUNT 1 (`Plan`;
`--quick`: 10 and 100 workers only, every window and burst shorter):
1. steady: workers_min N; once all N are ready (`reconcile.health` over the backend's listing and
   the heartbeats: the scaler's own rule) and a heartbeat interval has passed, a window with N
   idle workers: tick times, Redis ops/s (`total_commands_processed`), Redis CPU (`used_cpu_sys
   + used_cpu_user`), `used_memory` above the same Redis before any worker started, clients.
   Then workers_min 0 and the idle fleet is stopped.
2. burst: B jobs submitted through `JobStore.submit` (concurrent calls: the store's autopipeline
   batches them) while the endpoint is paused, so the submit is timed alone and the scaler's
   ticks do not share a loop with it; then unpaused. From the unpause: N workers started (the
   backend's records), N ready, queue drained (or 60 s, then the rest purged), back to
   workers_min 0 (idle_timeout included). B is 100,000, capped where N workers at about 8
   jobs/s each would need more than 30 s (2,400 jobs for 10 workers, 24,000 for 100).
3. QUEUE_DELAY (scaler_value 1): workers started in 10 s of a deep queue. This policy adds one
   worker per tick by design (scaler/policy.py), so it cannot reach 1,000 workers in this run's
   time; REQUEST_COUNT asks for N in one tick and is what phase 2 uses.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
import psutil

from bench.common import exited, percentile, spawn, start_redis, stop
from bench.fleet_backend import EXEC_MS, Load, RecordingBackend, Started, Stopped, open_link
from bench.report import Row, Section
from scaler.loop import Scaler
from scaler.reconcile import Health, health
from serverless import keys
from serverless.model import EndpointConfig, RunRequest, ScalerType, Template
from serverless.queue import connect
from serverless.redis_server import free_port
from serverless.registry import Registry
from serverless.settings import Settings
from serverless.store import JobStore, now_ms

EP = "fleet"
SIZES = (10, 100, 1_000)
MAX_BURST = 100_000
SUBMIT_BATCH = 2_000  # concurrent submits per gather
SAMPLE_S = 0.25
JOBS_PER_WORKER_S = 1000 / (sum(EXEC_MS) / 2)  # ~8 jobs/s at a 125 ms mean
READY = (Health.IDLE, Health.RUNNING)


@dataclass(frozen=True)
class Plan:
    n: int
    burst: int
    steady_s: float = 10
    drain_cap_s: float = 60
    ramp_s: float = 10
    idle_s: int = 5
    tick_s: float = 1.0
    heartbeat_ms: int = Settings().heartbeat_ms  # the workers' and the scaler's (stale after 3)
    generators: int = 1


def plan_for(n: int, quick: bool) -> Plan:
    """The burst drains in about `target` s at ~8 jobs/s per worker, up to MAX_BURST."""
    target = 10 if quick else 30
    burst = min(MAX_BURST // (5 if quick else 1), round(n * JOBS_PER_WORKER_S * target))
    if quick:
        return Plan(n, burst, steady_s=4, drain_cap_s=30, ramp_s=5, idle_s=3)
    return Plan(n, burst)


@dataclass(frozen=True)
class Spread:
    p50: float
    p99: float
    max: float
    count: int

    @classmethod
    def of(cls, xs: list[float]) -> Spread:
        if not xs:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(percentile(xs, 50), percentile(xs, 99), max(xs), len(xs))


@dataclass(frozen=True)
class RedisInfo:
    at: float
    commands: int
    cpu_s: float
    used_memory: int
    clients_memory: int  # mem_clients_normal: the clients' buffers, part of used_memory
    clients: int
    calls: dict[str, int]  # INFO commandstats: calls per command (those inside functions too)


@dataclass(frozen=True)
class Measured:
    """What one window saw. CPU in cores: seconds of CPU per second."""

    seconds: float
    ticks: Spread  # the scaler's, ms
    ops_s: float  # Redis total_commands_processed (commands inside functions count too)
    calls_s: dict[str, float]  # per command (INFO commandstats)
    redis_cpu: float
    scaler_cpu: float  # this process: the scaler loop, the backend, the bench's sampling
    generator_cpu: float
    late: Spread  # beats: time since the worker's previous beat - heartbeat_ms
    lag: Spread  # the generator loop's lag
    end: RedisInfo


@dataclass(frozen=True)
class Steady:
    ready_s: float  # workers_min N -> all N ready
    window: Measured
    memory_b: int  # used_memory above the Redis without workers
    clients_memory_b: int  # of that, the clients' buffers (mem_clients_normal)
    clients: int
    stop_s: float  # workers_min 0 -> none listed


@dataclass(frozen=True)
class Burst:
    jobs: int
    submit_s: float
    started_s: float
    ready_s: float
    drained_s: float  # nan when not drained within the cap
    completed: int
    rate: float  # jobs/s while all N were ready
    down_s: float  # drained (or purged) -> none listed
    window: Measured


@dataclass(frozen=True)
class Figures:
    plan: Plan
    steady: Steady
    burst: Burst
    ramp_started: int
    started: list[Started]  # the backend's records, every phase
    stopped: list[Stopped]
    exits: list[str]  # workers that ended without a stop, and why (none in a healthy run)


class TimedScaler(Scaler):
    """The scaler, unchanged, with each tick's wall time noted."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.ticks: list[tuple[float, float]] = []  # (monotonic start, ms)

    async def tick(self) -> None:
        t0 = time.monotonic()
        await super().tick()
        self.ticks.append((t0, (time.monotonic() - t0) * 1000))


@dataclass(frozen=True)
class Sample:
    at: float
    listed: int
    ready: int
    queued: int
    running: int
    completed: int


def cpu_s(pids: list[int]) -> float:
    return sum(sum(psutil.Process(p).cpu_times()[:2]) for p in pids)


class FleetRun:
    """One fleet size: the scaler, the backend and the generators on one redis-server."""

    def __init__(self, plan: Plan, store: JobStore, scaler: TimedScaler, backend: RecordingBackend,
                 generator_pids: list[int]) -> None:
        self.plan, self.store, self.scaler, self.backend = plan, store, scaler, backend
        self.registry = Registry(store.redis)
        self.pids = generator_pids

    async def configure(self, **changes) -> None:
        fields = dict(id=EP, name=EP, template_id=EP, gpu_ids="ANY", gpu_count=0, workers_min=0,
                      workers_max=self.plan.n, idle_timeout=self.plan.idle_s,
                      scaler_type=ScalerType.REQUEST_COUNT, scaler_value=1,
                      backend=RecordingBackend.name)
        await self.registry.put_endpoint(EndpointConfig(**{**fields, **changes}))

    async def redis_info(self) -> RedisInfo:
        i = await self.store.redis.info("all")
        calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in i.items() if k.startswith("cmdstat_")}
        return RedisInfo(time.monotonic(), int(i["total_commands_processed"]),
                         float(i["used_cpu_sys"]) + float(i["used_cpu_user"]), int(i["used_memory"]),
                         int(i["mem_clients_normal"]), int(i["connected_clients"]), calls)

    async def sample(self) -> Sample:
        now = now_ms()
        handles = await self.backend.list()
        beats = {b.id: b for b in await self.store.workers(EP)}
        ready = sum(health(h, beats.get(h.worker_id), now, self.scaler.timing) in READY for h in handles)
        queue = await self.store.queue_stats(EP, now)
        completed = int(await self.store.redis.hget(keys.stats(EP), "completed") or 0)
        return Sample(time.monotonic(), len(handles), ready, queue.in_queue, queue.in_progress, completed)

    async def watch(self, done: Callable[[Sample], bool], timeout_s: float, into: list[Sample]) -> Sample:
        """Sample every SAMPLE_S into `into` until `done(sample)` or `timeout_s`; the last one."""
        deadline = time.monotonic() + timeout_s
        while True:
            s = await self.sample()
            into.append(s)
            if done(s) or s.at >= deadline:
                return s
            await asyncio.sleep(SAMPLE_S)

    async def measured(self, run: Callable[[], Awaitable[object]]) -> Measured:
        """Run `run()` and note what Redis, the scaler and the generator did meanwhile."""
        await self.backend.load(reset=True)
        me = [psutil.Process().pid]
        a, me0, gen0 = await self.redis_info(), cpu_s(me), cpu_s(self.pids)
        await run()
        b, me1, gen1 = await self.redis_info(), cpu_s(me), cpu_s(self.pids)
        load: Load = await self.backend.load(reset=True)
        seconds = b.at - a.at
        ticks = [ms for at, ms in self.scaler.ticks if a.at <= at <= b.at]
        calls = {k: (v - a.calls.get(k, 0)) / seconds for k, v in b.calls.items()
                 if k != "info" and v > a.calls.get(k, 0)}
        return Measured(seconds, Spread.of(ticks), (b.commands - a.commands) / seconds, calls,
                        (b.cpu_s - a.cpu_s) / seconds, (me1 - me0) / seconds, (gen1 - gen0) / seconds,
                        Spread.of(load.late_ms), Spread.of(load.lag_ms), b)

    async def steady(self) -> Steady:
        n, plan = self.plan.n, self.plan
        while not self.scaler.ticks:  # its first tick loads podq's functions: not a worker's cost
            await asyncio.sleep(SAMPLE_S)
        base = await self.redis_info()
        t0 = time.monotonic()
        await self.configure(workers_min=n)
        up = await self.watch(lambda s: s.ready == n, 120, [])
        if up.ready < n:
            raise RuntimeError(f"{up.ready} of {n} simulated workers ready after 120 s")
        await asyncio.sleep(plan.heartbeat_ms / 1000)  # past start-up's own traffic
        window = await self.measured(lambda: asyncio.sleep(plan.steady_s))
        t_stop = time.monotonic()
        await self.configure(workers_min=0)
        down = await self.watch(lambda s: s.listed == 0, 60 + plan.idle_s, [])
        end = window.end
        return Steady(ready_s=up.at - t0, window=window, memory_b=end.used_memory - base.used_memory,
                      clients_memory_b=end.clients_memory - base.clients_memory,
                      clients=end.clients - base.clients,
                      stop_s=down.at - t_stop if down.listed == 0 else math.nan)

    async def submit(self, count: int) -> float:
        request = RunRequest(input=msgspec.Raw(b'{"prompt": "a simulated job"}'))
        t0 = time.perf_counter()
        for i in range(0, count, SUBMIT_BATCH):
            await asyncio.gather(*(self.store.submit(EP, request) for _ in range(min(SUBMIT_BATCH, count - i))))
        return time.perf_counter() - t0

    async def burst(self) -> Burst:
        n, plan = self.plan.n, self.plan
        await self.configure(paused=True)
        submit_s = await self.submit(plan.burst)
        samples: list[Sample] = []
        t0 = time.monotonic()

        async def drain() -> None:
            await self.configure()
            await self.watch(lambda s: s.queued == 0 and s.running == 0, plan.drain_cap_s, samples)

        window = await self.measured(drain)
        end = samples[-1]
        drained = end.queued == 0 and end.running == 0
        if not drained:
            await self.store.purge(EP)
        down = await self.watch(lambda s: s.listed == 0, 60 + plan.idle_s, [])
        starts = sorted(s.at for s in self.backend.started if s.at >= t0)
        ready_at = next((s.at for s in samples if s.ready == n), math.nan)
        return Burst(
            jobs=plan.burst, submit_s=submit_s,
            started_s=starts[n - 1] - t0 if len(starts) >= n else math.nan,
            ready_s=ready_at - t0, drained_s=end.at - t0 if drained else math.nan,
            completed=end.completed, rate=drain_rate(samples, n), window=window,
            down_s=down.at - end.at if down.listed == 0 else math.nan)

    async def ramp(self) -> int:
        """Workers QUEUE_DELAY starts in ramp_s of a queue deeper than they drain."""
        plan = self.plan
        await self.configure(paused=True, scaler_type=ScalerType.QUEUE_DELAY)
        await self.submit(round(JOBS_PER_WORKER_S * plan.ramp_s ** 2) + 100)
        t0 = time.monotonic()
        await self.configure(scaler_type=ScalerType.QUEUE_DELAY)
        await asyncio.sleep(plan.ramp_s)
        started = sum(1 for s in self.backend.started if s.at >= t0)
        await self.store.purge(EP)
        return started


def drain_rate(samples: list[Sample], n: int) -> float:
    """Jobs/s from the first sample with all N ready to the last with jobs left (else overall)."""
    busy = [s for s in samples if s.queued > 0]
    full = [s for s in busy if s.ready == n]
    a, b = (full[0], busy[-1]) if full and busy[-1].at - full[0].at >= 1 else (samples[0], samples[-1])
    return (b.completed - a.completed) / (b.at - a.at) if b.at > a.at else math.nan


async def measure(redis_url: str, plan: Plan) -> Figures:
    """Run the three phases for `plan.n` workers against the Redis at `redis_url`."""
    ports = [free_port() for _ in range(plan.generators)]
    env = {"PODQ_REDIS_URL": redis_url, "PODQ_HEARTBEAT_MS": str(plan.heartbeat_ms)}
    procs = [spawn([sys.executable, "-m", "bench.fleet_backend", "--port", str(p), "--seed", str(i)], env)
             for i, p in enumerate(ports)]
    backend: RecordingBackend | None = None
    stores: list[JobStore] = []
    try:
        links = [await open_link(p, lambda: exited(procs)) for p in ports]
        backend = RecordingBackend(links)
        settings = Settings(redis_url=redis_url, heartbeat_ms=plan.heartbeat_ms)
        stores = [JobStore(await connect(redis_url), settings) for _ in range(2)]  # scaler's, bench's
        registry = Registry(stores[0].redis)
        await registry.put_template(Template(id=EP, name=EP, handler="bench/fleet_backend.py"))
        scaler = TimedScaler(registry, stores[0], {backend.name: backend}, settings, tick_s=plan.tick_s)
        run = FleetRun(plan, stores[1], scaler, backend, [p.pid for p in procs])
        await run.configure()
        stop_scaler = asyncio.Event()
        loop_task = asyncio.create_task(scaler.run(stop_scaler))
        try:
            steady, burst, ramp = await run.steady(), await run.burst(), await run.ramp()
        finally:
            stop_scaler.set()
            await loop_task
            await scaler.close()
        return Figures(plan, steady, burst, ramp, backend.started, backend.stopped,
                       [f"{e.worker_id}: {e.reason}" for e in backend.exited])
    finally:
        if backend is not None:
            await backend.close()
        for s in stores:
            await s.close()
        stop(procs)



# ---- the report ------------------------------------------------------------------------------

def _pct(x: float) -> float:
    return x * 100


# (figure, how to read it from one fleet size, shown as a row of the section too)
GROWTH: tuple[tuple[str, Callable[[Figures], float], bool], ...] = (
    ("scaler tick p50, N idle workers (ms)", lambda f: f.steady.window.ticks.p50, True),
    ("scaler tick p99, N idle workers (ms)", lambda f: f.steady.window.ticks.p99, True),
    ("scaler tick max, N idle workers (ms)", lambda f: f.steady.window.ticks.max, False),
    ("scaler tick p50 during the burst (ms)", lambda f: f.burst.window.ticks.p50, True),
    ("scaler tick p99 during the burst (ms)", lambda f: f.burst.window.ticks.p99, True),
    ("scaler tick max during the burst (ms)", lambda f: f.burst.window.ticks.max, False),
    ("scaler process CPU, N idle workers (% of a core)", lambda f: _pct(f.steady.window.scaler_cpu), False),
    ("Redis commands/s, N idle workers", lambda f: f.steady.window.ops_s, True),
    ("Redis commands/s per idle worker", lambda f: f.steady.window.ops_s / f.plan.n, False),
    ("Redis CPU, N idle workers (% of a core)", lambda f: _pct(f.steady.window.redis_cpu), True),
    ("Redis used_memory for N idle workers (MB)", lambda f: f.steady.memory_b / 1e6, True),
    ("Redis memory per worker (KB)", lambda f: f.steady.memory_b / f.plan.n / 1e3, False),
    ("of which client buffers, per worker (KB)", lambda f: f.steady.clients_memory_b / f.plan.n / 1e3, False),
    ("Redis connections per worker", lambda f: f.steady.clients / f.plan.n, False),
    ("workers_min N: all N ready (s)", lambda f: f.steady.ready_s, False),
    ("workers_min 0: N idle workers stopped (s)", lambda f: f.steady.stop_s, False),
    ("burst (jobs, capped below 1,000 workers)", lambda f: f.burst.jobs, False),
    ("burst submit through JobStore.submit (s)", lambda f: f.burst.submit_s, False),
    ("burst submit rate (jobs/s)", lambda f: f.burst.jobs / f.burst.submit_s, False),
    ("burst: N workers started (s)", lambda f: f.burst.started_s, True),
    ("burst: N workers ready, the scaler's view (s)", lambda f: f.burst.ready_s, True),
    ("burst: queue drained (s)", lambda f: f.burst.drained_s, True),
    ("burst: drain rate, N workers ready (jobs/s)", lambda f: f.burst.rate, True),
    ("N workers' capacity at 125 ms a job (jobs/s)", lambda f: f.plan.n * JOBS_PER_WORKER_S, False),
    ("burst: drained -> workers_min 0 (s, idle_timeout included)", lambda f: f.burst.down_s, True),
    ("Redis CPU during the burst (% of a core)", lambda f: _pct(f.burst.window.redis_cpu), False),
    ("generator CPU during the burst (% of a core)", lambda f: _pct(f.burst.window.generator_cpu), False),
    ("generator: beat lateness p99, idle (ms)", lambda f: f.steady.window.late.p99, False),
    ("generator: beat lateness p99, burst (ms)", lambda f: f.burst.window.late.p99, False),
    ("generator: beat lateness max, burst (ms)", lambda f: f.burst.window.late.max, False),
    ("generator: loop lag p50, burst (ms)", lambda f: f.burst.window.lag.p50, False),
    ("generator: loop lag p99, burst (ms)", lambda f: f.burst.window.lag.p99, False),
    ("QUEUE_DELAY: workers started in the ramp window", lambda f: f.ramp_started, True),
)


def _cell(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}"


def _ratio(a: float, b: float) -> str:
    return "" if math.isnan(a) or math.isnan(b) or a <= 0 or b <= 0 else f"{b / a:.1f}x"


def growth_table(figs: list[Figures]) -> str:
    """One line per figure: its value at each N, and each step's ratio (next N / this N)."""
    sizes = [f"N={f.plan.n:,}" for f in figs]
    steps = [f"{b.plan.n:,}/{a.plan.n:,}" for a, b in zip(figs, figs[1:])]
    lines = ["| figure | " + " | ".join(sizes + steps) + " |", "|---" + "|---:" * (len(sizes) + len(steps)) + "|"]
    for name, read, _ in GROWTH:
        values = [float(read(f)) for f in figs]
        ratios = [_ratio(a, b) for a, b in zip(values, values[1:])]
        lines.append(f"| {name} | " + " | ".join([_cell(v) for v in values] + ratios) + " |")
    return "\n".join(lines)


def calls_table(f: Figures) -> str:
    calls = sorted(f.steady.window.calls_s.items(), key=lambda kv: -kv[1])
    return "\n".join(["| command | calls/s | per worker per s |", "|---|---:|---:|"] +
                     [f"| {name} | {v:,.0f} | {v / f.plan.n:.2f} |" for name, v in calls if v >= 1])


def notes(figs: list[Figures]) -> list[str]:
    top, plan = figs[-1], figs[-1].plan
    burst = top.burst.window
    out = [
        f"How each figure grows from N={figs[0].plan.n:,} to N={plan.n:,} workers:\n\n{growth_table(figs)}",
        f"Redis commands per second with {plan.n:,} idle workers (INFO commandstats; commands podq's "
        f"functions run inside an FCALL count too):\n\n{calls_table(top)}",
        f"The generator ({plan.generators} process, {plan.n:,} workers): with them idle its beats were "
        f"at most {top.steady.window.late.max:,.0f} ms late; during the burst p99 {burst.late.p99:,.0f} "
        f"ms and max {burst.late.max:,.0f} ms (the scaler counts a worker lost after "
        f"{3 * plan.heartbeat_ms:,} ms of silence), and its loop lagged p50 {burst.lag.p50:,.1f} ms, "
        f"p99 {burst.lag.p99:,.1f} ms, which every job's take and finish wait through. During the "
        f"burst Redis used {_pct(burst.redis_cpu):.0f}%, the generator "
        f"{_pct(burst.generator_cpu):.0f}% and the scaler's process {_pct(burst.scaler_cpu):.0f}% of "
        f"a core ({psutil.cpu_count()} cores, shared with other work).",
    ]
    for f in figs:
        if f.exits:
            out.append(f"N={f.plan.n:,}: {len(f.exits)} simulated worker(s) ended without a stop: "
                       + "; ".join(f.exits[:3]))
    return out


async def run(opts) -> Section:
    figs = []
    sizes = SIZES[:2] if opts.quick else SIZES  # --quick: the report in ~2 min, 1,000 takes ~2 alone
    for n in sizes:
        redis = start_redis()
        try:
            figs.append(await measure(redis.url, plan_for(n, opts.quick)))
        finally:
            redis.stop()
    top = figs[-1]
    rows = [Row(f"{top.plan.n:,} workers: {name}", float(read(top))) for name, read, headline in GROWTH if headline]
    caps = ", ".join(f"{f.burst.jobs:,} at N={f.plan.n:,}" for f in figs)
    description = (
        f"One real scaler loop (scaler/loop.py, tick {top.plan.tick_s:g} s) against "
        f"{', '.join(f'{f.plan.n:,}' for f in figs)} simulated workers, each size on a fresh redis-server. "
        "The workers are podq's worker runtime (take, doorbell, heartbeat every "
        f"{top.plan.heartbeat_ms / 1000:g} s, lease renewal, reap, cancel watch, fenced finish; "
        "their own connections) run by one generator process; their handler sleeps a uniform "
        f"{EXEC_MS[0]:.0f}-{EXEC_MS[1]:.0f} ms. The backend, `RecordingBackend` "
        "(bench/fleet_backend.py), starts no process: it records the scaler's starts and stops and "
        f"hands them to the generator. Steady: workers_min N, a {top.plan.steady_s:g} s window with N "
        "idle workers (Redis figures are deltas of INFO; memory is above the same Redis before any "
        "worker). Burst: jobs submitted through JobStore.submit while the endpoint is paused "
        f"({caps}: below 1,000 workers capped at what drains in about 30 s), then unpaused with "
        "REQUEST_COUNT 1; times count from the unpause; readiness is `reconcile.health`, the "
        f"scaler's own rule. idle_timeout {top.plan.idle_s} s. QUEUE_DELAY (scaler_value 1) adds one "
        f"worker per tick by design, so it is measured as the workers it starts in "
        f"{top.plan.ramp_s:g} s of a deep queue, not as a ramp to 1,000. No peer: podq's own "
        "scaling. The 2 cores of this machine are shared by redis-server, the generator and the "
        "scaler, and were shared with other CPU-heavy work during this run."
    )
    return Section(title="Fleet: one scaler, 10 to 1,000 simulated workers", description=description,
                   rows=rows, notes=notes(figs))
