"""The backend seam for engines that place GPUs themselves (Kubernetes, Swarm): the loop passes
the request instead of picking devices from its own host, and a worker the engine cannot place
yet is shown as waiting (status reason, /health `throttled`) instead of being restarted.

`EngineWithoutFreeGpus` stands in for a cluster's scheduler at the backend interface only: it
records what it was asked to start and lists every worker as not placed, with the reason an
engine gives, until the test places it. It starts no process (nothing would run on it).
"""

from __future__ import annotations

import asyncio

import pytest

from scaler.backends.base import WorkerHandle, WorkerSpec
from scaler.loop import Scaler
from scaler.reconcile import Timing
from serverless.model import EndpointConfig, EndpointStatus, Template
from serverless.registry import Registry
from serverless.settings import Settings
from serverless.store import JobStore, now_ms

REASON = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu"


class EngineWithoutFreeGpus:
    name = "cluster"
    places_gpus = True

    def __init__(self) -> None:
        self.specs: list[WorkerSpec] = []
        self.handles: dict[str, WorkerHandle] = {}
        self.stopped: list[str] = []

    async def start(self, spec: WorkerSpec) -> WorkerHandle:
        self.specs.append(spec)
        handle = WorkerHandle(worker_id=spec.worker_id, endpoint_id=spec.endpoint_id,
                              version=spec.version, ref=spec.worker_id, started_at=now_ms(),
                              pending=REASON)
        self.handles[spec.worker_id] = handle
        return handle

    def place(self, worker_id: str) -> None:
        h = self.handles[worker_id]
        self.handles[worker_id] = WorkerHandle(worker_id=h.worker_id, endpoint_id=h.endpoint_id,
                                               version=h.version, ref=h.ref, started_at=now_ms())

    async def stop(self, handle: WorkerHandle, grace_s: float) -> None:
        self.stopped.append(handle.worker_id)
        self.handles.pop(handle.worker_id, None)

    async def list(self) -> list[WorkerHandle]:
        return list(self.handles.values())

    async def close(self) -> None:
        pass


async def until(predicate, timeout: float = 10):
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if value := await predicate():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
async def scaler(store: JobStore, settings: Settings):
    registry = Registry(store.redis)
    engine = EngineWithoutFreeGpus()
    await registry.put_template(Template(id="t-gpu", name="gpu", image_name="example/llm:1"))
    endpoint = await registry.put_endpoint(EndpointConfig(
        id="ep-gpu", name="gpu", template_id="t-gpu", gpu_ids="ADA_80_PRO,HOPPER_141", gpu_count=2,
        workers_min=1, workers_max=2, backend="cluster", cpus=4, memory_gb=1.5))
    # the scaler's own host has no GPU: with the process backend this endpoint would fail
    loop = Scaler(registry, store, {"cluster": engine}, settings, tick_s=0.05,
                  timing=Timing(stale_after_ms=6_000, ready_timeout_ms=400), inventory=lambda: [])
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    yield registry, engine, endpoint
    stop.set()
    await task
    await loop.close()


async def test_the_engine_gets_the_request_and_a_worker_it_cannot_place_waits(scaler, store) -> None:
    registry, engine, endpoint = scaler
    await until(lambda: _started(engine))
    spec = engine.specs[0]
    assert (spec.gpu_count, spec.gpu_names, spec.gpu_uuids) == (2, ["H100", "H200"], [])
    assert (spec.cpus, spec.memory_mb) == (4, 1536)  # the endpoint's limits, for the engine
    got = await until(lambda: _with_reason(registry, endpoint.id))
    assert got.status is EndpointStatus.INITIALIZING
    assert got.status_reason == f"1 worker(s) waiting for placement: {REASON}"
    health = await store.health(endpoint.id)
    assert (health.workers.throttled, health.workers.unhealthy) == (1, 0)
    await asyncio.sleep(1.0)  # more than twice the ready timeout
    assert len(engine.specs) == 1 and engine.stopped == []  # not restarted, not churned


async def test_once_placed_the_ready_timeout_counts_from_placement(scaler, store) -> None:
    registry, engine, endpoint = scaler
    await until(lambda: _started(engine))
    await asyncio.sleep(0.6)  # pending past the ready timeout: still left alone
    assert engine.stopped == []
    engine.place(engine.specs[0].worker_id)
    # placed, but its worker never sends a heartbeat: unhealthy after 400 ms, and replaced
    await until(lambda: _eq(len(engine.stopped), 1), timeout=5)
    await until(lambda: _eq(len(engine.specs), 2), timeout=5)


async def _started(engine) -> bool:
    return bool(engine.specs)


async def _with_reason(registry, endpoint_id):
    got = await registry.get_endpoint(endpoint_id)
    return got if got.status_reason else None


async def _eq(a, b) -> bool:
    return a == b
