"""The control loop end to end: real redis-server, real worker processes (process backend)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import msgspec
import pytest

from scaler.backends.base import BackendError, WorkerHandle, WorkerSpec
from scaler.backends.process import ProcessBackend
from scaler.loop import Scaler, worker_drain_s
from serverless.model import (
    EndpointConfig, EndpointStatus, GpuInfo, RunRequest, ScalerType, Status, Template,
)
from serverless.registry import Registry
from serverless.settings import Settings
from serverless.store import JobStore
from tests.scaler_running import running

HANDLERS = Path(__file__).parent / "handlers"
pytestmark = pytest.mark.slow


@pytest.fixture
def scaler_settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, lease_ms=2_000, heartbeat_ms=200, grace_period_s=3)


@pytest.fixture
async def env(scaler_settings: Settings, store: JobStore, tmp_path: Path):
    registry = Registry(store.redis)
    backend = ProcessBackend(scaler_settings.redis_url, log_dir=str(tmp_path))
    worker_env = {"PODQ_HEARTBEAT_MS": "200", "PODQ_LEASE_MS": "2000"}
    os.environ.update(worker_env)
    yield registry, backend
    for name in worker_env:
        os.environ.pop(name, None)
    for handle in await backend.list():
        await backend.stop(handle, 0.5)


async def make_endpoint(registry: Registry, handler: str = "work.py", **kw) -> EndpointConfig:
    template = await registry.put_template(Template(id="t-" + handler.split(".")[0], name="t",
                                                    handler=str(HANDLERS / handler)))
    fields = dict(id="ep-scale", name="scale", template_id=template.id, gpu_ids="ANY",
                  workers_min=0, workers_max=3, idle_timeout=1, scaler_value=0.5)
    return await registry.put_endpoint(EndpointConfig(**{**fields, **kw}))


def running_scaler(registry, store, backend, settings, ident="s1") -> AbstractAsyncContextManager[Scaler]:
    """A scaler with the process backend; its workers are left running (the tests stop them)."""
    return running(Scaler(registry, store, {"process": backend}, settings, ident=ident, tick_s=0.1))


def job(seconds: float = 0, **kw) -> RunRequest:
    return RunRequest(input=msgspec.Raw(msgspec.json.encode({"seconds": seconds})), **kw)


async def until(predicate, timeout: float = 20, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


async def count(backend) -> int:
    return len([h for h in await backend.list() if h.running])


async def test_first_job_wakes_zero_workers_and_idle_shrinks_back(env, store, scaler_settings) -> None:
    registry, backend = env
    endpoint = await make_endpoint(registry)
    async with running_scaler(registry, store, backend, scaler_settings):
        await asyncio.sleep(0.3)
        assert await count(backend) == 0
        assert (await registry.get_endpoint(endpoint.id)).status is EndpointStatus.SCALED_TO_ZERO
        t0 = time.monotonic()
        rec = await store.submit(endpoint.id, job())
        done = await store.wait(rec.id, 20)
        cold_start = time.monotonic() - t0
        assert done.status is Status.COMPLETED
        await until(lambda: _has_status(registry, endpoint.id, EndpointStatus.RUNNING), timeout=1)
        await until(lambda: _eq(count(backend), 0), timeout=10)  # idle_timeout 1 s
        await until(lambda: _has_status(registry, endpoint.id, EndpointStatus.SCALED_TO_ZERO), timeout=2)
    print(f"process cold start: {cold_start * 1000:.0f} ms")


async def _has_status(registry, endpoint_id, status) -> bool:
    return (await registry.get_endpoint(endpoint_id)).status is status


async def _eq(aw, value) -> bool:
    return (await aw) == value


async def test_grows_to_max_under_queue_delay_and_serves_all(env, store, scaler_settings) -> None:
    registry, backend = env
    endpoint = await make_endpoint(registry, workers_max=3)
    ids = [(await store.submit(endpoint.id, job(1.0))).id for _ in range(12)]
    peak = 0
    async with running_scaler(registry, store, backend, scaler_settings):
        async def all_done() -> bool:
            nonlocal peak
            peak = max(peak, await count(backend))
            return [(await store.get(i)).status for i in ids] == [Status.COMPLETED] * len(ids)

        await until(all_done, timeout=40, every=0.1)
    assert peak == 3


async def test_low_priority_jobs_start_one_worker_and_never_more(env, store, scaler_settings) -> None:
    from serverless.model import Policy

    registry, backend = env
    endpoint = await make_endpoint(registry, workers_max=3)
    recs = [await store.submit(endpoint.id, job(policy=Policy(lowPriority=True))) for _ in range(6)]
    seen: list[int] = []

    async def sample() -> None:
        while True:
            seen.append(await count(backend))
            await asyncio.sleep(0.05)

    async with running_scaler(registry, store, backend, scaler_settings):
        sampler = asyncio.create_task(sample())
        for rec in recs:  # the one worker serves them all: a batch on an idle endpoint runs
            assert (await store.wait(rec.id, 20)).status is Status.COMPLETED
        sampler.cancel()
    assert max(seen) == 1


async def test_pause_keeps_jobs_queued_and_resume_serves_them(env, store, scaler_settings) -> None:
    registry, backend = env
    endpoint = await make_endpoint(registry, workers_min=1)
    async with running_scaler(registry, store, backend, scaler_settings):
        await until(lambda: _eq(count(backend), 1))
        await registry.put_endpoint(msgspec.structs.replace(endpoint, paused=True))
        await until(lambda: _eq(count(backend), 0))
        assert (await registry.get_endpoint(endpoint.id)).status is EndpointStatus.PAUSED
        rec = await store.submit(endpoint.id, job())
        await asyncio.sleep(0.5)
        assert (await store.get(rec.id)).status is Status.IN_QUEUE and await count(backend) == 0
        await registry.put_endpoint(endpoint)  # resume
        assert (await store.wait(rec.id, 20)).status is Status.COMPLETED


async def test_scale_to_zero_beats_min_until_next_job(env, store, scaler_settings) -> None:
    registry, backend = env
    endpoint = await make_endpoint(registry, workers_min=1)
    async with running_scaler(registry, store, backend, scaler_settings):
        await until(lambda: _eq(count(backend), 1))
        await registry.request_scale_to_zero(endpoint.id)
        await until(lambda: _eq(count(backend), 0))
        assert (await registry.get_endpoint(endpoint.id)).status is EndpointStatus.SCALED_TO_ZERO
        rec = await store.submit(endpoint.id, job())
        assert (await store.wait(rec.id, 20)).status is Status.COMPLETED
        assert endpoint.id not in await registry.scale_to_zero_requested()
        await asyncio.sleep(1.5)
        assert await count(backend) == 1  # back to workers_min


async def test_update_rolls_workers_without_dropping_in_flight_jobs(env, store, scaler_settings) -> None:
    registry, backend = env
    endpoint = await make_endpoint(registry, workers_min=1)
    async with running_scaler(registry, store, backend, scaler_settings):
        await until(lambda: _eq(count(backend), 1))
        long_job = await store.submit(endpoint.id, job(1.5))
        await until(lambda: _status(store, long_job.id, Status.IN_PROGRESS))
        await registry.put_endpoint(msgspec.structs.replace(endpoint, version=2))
        done = await store.wait(long_job.id, 20)
        assert done.status is Status.COMPLETED and msgspec.json.decode(done.output)["version"] == "1"

        async def only_v2() -> bool:
            handles = [h for h in await backend.list() if h.running]
            return bool(handles) and all(h.version == 2 for h in handles)

        await until(only_v2, timeout=20)
        after = await store.submit(endpoint.id, job())
        assert msgspec.json.decode((await store.wait(after.id, 20)).output)["version"] == "2"


async def _status(store, job_id, status) -> bool:
    return (await store.get(job_id)).status is status


async def test_restarted_scaler_adopts_workers_instead_of_duplicating(env, store, scaler_settings) -> None:
    registry, backend = env
    endpoint = await make_endpoint(registry, workers_min=2)
    async with running_scaler(registry, store, backend, scaler_settings, ident="first"):
        await until(lambda: _eq(count(backend), 2))
    before = sorted(h.worker_id for h in await backend.list())
    fresh_backend = ProcessBackend(scaler_settings.redis_url)  # a new process: nothing in memory
    await store.redis.delete("podq:scaler:leader")  # the first scaler's lease would block 5 s
    async with running_scaler(registry, store, fresh_backend, scaler_settings, ident="second"):
        await asyncio.sleep(1.0)
        after = sorted(h.worker_id for h in await fresh_backend.list())
    assert after == before and len(after) == 2
    assert endpoint.workers_min == 2


async def test_two_scalers_one_leader_never_double_spawn(env, store, scaler_settings) -> None:
    registry, backend = env
    await make_endpoint(registry, workers_min=2)
    other = ProcessBackend(scaler_settings.redis_url)
    async with running_scaler(registry, store, backend, scaler_settings, ident="a") as a, \
            running_scaler(registry, store, other, scaler_settings, ident="b") as b:
        await until(lambda: _eq(count(backend), 2))
        await asyncio.sleep(1.0)
        assert await count(backend) == 2
        assert [a.leader.leading, b.leader.leading].count(True) == 1


async def test_unhealthy_worker_is_replaced_and_its_job_recovered(env, store, scaler_settings) -> None:
    registry, backend = env
    endpoint = await make_endpoint(registry, workers_min=1)
    async with running_scaler(registry, store, backend, scaler_settings):
        (first,) = await until(lambda: _running(backend, 1))
        rec = await store.submit(endpoint.id, job(0.5))
        await until(lambda: _status(store, rec.id, Status.IN_PROGRESS))
        os.kill(int(first.ref), signal.SIGSTOP)  # hung: no heartbeats, lease runs out
        try:
            done = await store.wait(rec.id, 60)
            assert done.status is Status.COMPLETED, _worker_logs(backend)
            assert msgspec.json.decode(done.output)["worker"] != first.worker_id
            await until(lambda: _gone(backend, first.worker_id), timeout=20)
        finally:
            try:
                os.kill(int(first.ref), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _worker_logs(backend: ProcessBackend) -> str:
    """What the workers printed, for the failure message of a test that waited on them."""
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(Path(backend.log_dir).glob("*.log")))


async def test_scaler_requeues_a_job_whose_worker_lost_its_lease(env, store, scaler_settings) -> None:
    """With no live worker to reap it, the control plane puts a lost job back in the queue."""
    registry, backend = env
    endpoint = await make_endpoint(registry, paused=True)  # no worker may start and take it
    rec = await store.submit(endpoint.id, job(0))
    short = JobStore(store.redis, Settings(redis_url=scaler_settings.redis_url, lease_ms=100))
    assert (await short.take(endpoint.id, "w-gone")).id == rec.id
    await asyncio.sleep(0.2)
    async with running_scaler(registry, store, backend, scaler_settings):
        await until(lambda: _status(store, rec.id, Status.IN_QUEUE), timeout=5)
    assert (await store.queue_stats(endpoint.id)).in_queue == 1


async def _running(backend, n: int):
    handles = [h for h in await backend.list() if h.running]
    return handles if len(handles) == n else None


async def _gone(backend, worker_id: str) -> bool:
    return all(h.worker_id != worker_id for h in await backend.list())


async def test_crash_loop_backs_off_and_reports_failed(env, store, scaler_settings) -> None:
    registry, backend = env
    endpoint = await make_endpoint(registry, handler="crash.py", workers_min=1)
    async with running_scaler(registry, store, backend, scaler_settings) as scaler:
        async def failing() -> bool:
            e = await registry.get_endpoint(endpoint.id)
            return e.status is EndpointStatus.FAILED and "keep failing" in e.status_reason

        await until(failing, timeout=20)
        await asyncio.sleep(3)
        assert scaler.backoff.failures[endpoint.id] >= 2
    logs = list(Path(backend.log_dir).glob("*.log"))
    assert any("model weights not found" in p.read_text() for p in logs)
    # backoff 0.5, 1, 2, 4 s...: a handful of starts, not one per 0.1 s tick
    assert 2 <= len(logs) <= 6


async def test_endpoint_needing_a_gpu_on_a_cpu_host_fails_clearly(env, store, scaler_settings) -> None:
    registry, backend = env
    endpoint = await make_endpoint(registry, gpu_ids="HOPPER_141", workers_min=1)
    async with running_scaler(registry, store, backend, scaler_settings):
        async def failed() -> EndpointConfig | None:
            e = await registry.get_endpoint(endpoint.id)
            return e if e.status is EndpointStatus.FAILED else None

        e = await until(failed)
    assert "this host has no GPU" in e.status_reason and await count(backend) == 0


async def test_request_count_scaler(env, store, scaler_settings) -> None:
    registry, backend = env
    endpoint = await make_endpoint(registry, scaler_type=ScalerType.REQUEST_COUNT, scaler_value=2, workers_max=3)
    ids = [(await store.submit(endpoint.id, job(1.0))).id for _ in range(4)]  # ceil(4 / 2) = 2
    async with running_scaler(registry, store, backend, scaler_settings):
        await until(lambda: _eq(count(backend), 2))
        await asyncio.sleep(0.3)
        assert await count(backend) == 2
        for i in ids:
            assert (await store.wait(i, 20)).status is Status.COMPLETED


class GatedBackend(ProcessBackend):
    """The real process backend, but each start() waits until `together` starts are in flight at
    once, records the peak, and refuses the calls numbered in `refuse` (1 = the first start).

    The wait gives up after `wait_s` so a scaler that starts workers one after another fails the
    test (peak 1) instead of hanging it.
    """

    def __init__(self, redis_url: str, log_dir: str, together: int,
                 refuse: frozenset[int] = frozenset(), wait_s: float = 5.0) -> None:
        super().__init__(redis_url, log_dir=log_dir)
        self.together, self.refuse, self.wait_s = together, refuse, wait_s
        self.calls = self.in_flight = self.peak = 0
        self.all_in = asyncio.Event()

    async def start(self, spec: WorkerSpec) -> WorkerHandle:
        self.calls += 1
        call = self.calls
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if self.in_flight >= self.together:
            self.all_in.set()
        try:
            try:
                await asyncio.wait_for(self.all_in.wait(), self.wait_s)
            except asyncio.TimeoutError:
                pass  # the others never came while this one waited: the peak tells
            if call in self.refuse:
                raise BackendError(f"worker {spec.worker_id}: start #{call} refused by the test")
            return await super().start(spec)
        finally:
            self.in_flight -= 1


async def test_one_tick_starts_new_workers_concurrently(env, store, scaler_settings, tmp_path) -> None:
    registry, _ = env
    await make_endpoint(registry, workers_min=3)
    backend = GatedBackend(scaler_settings.redis_url, str(tmp_path), together=3)
    scaler = Scaler(registry, store, {"process": backend}, scaler_settings, ident="s1")
    await scaler.tick()
    await scaler.leader.release()
    assert (backend.calls, backend.peak) == (3, 3)
    assert await count(backend) == 3


async def test_a_refused_start_stops_no_other_and_is_the_reason(env, store, scaler_settings,
                                                                 tmp_path) -> None:
    registry, _ = env
    endpoint = await make_endpoint(registry, workers_min=3)
    backend = GatedBackend(scaler_settings.redis_url, str(tmp_path), together=3, refuse=frozenset({2}))
    scaler = Scaler(registry, store, {"process": backend}, scaler_settings, ident="s1")
    await scaler.tick()
    assert (backend.calls, backend.peak) == (3, 3)
    started = {h.worker_id for h in await backend.list() if h.running}
    assert len(started) == 2 and set(scaler._booting) == started  # both recorded as booting
    e = await registry.get_endpoint(endpoint.id)
    assert e.status is EndpointStatus.FAILED and "start #2 refused by the test" in e.status_reason
    await scaler.tick()  # the next tick starts the one that is missing
    await scaler.leader.release()
    assert backend.calls == 4 and await count(backend) == 3


async def test_endpoint_execution_timeout_applies_to_jobs_without_a_policy(env, store, scaler_settings) -> None:
    registry, backend = env
    endpoint = await make_endpoint(registry, execution_timeout_ms=300)
    async with running_scaler(registry, store, backend, scaler_settings):
        rec = await store.submit(endpoint.id, job(5))
        done = await store.wait(rec.id, 20)
    assert done.status is Status.TIMED_OUT and "executionTimeout of 300 ms" in done.error


async def test_endpoints_are_ticked_concurrently(env, store, scaler_settings, tmp_path) -> None:
    registry, _ = env
    for name in ("one", "two"):
        await make_endpoint(registry, id=f"ep-{name}", name=name, workers_min=1)
    backend = GatedBackend(scaler_settings.redis_url, str(tmp_path), together=2)
    scaler = Scaler(registry, store, {"process": backend}, scaler_settings, ident="s1")
    await scaler.tick()
    await scaler.leader.release()
    assert (backend.calls, backend.peak) == (2, 2)  # the second endpoint's start did not wait
    assert sorted(h.endpoint_id for h in await backend.list()) == ["ep-one", "ep-two"]


class BrokenFor(ProcessBackend):
    """The real process backend, with a bug (not a BackendError) in starts for one endpoint."""

    def __init__(self, redis_url: str, log_dir: str, broken: str) -> None:
        super().__init__(redis_url, log_dir=log_dir)
        self.broken = broken

    async def start(self, spec: WorkerSpec) -> WorkerHandle:
        if spec.endpoint_id == self.broken:
            raise RuntimeError("a bug in the backend")
        return await super().start(spec)


async def test_one_endpoints_failed_tick_stops_no_other(env, store, scaler_settings, tmp_path) -> None:
    registry, _ = env
    await make_endpoint(registry, id="ep-bad", name="a-bad", workers_min=1)  # ticked first
    await make_endpoint(registry, id="ep-good", name="b-good", workers_min=1)
    backend = BrokenFor(scaler_settings.redis_url, str(tmp_path), broken="ep-bad")
    scaler = Scaler(registry, store, {"process": backend}, scaler_settings, ident="s1")
    await scaler.tick()
    await scaler.leader.release()
    assert [h.endpoint_id for h in await backend.list()] == ["ep-good"]


def fake_gpus(n: int) -> list[GpuInfo]:
    """A host's GPUs as NVML would list them (the scaler's inventory is its NVML boundary)."""
    return [GpuInfo(index=i, name="NVIDIA H100 80GB HBM3", uuid=f"GPU-fake-{i}") for i in range(n)]


def one_gpu_scaler(registry, store, backend, settings) -> Scaler:
    """A scaler with the process backend on a host with one (fake) GPU."""
    return Scaler(registry, store, {"process": backend}, settings, ident="s1", tick_s=0.1,
                  inventory=lambda: fake_gpus(1))


async def test_endpoints_on_one_host_never_share_a_gpu(env, store, scaler_settings) -> None:
    registry, backend = env
    for name in ("a", "b", "c"):
        await make_endpoint(registry, id=f"ep-{name}", name=name, workers_min=1, gpu_count=1)
    scaler = Scaler(registry, store, {"process": backend}, scaler_settings, ident="s1",
                    inventory=lambda: fake_gpus(2))
    await scaler.tick()
    await scaler.leader.release()
    handles = await backend.list()
    assert sorted(u for h in handles for u in h.gpu_uuids) == ["GPU-fake-0", "GPU-fake-1"]
    assert len({h.endpoint_id for h in handles}) == 2
    [left] = {"ep-a", "ep-b", "ep-c"} - {h.endpoint_id for h in handles}
    e = await registry.get_endpoint(left)
    assert e.status is EndpointStatus.FAILED and "0 free match" in e.status_reason


async def test_a_draining_worker_keeps_its_gpu_until_it_exits(env, store, scaler_settings) -> None:
    registry, backend = env
    first = await make_endpoint(registry, id="ep-first", name="first", workers_min=1, gpu_count=1)
    async with running(one_gpu_scaler(registry, store, backend, scaler_settings)):
        await until(lambda: _eq(count(backend), 1))
        busy = await store.submit(first.id, job(1.5))
        await until(lambda: _status(store, busy.id, Status.IN_PROGRESS))
        await registry.put_endpoint(msgspec.structs.replace(first, paused=True))  # drains its job
        second = await make_endpoint(registry, id="ep-second", name="second", workers_min=1, gpu_count=1)
        await until(lambda: _endpoint_if(registry, second.id, EndpointStatus.FAILED))
        assert [h.endpoint_id for h in await backend.list()] == ["ep-first"]  # still draining
        assert (await store.wait(busy.id, 20)).status is Status.COMPLETED
        await until(lambda: _endpoint_if(registry, second.id, EndpointStatus.INITIALIZING,
                                         EndpointStatus.RUNNING))
    [handle] = await backend.list()
    assert (handle.endpoint_id, handle.gpu_uuids) == ("ep-second", ["GPU-fake-0"])


class ListingFails(ProcessBackend):
    """The real process backend whose engine cannot list its workers (an API outage)."""

    starts = 0

    async def list(self) -> list[WorkerHandle]:
        raise BackendError("engine unreachable (the test)")

    async def start(self, spec: WorkerSpec) -> WorkerHandle:
        self.starts += 1
        return await super().start(spec)


async def test_an_endpoint_whose_backend_cannot_list_is_left_alone(env, store, scaler_settings,
                                                                    tmp_path) -> None:
    registry, _ = env
    endpoint = await make_endpoint(registry, workers_min=2)
    backend = ListingFails(scaler_settings.redis_url, log_dir=str(tmp_path))
    scaler = Scaler(registry, store, {"process": backend}, scaler_settings, ident="s1")
    await scaler.tick()
    await scaler.leader.release()
    assert backend.starts == 0  # its workers may exist: none is started blind
    assert (await registry.get_endpoint(endpoint.id)).status is not EndpointStatus.FAILED


async def test_update_on_a_host_without_a_spare_gpu_replaces_workers_in_place(env, store,
                                                                              scaler_settings) -> None:
    """One GPU, one worker: version 2 cannot start beside version 1, so the old worker drains
    (its job completes) and the new one starts on the GPU it frees."""
    registry, backend = env
    endpoint = await make_endpoint(registry, workers_min=1, gpu_count=1)
    async with running(one_gpu_scaler(registry, store, backend, scaler_settings)):
        await until(lambda: _eq(count(backend), 1))
        long_job = await store.submit(endpoint.id, job(1.0))
        await until(lambda: _status(store, long_job.id, Status.IN_PROGRESS))
        await registry.put_endpoint(msgspec.structs.replace(endpoint, version=2))
        e = await until(lambda: _endpoint_if(registry, endpoint.id, EndpointStatus.UPDATING))
        assert "no free GPU" in e.status_reason
        done = await store.wait(long_job.id, 20)
        assert done.status is Status.COMPLETED and msgspec.json.decode(done.output)["version"] == "1"
        after = await store.submit(endpoint.id, job())
        assert msgspec.json.decode((await store.wait(after.id, 20)).output)["version"] == "2"
    [handle] = [h for h in await backend.list() if h.running]
    assert (handle.version, handle.gpu_uuids) == (2, ["GPU-fake-0"])


async def _endpoint_if(registry: Registry, endpoint_id: str,
                       *statuses: EndpointStatus) -> EndpointConfig | None:
    e = await registry.get_endpoint(endpoint_id)
    return e if e.status in statuses else None


@pytest.mark.parametrize("grace, drain", [(25, 24), (3, 2), (1, 0.5), (0.4, 0.2), (0, 0)])
def test_a_worker_drains_for_the_scalers_grace_less_a_hand_back_margin(grace, drain) -> None:
    assert worker_drain_s(grace) == pytest.approx(drain)


class Recording(ProcessBackend):
    """The real process backend, keeping the specs it was asked to start."""

    def __init__(self, redis_url: str, log_dir: str) -> None:
        super().__init__(redis_url, log_dir=log_dir)
        self.specs: list[WorkerSpec] = []

    async def start(self, spec: WorkerSpec) -> WorkerHandle:
        self.specs.append(spec)
        return await super().start(spec)


async def test_workers_get_the_scalers_grace_and_the_endpoints_timeout(env, store, scaler_settings,
                                                                         tmp_path) -> None:
    """A container does not inherit the scaler's environment: what the worker must agree on with
    the scaler travels in its spec (the template's env cannot override the grace)."""
    registry, _ = env
    template = await registry.put_template(Template(
        id="t-env", name="t", handler=str(HANDLERS / "work.py"), env={"PODQ_GRACE_PERIOD_S": "600"}))
    await registry.put_endpoint(EndpointConfig(id="ep-env", name="env", template_id=template.id,
                                               workers_min=1, execution_timeout_ms=4_000))
    backend = Recording(scaler_settings.redis_url, str(tmp_path))
    scaler = Scaler(registry, store, {"process": backend}, scaler_settings, ident="s1")
    await scaler.tick()
    await scaler.leader.release()
    [spec] = backend.specs
    assert scaler_settings.grace_period_s == 3
    assert (spec.env["PODQ_GRACE_PERIOD_S"], spec.env["PODQ_EXECUTION_TIMEOUT_MS"]) == ("2.0", "4000")
