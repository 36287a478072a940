"""RecordingBackend and the simulated fleet behind it: podq's scaler against many workers that are
not processes (bench/scenarios/fleet.py, podq issue 11).

`RecordingBackend` implements scaler/backends/base.py's Backend and starts no process: start()
records the WorkerSpec and hands the worker to a generator process, stop() records the stop and
waits until the generator says the worker drained, list() returns the workers it holds.

The generator (`python -m bench.fleet_backend --port P`) plays every worker it is handed with
podq's own worker runtime, `worker.runtime.Worker`, many of them in one asyncio loop: the same
take loop (FCALL take, BLPOP on the doorbell), heartbeat, lease renewal, reap, cancel watch and
fenced finish as `python -m worker`, each worker with its own Redis connections (its JobStore
pool, which also counts its pipeline, doorbell and cancel-watch connections, as worker/process.py
opens it) and its own settings
from PODQ_* like a real worker. Its handler is `async def` and sleeps a uniform 50-200 ms, so a
worker serves about 8 jobs/s. What a simulated worker lacks: a process of its own (and the
watchdog thread worker/process.py starts), real work in the handler, NVML, and INFO log lines
(the generator logs warnings only).

A generator that cannot keep up would make the scaler see late beats, so it measures itself:
each beat's lateness (time since the worker's previous beat minus heartbeat_ms) and its loop's
lag (how late a 100 ms sleep wakes up); the scenario reports both.

The scaler and the generator talk over one TCP connection per generator, one JSON line per
message (tagged msgspec Structs), so the scaler's tick is timed in a process of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from itertools import cycle

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from scaler.backends.base import BackendError, WorkerHandle, WorkerSpec
from serverless import eventloop
from serverless.errors import PodqError
from serverless.model import WorkerBeat
from serverless.queue import connect
from serverless.settings import Settings, load_settings
from serverless.store import JobStore, now_ms
from worker.config import HandlerConfig
from worker.runtime import Worker

EXEC_MS = (50.0, 200.0)  # the simulated handler's execution time, uniform
PROBE_S = 0.1  # the loop-lag probe's sleep
OPENING = 64  # workers connecting to Redis at the same time
REPLY_SLACK_S = 10.0  # past the drain's grace + 5 s, a generator that says nothing is lost


# ---- the wire: one JSON line per message --------------------------------------------------

class Launch(msgspec.Struct, tag=True, frozen=True):
    worker_id: str
    endpoint_id: str
    version: int
    redis_url: str


class Halt(msgspec.Struct, tag=True, frozen=True):
    worker_id: str
    grace_s: float


class Report(msgspec.Struct, tag=True, frozen=True):
    reset: bool = False  # start a new measurement window after this report


class Halted(msgspec.Struct, tag=True, frozen=True):
    worker_id: str


class Exited(msgspec.Struct, tag=True, frozen=True):
    """A worker ended without being halted (it could not connect, or its run ended): what a
    process backend sees as a process that exited."""

    worker_id: str
    reason: str


class Load(msgspec.Struct, tag=True):
    """A generator's own figures since the last reset."""

    late_ms: list[float] = []  # each beat's lateness
    lag_ms: list[float] = []  # each loop probe's lateness


_commands = msgspec.json.Decoder(Launch | Halt | Report)
_replies = msgspec.json.Decoder(Halted | Exited | Load)
_encode = msgspec.json.Encoder().encode


def _line(message: msgspec.Struct) -> bytes:
    return _encode(message) + b"\n"


# ---- the scaler side -------------------------------------------------------------------------

class Started(msgspec.Struct, frozen=True):
    at: float  # time.monotonic()
    spec: WorkerSpec


class Stopped(msgspec.Struct, frozen=True):
    at: float  # time.monotonic(), when the generator said the worker drained
    worker_id: str
    grace_s: float


class Link:
    """One TCP connection to a generator: commands out, replies matched to their waiters."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.on_exit: Callable[[Exited], None] = lambda exited: None
        self.halts: dict[str, asyncio.Future[None]] = {}
        self.reports: list[asyncio.Future[Load]] = []
        self.task = asyncio.create_task(self._read(), name="fleet-link")

    async def send(self, message: msgspec.Struct) -> None:
        self.writer.write(_line(message))
        await self.writer.drain()

    async def halt(self, worker_id: str, grace_s: float) -> None:
        done = self.halts[worker_id] = asyncio.get_running_loop().create_future()
        await self.send(Halt(worker_id, grace_s))
        await asyncio.wait_for(done, grace_s + REPLY_SLACK_S)

    async def report(self, reset: bool) -> Load:
        done: asyncio.Future[Load] = asyncio.get_running_loop().create_future()
        self.reports.append(done)
        await self.send(Report(reset))
        return await asyncio.wait_for(done, REPLY_SLACK_S)

    async def _read(self) -> None:
        while line := await self.reader.readline():
            match _replies.decode(line):
                case Halted(worker_id=worker_id):
                    waiter = self.halts.pop(worker_id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                case Exited() as exited:
                    self.on_exit(exited)
                case Load() as load:
                    self.reports.pop(0).set_result(load)

    async def close(self) -> None:
        self.task.cancel()
        self.writer.close()
        await asyncio.gather(self.task, return_exceptions=True)


async def open_link(port: int, alive: Callable[[], None], timeout_s: float = 30) -> Link:
    """Connect to the generator listening on `port`; `alive()` raises if its process exited."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive()
        try:
            return Link(*await asyncio.open_connection("127.0.0.1", port))
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fleet generator on port {port} did not listen in {timeout_s:.0f} s")
            await asyncio.sleep(0.05)


class RecordingBackend:
    """A Backend that starts no process. It records every start and stop the scaler asks for and
    hands the workers to simulated workers in generator processes (round robin over `links`);
    list() returns the workers it holds. Simulated workers have no GPU and no container, so a
    spec asking for GPUs or CPU / memory limits is refused, as the process backend refuses
    limits it cannot apply."""

    name = "recording"
    places_gpus = False

    def __init__(self, links: list[Link]) -> None:
        self.links = links
        self._next = cycle(range(len(links)))
        self.handles: dict[str, WorkerHandle] = {}
        self.started: list[Started] = []
        self.stopped: list[Stopped] = []
        self.exited: list[Exited] = []
        for link in links:
            link.on_exit = self._exited

    def _exited(self, exited: Exited) -> None:
        """Listed as not running from now on: the scaler stops and replaces it (reconcile)."""
        self.exited.append(exited)
        handle = self.handles.get(exited.worker_id)
        if handle is not None:
            self.handles[exited.worker_id] = msgspec.structs.replace(handle, running=False)

    async def start(self, spec: WorkerSpec) -> WorkerHandle:
        if spec.gpu_uuids or spec.gpu_count:
            raise BackendError(f"worker {spec.worker_id}: simulated workers have no GPU; "
                               "set the endpoint's gpu_count to 0")
        if spec.cpus or spec.memory_mb:
            raise BackendError(f"worker {spec.worker_id}: simulated workers are not containers and "
                               "cannot be limited; set the endpoint's cpus and memory_gb to 0")
        i = next(self._next)
        try:
            await self.links[i].send(Launch(spec.worker_id, spec.endpoint_id, spec.version, spec.redis_url))
        except OSError as e:
            raise BackendError(f"worker {spec.worker_id}: the fleet generator is gone ({e}); run "
                               "`python -m bench.fleet_backend --port <a free port>` to see it fail") from e
        handle = WorkerHandle(worker_id=spec.worker_id, endpoint_id=spec.endpoint_id,
                              version=spec.version, ref=f"generator-{i}", started_at=now_ms())
        self.handles[spec.worker_id] = handle
        self.started.append(Started(time.monotonic(), spec))
        return handle

    async def stop(self, handle: WorkerHandle, grace_s: float) -> None:
        link = self.links[int(handle.ref.rpartition("-")[2])]
        try:
            await link.halt(handle.worker_id, grace_s)
        except (OSError, TimeoutError) as e:
            raise BackendError(f"worker {handle.worker_id}: the fleet generator did not confirm "
                               f"the stop ({e!r})") from e
        self.handles.pop(handle.worker_id, None)
        self.stopped.append(Stopped(time.monotonic(), handle.worker_id, grace_s))

    async def list(self) -> list[WorkerHandle]:
        return list(self.handles.values())

    async def close(self) -> None:
        await asyncio.gather(*(link.close() for link in self.links))

    async def load(self, reset: bool = False) -> Load:
        """Every generator's figures since the last reset, merged."""
        loads = await asyncio.gather(*(link.report(reset) for link in self.links))
        return Load(late_ms=[v for x in loads for v in x.late_ms],
                    lag_ms=[v for x in loads for v in x.lag_ms])


# ---- the generator side ----------------------------------------------------------------------

class BeatClock(JobStore):
    """A worker's JobStore that notes how late each of its beats is before writing it."""

    def __init__(self, redis: Redis, settings: Settings, fleet: Fleet) -> None:
        super().__init__(redis, settings)
        self.fleet, self.last = fleet, 0

    async def beat(self, beat: WorkerBeat) -> None:
        if self.last:
            self.fleet.load.late_ms.append(beat.seen_at - self.last - self.settings.heartbeat_ms)
        self.last = beat.seen_at
        await super().beat(beat)


class Fleet:
    """The simulated workers of one generator process."""

    def __init__(self, seed: int) -> None:
        self.settings = load_settings()  # PODQ_* as a real worker reads them
        self.rng = random.Random(seed)
        self.config = HandlerConfig(handler=self._handler)
        self.load = Load()
        self.workers: dict[str, tuple[Worker, asyncio.Task[None]]] = {}
        self.halting: set[str] = set()
        self.pending: set[asyncio.Task[None]] = set()
        # workers connecting at once: a real fleet's processes connect from their own machines;
        # here a thousand connects at once would starve this one loop past CONNECT_TIMEOUT_S
        self.opening = asyncio.Semaphore(OPENING)

    async def _handler(self, job: dict) -> dict:
        await asyncio.sleep(self.rng.uniform(*EXEC_MS) / 1000)
        return {"ok": True}

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one scaler's connection: launches, halts and reports, until it closes."""
        while line := await reader.readline():
            match _commands.decode(line):
                case Launch() as launch:
                    self._spawn(self.launch(launch, writer))
                case Halt() as halt:
                    self._spawn(self.halt(halt, writer))
                case Report(reset=reset):
                    writer.write(_line(self.load))
                    if reset:
                        self.load = Load()

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        """A task kept referenced until done (the loop holds tasks only weakly)."""
        task = asyncio.create_task(coro)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def launch(self, launch: Launch, writer: asyncio.StreamWriter) -> None:
        # what worker/process.py's serve() opens: a JobStore pool (its pipeline, doorbell and
        # cancel-watch connections are counted in it)
        settings = self.settings.with_overrides(redis_url=launch.redis_url)
        try:
            async with self.opening:
                store = BeatClock(await connect(settings.redis_dsn), settings, self)
        except (PodqError, RedisError, OSError) as e:  # a worker process would exit here
            writer.write(_line(Exited(launch.worker_id, f"could not connect: {e}")))
            return
        worker = Worker(self.config, store, settings, launch.endpoint_id, launch.worker_id)
        worker.version = launch.version
        task = asyncio.create_task(self._serve(worker, store, writer), name=launch.worker_id)
        self.workers[launch.worker_id] = (worker, task)

    async def _serve(self, worker: Worker, store: JobStore, writer: asyncio.StreamWriter) -> None:
        reason = "its run ended"
        try:
            await worker.run()
        except (PodqError, RedisError, OSError) as e:
            reason = f"it failed: {e!r}"
        finally:
            self.workers.pop(worker.worker_id, None)
            await store.close()
        if worker.worker_id not in self.halting:
            writer.write(_line(Exited(worker.worker_id, reason)))

    async def halt(self, halt: Halt, writer: asyncio.StreamWriter) -> None:
        """Stop taking, drain within the grace period (Worker.request_stop, as on SIGTERM)."""
        entry = self.workers.get(halt.worker_id)
        if entry is not None:
            worker, task = entry
            self.halting.add(halt.worker_id)
            worker.request_stop()
            try:  # the process backend's SIGKILL after grace + 5 s
                await asyncio.wait_for(asyncio.shield(task), halt.grace_s + 5)
            except TimeoutError:
                task.cancel()
            self.halting.discard(halt.worker_id)
        writer.write(_line(Halted(halt.worker_id)))

    async def probe(self) -> None:
        """The loop's own lag: how late a PROBE_S sleep wakes up."""
        while True:  # perf_counter: uvloop's loop.time() counts whole milliseconds
            t0 = time.perf_counter()
            await asyncio.sleep(PROBE_S)
            self.load.lag_ms.append((time.perf_counter() - t0 - PROBE_S) * 1000)


async def serve(port: int, seed: int) -> None:
    fleet = Fleet(seed)
    probe = asyncio.create_task(fleet.probe())
    server = await asyncio.start_server(fleet.session, "127.0.0.1", port, limit=1 << 20)
    try:
        async with server:
            await server.serve_forever()
    finally:
        probe.cancel()


def main() -> None:
    p = argparse.ArgumentParser(description="Simulated podq workers for bench/scenarios/fleet.py.")
    p.add_argument("--port", type=int, required=True, help="where the RecordingBackend connects")
    p.add_argument("--seed", type=int, default=0, help="seed of the execution times")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    eventloop.run(serve(args.port, args.seed))


if __name__ == "__main__":
    main()
