"""The scaler's control loop: every tick, observe, decide, act (the Kubernetes controller model).

observe: the registry's endpoints, each endpoint's queue statistics and worker heartbeats from
         Redis, and the workers every backend lists (first requeueing jobs whose lease ran out,
         so a hung endpoint's only worker cannot hold its job until a replacement boots);
decide:  policy.desired_workers (how many) and reconcile.reconcile (which to start and stop);
act:     backend.start / backend.stop, and the endpoint's status in the registry; an endpoint's
         new workers start concurrently, START_CONCURRENCY (8) at a time.
Endpoints are ticked concurrently, ENDPOINT_CONCURRENCY (16) at a time, so one endpoint's slow
engine calls (a pod create, a Docker start) or its failure delays or stops no other. The only
state they share is this host's GPUs: one set of the devices held (by every listed worker of a
backend that takes its GPUs from this host, and by workers still draining), to which each
assignment adds its devices before anything is awaited, so two endpoints never get one GPU.
Nothing is remembered between ticks except actions in flight (stops still draining) and the
crash-loop backoff; a restarted scaler rebuilds everything from the listing.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import uuid
from collections.abc import Callable
from typing import NamedTuple

import msgspec
from redis.exceptions import RedisError

from scaler import gpus
from scaler.backends.base import Backend, BackendError, WorkerHandle, WorkerSpec, container_settings
from scaler.leader import Leader
from scaler.worker_keys import endpoint_worker_key
from scaler.policy import Observed, desired_workers
from scaler.reconcile import Plan, Start, Stop, Timing, reconcile, reported_status
from serverless import lifecycle, nvml, runpod_protocol
from serverless.metrics_store import ScalerTally, stop_action
from serverless.model import (
    EndpointConfig, EndpointStatus, GpuInfo, Template, WorkerBeat, WorkerProtocol, WorkerState,
)
from serverless.registry import Registry
from serverless.settings import Settings
from serverless.store import JobStore, now_ms

log = logging.getLogger("podq.scaler")

MAX_BACKOFF_MS = 60_000
QUICK_DEATH_MS = 30_000  # a worker that dies younger than this counts toward a crash loop
# how many of one endpoint's backend.start calls run at once: a Docker start or a pod create
# takes 0.1-1 s, so starting one after another delays the Nth new worker N times that; yet a
# burst of 100 must not open 100 engine API calls at once
START_CONCURRENCY = 8
# how many endpoints are ticked at once (each tick is a few Redis round trips and the backend's
# calls for that endpoint)
ENDPOINT_CONCURRENCY = 16


def worker_drain_s(grace_s: float) -> float:
    """How long a worker the scaler stops lets its jobs run before it hands the rest back.

    The engine kills it `grace_s` after SIGTERM (Docker's stop timeout, a pod's grace period,
    the process backend's), so the worker gets the scaler's grace less a margin (1 s, or half
    a shorter grace) in which to hand its unfinished jobs back to the queue: a job handed back
    runs again at once and keeps its attempt; one killed mid-run waits out its lease and
    counts as a failed attempt.
    """
    return max(0.0, grace_s - min(1.0, grace_s / 2))


class Backoff:
    """Crash-loop protection per endpoint: each quick death doubles the wait before a start."""

    def __init__(self) -> None:
        self.failures: dict[str, int] = {}
        self.not_before: dict[str, int] = {}

    def failed(self, endpoint_id: str, now: int) -> None:
        n = self.failures.get(endpoint_id, 0) + 1
        self.failures[endpoint_id] = n
        self.not_before[endpoint_id] = now + min(MAX_BACKOFF_MS, 500 * 2 ** (n - 1))

    def healthy(self, endpoint_id: str) -> None:
        self.failures.pop(endpoint_id, None)
        self.not_before.pop(endpoint_id, None)

    def wait_ms(self, endpoint_id: str, now: int) -> int:
        return max(0, self.not_before.get(endpoint_id, 0) - now)


async def start_concurrently(backend: Backend, specs: list[WorkerSpec],
                             limit: int) -> list[WorkerHandle | BaseException]:
    """Await `backend.start` for every spec, at most `limit` at a time.

    Returns:
        One result per spec, in spec order: its WorkerHandle, or the exception its start raised
        (collected, not raised, so that one failed start cancels none of the others).
    """
    gate = asyncio.Semaphore(limit)

    async def start_one(spec: WorkerSpec) -> WorkerHandle:
        async with gate:
            return await backend.start(spec)

    return await asyncio.gather(*(start_one(spec) for spec in specs), return_exceptions=True)


class Stopping(NamedTuple):
    """A worker being stopped (it drains its jobs first): its handle, whether its GPUs are
    this host's (it still holds them until it exits), and the task that stops it."""

    handle: WorkerHandle
    host_gpus: bool
    task: asyncio.Task[None]


class Scaler:
    def __init__(
        self, registry: Registry, store: JobStore, backends: dict[str, Backend], settings: Settings,
        *, ident: str | None = None, tick_s: float = 1.0, timing: Timing | None = None,
        inventory: Callable[[], list[GpuInfo]] = nvml.gpus,
    ) -> None:
        self.registry, self.store, self.backends, self.settings = registry, store, backends, settings
        self.ident = ident or f"scaler-{uuid.uuid4().hex[:8]}"
        self.tick_s = tick_s
        self.timing = timing or Timing(
            stale_after_ms=store.stale_after_ms, ready_timeout_ms=settings.boot_timeout_ms,
            stuck_grace_ms=settings.runpod_stop_grace_ms,
        )
        self.inventory = inventory
        self._gpus_now: list[GpuInfo] | None = None
        self.leader = Leader(store.redis, self.ident)
        self.backoff = Backoff()
        self._stopping: dict[str, Stopping] = {}
        # workers started by this scaler that have not sent a heartbeat yet: one that vanishes
        # from the listing before that (a process that exited at start-up) is a quick death;
        # (endpoint, started at, backend)
        self._booting: dict[str, tuple[str, int, str]] = {}
        # cold starts, decisions and desired workers for /metrics, written once per tick
        self.tally = ScalerTally()

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set; then hand the leader lease back."""
        while not stop.is_set():
            try:
                await self.tick()
            except (RedisError, OSError) as e:
                self._redis_unreachable("scaler tick", e)
            except Exception:  # a tick must never kill the loop; the next one re-observes
                log.exception("scaler tick failed")
            try:
                await asyncio.wait_for(stop.wait(), self.tick_s)
            except asyncio.TimeoutError:
                pass
        await self.leader.release()

    def _redis_unreachable(self, what: str, error: Exception) -> None:
        """`what` could not reach Redis: the store's reaps wait until workers have renewed
        (JobStore.note_unreachable), and the failure is one warning line, not a traceback."""
        self.store.note_unreachable()
        log.warning("%s failed: Redis not reachable (%s); retrying", what, error)

    async def close(self) -> None:
        await asyncio.gather(*(s.task for s in self._stopping.values()), return_exceptions=True)

    async def tick(self) -> None:
        if not await self.leader.hold():
            return
        now = now_ms()
        self._gpus_now = None  # read again, once, if this tick needs it
        endpoints = await self.registry.endpoints()
        zero = await self.registry.scale_to_zero_requested()
        listed = await self._list_all()
        self._count_vanished(listed, now)
        backend_of = {e.id: e.backend for e in endpoints}
        gpus_held = self._host_gpus_held(listed)
        gate = asyncio.Semaphore(ENDPOINT_CONCURRENCY)

        async def tick_one(endpoint: EndpointConfig) -> None:
            if endpoint.backend in self.backends and endpoint.backend not in listed:
                return  # its backend could not list: starting workers now could duplicate them
            handles = [h for h in listed.get(endpoint.backend, []) if h.endpoint_id == endpoint.id]
            async with gate:
                try:
                    await self._tick_endpoint(endpoint, handles, endpoint.id in zero, now, gpus_held)
                except (RedisError, OSError) as e:
                    self._redis_unreachable(f"scaler tick of endpoint {endpoint.id}", e)
                except Exception:  # one endpoint's failure must not stop the others' ticks
                    log.exception("scaler tick of endpoint %s failed", endpoint.id)

        await asyncio.gather(*(tick_one(e) for e in endpoints))
        for name, handles in listed.items():  # workers of deleted endpoints, or left behind
            for h in handles:                 # on a backend their endpoint moved away from
                if backend_of.get(h.endpoint_id) != name:
                    why = "its endpoint was deleted" if h.endpoint_id not in backend_of else "its endpoint moved to another backend"
                    self._stop(self.backends[name], h, why)
        await self.tally.flush(self.store.redis)

    def _count_vanished(self, listed: dict[str, list[WorkerHandle]], now: int) -> None:
        present = {h.worker_id for handles in listed.values() for h in handles}
        for worker_id, (endpoint_id, started_at, backend) in list(self._booting.items()):
            if worker_id not in present and worker_id not in self._stopping:
                del self._booting[worker_id]
                late = now - started_at >= self.timing.ready_timeout_ms
                self.tally.cold_start(endpoint_id, backend, "timeout" if late else "failed", None)
                if now - started_at < QUICK_DEATH_MS:
                    log.warning("worker %s of %s exited during start-up", worker_id, endpoint_id)
                    self.backoff.failed(endpoint_id, now)

    def _gpus(self) -> list[GpuInfo]:
        """This host's GPUs, read (through NVML: milliseconds per device) once per tick."""
        if self._gpus_now is None:
            self._gpus_now = self.inventory()
        return self._gpus_now

    def _host_gpus_held(self, listed: dict[str, list[WorkerHandle]]) -> set[str]:
        """This host's GPUs that workers hold: every running worker listed by a backend that
        takes its GPUs from this host (`places_gpus` False), of any endpoint, and every running
        worker still stopping (it holds its devices until it exits; one that exited holds none)."""
        workers = [h for name, handles in listed.items() if not self.backends[name].places_gpus
                   for h in handles]
        workers += [s.handle for s in self._stopping.values() if s.host_gpus]
        return {u for h in workers if h.running for u in h.gpu_uuids}

    async def _list_all(self) -> dict[str, list[WorkerHandle]]:
        """Every backend's workers (listed at once), less those being stopped; a backend that
        cannot list is left out of this tick (its endpoints are not acted on blindly)."""
        names = list(self.backends)
        results = await asyncio.gather(*(self.backends[n].list() for n in names), return_exceptions=True)
        listed = {}
        for name, found in zip(names, results):
            if isinstance(found, BackendError):
                log.warning("backend %s could not list workers: %s", name, found)
                continue
            if isinstance(found, BaseException):
                raise found
            listed[name] = [h for h in found if h.worker_id not in self._stopping]
        return listed

    async def _tick_endpoint(self, endpoint: EndpointConfig, handles: list[WorkerHandle],
                             zero_requested: bool, now: int, gpus_held: set[str]) -> None:
        backend = self.backends.get(endpoint.backend)
        if backend is None:
            await self.registry.set_status(endpoint.id, EndpointStatus.FAILED,
                                           f"backend {endpoint.backend!r} is not enabled in this scaler; "
                                           f"use one of {', '.join(sorted(self.backends))}")
            return
        requeued, failed = await self.store.reap(endpoint.id, now)
        if requeued or failed:
            log.warning("reaped jobs of lost workers on %s: %d requeued, %d failed",
                        endpoint.id, requeued, failed)
        queue = await self.store.queue_stats(endpoint.id, now)
        if zero_requested and (queue.in_queue or queue.in_progress):
            await self.registry.clear_scale_to_zero(endpoint.id)  # a job woke it up
            zero_requested = False
        beats = {}
        for b in await self.store.workers(endpoint.id):
            if lifecycle.is_gone(b, now, self.store.stale_after_ms):  # a RunPod worker that exited
                await self.store.remove_worker(endpoint.id, b.id)
            else:
                beats[b.id] = b
        ready = {b.id for b in beats.values()
                 if b.state not in (WorkerState.INITIALIZING, WorkerState.THROTTLED)}
        for worker_id in ready:
            booted = self._booting.pop(worker_id, None)
            if booted is not None:
                self.tally.cold_start(endpoint.id, booted[2], "ready", now - booted[1])
        starting = sum(1 for h in handles if h.worker_id not in ready)
        observed = Observed(queue=queue, workers=len(handles), starting=starting,
                            zero_requested=zero_requested)
        desired = desired_workers(observed, endpoint)
        self.tally.desired(endpoint.id, desired)
        pairs = [(h, beats.get(h.worker_id)) for h in handles]
        draining = sum(1 for s in self._stopping.values() if s.handle.endpoint_id == endpoint.id)
        plan = reconcile(endpoint, desired, pairs, now, self.timing,
                         force_zero=endpoint.paused or (zero_requested and desired == 0),
                         room=self._room(endpoint, backend, gpus_held), draining=draining)
        await self._report_pending(endpoint, handles, now)
        problem = await self._act(endpoint, backend, plan, now, gpus_held)
        await self.registry.set_status(endpoint.id, reported_status(plan.status, problem),
                                       problem or plan.reason)

    def _room(self, endpoint: EndpointConfig, backend: Backend, gpus_held: set[str]) -> int | None:
        """How many more workers of `endpoint` this host's free GPUs can take now (gpus.room);
        None for an engine that places GPUs itself."""
        return None if backend.places_gpus else gpus.room(endpoint, self._gpus(), gpus_held)

    async def _report_pending(self, endpoint: EndpointConfig, handles: list[WorkerHandle], now: int) -> None:
        """A worker the engine has not placed has no heartbeat of its own: the scaler writes one
        (state throttled, the engine's reason) each tick, so /health counts it; the worker's own
        first heartbeat replaces it, and one the scaler stops refreshing is no longer counted."""
        for h in handles:
            if h.pending and h.running:
                await self.store.beat(WorkerBeat(
                    id=h.worker_id, endpoint=endpoint.id, state=WorkerState.THROTTLED,
                    reason=h.pending, seen_at=now, started_at=h.started_at, version=h.version,
                ))

    async def _act(self, endpoint: EndpointConfig, backend: Backend, plan: Plan, now: int,
                   gpus_held: set[str]) -> str:
        """Carry out the plan; returns why starting failed ('' when it did not)."""
        if plan.status is EndpointStatus.RUNNING:
            self.backoff.healthy(endpoint.id)
        problem = ""
        for action in plan.actions:
            match action:
                case Stop(handle=handle, reason=why):
                    if why.startswith("worker is") and now - handle.started_at < QUICK_DEATH_MS:
                        self.backoff.failed(endpoint.id, now)
                    self._stop(backend, handle, why)
                    self.tally.decision(endpoint.id, stop_action(why))
                case Start(count=count):
                    problem = await self._start(endpoint, backend, count, now, gpus_held) or problem
        return problem

    async def _start(self, endpoint: EndpointConfig, backend: Backend, count: int, now: int,
                     gpus_held: set[str]) -> str:
        """Start up to `count` new workers of `endpoint`; returns why one could not start ('' when all did).

        Devices are assigned one worker after another (so no two get the same GPU), then the
        starts run concurrently, START_CONCURRENCY at a time. A start that fails cancels no other:
        every worker that did start is recorded, and the first failure (in worker order; a
        missing GPU, which ends the assignment, comes after every start) is the reason returned.
        """
        wait = self.backoff.wait_ms(endpoint.id, now)
        if wait:
            return f"workers keep failing right after start; next try in {wait / 1000:.1f} s (see `podq logs {endpoint.id}`)"
        template = await self.registry.get_template(endpoint.template_id)
        if template is None:
            return f"template {endpoint.template_id!r} no longer exists; point the endpoint at another"
        specs, no_gpu = await self._specs(endpoint, backend, template, count, gpus_held)
        results = await start_concurrently(backend, specs, START_CONCURRENCY)
        for result in results:
            if isinstance(result, WorkerHandle):
                self._booting[result.worker_id] = (endpoint.id, now, endpoint.backend)
                self.tally.decision(endpoint.id, "scale_up")
                log.info("started worker %s for %s (version %d)",
                         result.worker_id, endpoint.id, endpoint.version)
        for result in results:  # a bug, not a backend's refusal: after the started ones are recorded
            if isinstance(result, BaseException) and not isinstance(result, BackendError):
                raise result
        failures = [str(r) for r in results if isinstance(r, BackendError)]
        return failures[0] if failures else no_gpu

    async def _specs(self, endpoint: EndpointConfig, backend: Backend, template: Template, count: int,
                     gpus_held: set[str]) -> tuple[list[WorkerSpec], str]:
        """Specs for up to `count` new workers, and why there are fewer ('' when there are not).

        GPUs are assigned in turn, each worker's devices added to `gpus_held` (this host's
        devices in use, shared by the endpoints ticking now) before anything is awaited; the
        first worker this host has no free GPU for ends the list (gpus.NoGpu).
        """
        specs: list[WorkerSpec] = []
        for _ in range(count):
            try:
                # a cluster engine picks nodes and devices itself; else they come from this host
                devices = [] if backend.places_gpus else gpus.assign(endpoint, self._gpus(), gpus_held)
            except gpus.NoGpu as e:
                return specs, str(e)
            gpus_held.update(devices)
            specs.append(await self._spec(endpoint, template, devices, backend.places_gpus))
        return specs, ""

    async def _spec(self, endpoint: EndpointConfig, template: Template, gpu_uuids: list[str],
                    engine_places: bool = False) -> WorkerSpec:
        worker_id = f"{endpoint.id}-{uuid.uuid4().hex[:8]}"  # new for every start
        # what the engine is asked for (engine_places), or what this host's devices give
        gpu_count = endpoint.gpu_count if engine_places else len(gpu_uuids)
        gpu_names = gpus.wanted_names(endpoint.gpu_ids) if gpu_count else None
        spec = WorkerSpec(
            endpoint_id=endpoint.id, worker_id=worker_id,
            version=endpoint.version, redis_url=self.settings.redis_dsn, image=template.image_name,
            command=shlex.split(template.docker_start_cmd) if template.docker_start_cmd else [],
            handler=template.handler, gpu_uuids=gpu_uuids, gpu_count=gpu_count, gpu_names=gpu_names,
            env={**template.env, "PODQ_EXECUTION_TIMEOUT_MS": str(endpoint.execution_timeout_ms),
                 "PODQ_GRACE_PERIOD_S": str(worker_drain_s(self.settings.grace_period_s))},
            labels=dict(endpoint.labels), protocol=template.protocol.value,
            cpus=endpoint.cpus, memory_mb=round(endpoint.memory_gb * 1024),
            **container_settings(template),
        )
        if template.protocol is WorkerProtocol.RUNPOD:
            # the image's own entrypoint runs unchanged; it finds podq through RunPod's env
            if engine_places:  # the node is not known yet: the first model asked for
                gpu_label = gpu_names[0] if gpu_names else ""
            else:
                names = {g.uuid: g.name for g in self._gpus()}
                gpu_label = names.get(gpu_uuids[0], "") if gpu_uuids else ""
            env = runpod_protocol.worker_env(
                self.settings.gateway_url, endpoint.id, worker_id,
                await endpoint_worker_key(self.store.redis, endpoint.id),
                ping_ms=self.settings.runpod_ping_ms,
                gpu_label=gpu_label,
                template_env=template.env,
            )
            spec = msgspec.structs.replace(spec, env=env, handler=None)
        return spec

    def _stop(self, backend: Backend, handle: WorkerHandle, reason: str) -> None:
        if handle.worker_id in self._stopping:
            return
        log.info("stopping worker %s of %s: %s", handle.worker_id, handle.endpoint_id, reason)
        task = asyncio.create_task(self._stop_and_forget(backend, handle))
        self._stopping[handle.worker_id] = Stopping(handle, not backend.places_gpus, task)

    async def _stop_and_forget(self, backend: Backend, handle: WorkerHandle) -> None:
        try:
            await backend.stop(handle, self.settings.grace_period_s)
            await self.store.remove_worker(handle.endpoint_id, handle.worker_id)
        except BackendError as e:
            log.warning("could not stop worker %s: %s", handle.worker_id, e)
        finally:
            self._stopping.pop(handle.worker_id, None)
