"""Handler faults in real worker processes: every job still ends in exactly one terminal state,
and the worker (or its replacement) serves the next job.

(a) an exception -> FAILED, worker keeps serving: tests/worker/test_runtime.py::
    test_exception_becomes_failed_with_type_message_traceback (and the memory case below).
(b) the process dies mid-job (os._exit) -> retried on lease expiry up to max_attempts, then FAILED;
    the scaler (process backend) brings a worker back.
(c) a handler runs forever past executionTimeout: sync (a pool thread) and async (blocks the loop).
(d) a handler allocates without bound under PODQ_WORKER_MEMORY_MB -> FAILED, worker keeps serving.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest

from scaler.backends.process import ProcessBackend
from scaler.loop import Scaler
from serverless.errors import ConfigError
from serverless.model import EndpointConfig, Policy, RunRequest, Status, Template
from serverless.registry import Registry
from serverless.settings import Settings, load_settings
from tests.worker.conftest import wait_for_worker
from tests.scaler_running import running

HANDLERS = Path(__file__).parent / "handlers"
SYNC, ASYNC = str(HANDLERS / "faulty_sync.py"), str(HANDLERS / "faulty_async.py")
pytestmark = pytest.mark.slow


def req(mode: str = "ok", timeout_ms: int | None = None) -> RunRequest:
    policy = Policy(executionTimeout=timeout_ms) if timeout_ms else None
    return RunRequest(input=msgspec.Raw(msgspec.json.encode({"mode": mode})), policy=policy)


async def run_ok(store, endpoint: str, timeout: float = 20) -> dict:
    rec = await store.submit(endpoint, req())
    done = await store.wait(rec.id, timeout)
    assert done.status is Status.COMPLETED, (done.status, done.error)
    return msgspec.json.decode(done.output)


async def test_crashing_handler_is_retried_then_failed_and_the_scaler_replaces_the_worker(
        store, settings: Settings, tmp_path: Path) -> None:
    fast = Settings(redis_url=settings.redis_url, heartbeat_ms=200, lease_ms=1500, grace_period_s=2)
    registry, backend = Registry(store.redis), ProcessBackend(fast.redis_url, log_dir=str(tmp_path))
    await registry.put_template(Template(id="t-faulty", name="faulty", handler=SYNC, env={
        "PODQ_HEARTBEAT_MS": "200", "PODQ_LEASE_MS": "1500", "PODQ_LOG_LEVEL": "INFO"}))
    endpoint = await registry.put_endpoint(EndpointConfig(
        id="ep-crash", name="crash", template_id="t-faulty", gpu_ids="ANY", workers_min=1, workers_max=1))
    async with running(Scaler(registry, store, {"process": backend}, fast, tick_s=0.1), backend):
        first = await run_ok(store, endpoint.id)
        t0 = time.monotonic()
        rec = await store.submit(endpoint.id, req("crash"))
        done = await store.wait(rec.id, 45)
        took = time.monotonic() - t0
        assert done.status is Status.FAILED, (done.status, _logs(tmp_path))
        assert done.attempt == 3 and done.tries == 3
        assert "worker lost during attempt 3" in done.error and "OOM" in done.error
        assert (await store.health(endpoint.id)).jobs.retried == 2
        after = await run_ok(store, endpoint.id, 30)  # a fresh worker, started by the scaler
        assert after["pid"] != first["pid"]
        handles = [h for h in await backend.list() if h.running]
        assert len(handles) == 1  # replaced, not duplicated
        print(f"crash x3 -> FAILED in {took:.1f} s")


def _logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(folder.glob("*.log")))


async def test_sync_handler_past_its_timeout_times_out_and_the_worker_reexecs(
        store, endpoint, spawn_worker) -> None:
    proc = spawn_worker(SYNC, "spinner")
    await wait_for_worker(store, endpoint, "spinner")
    before = await run_ok(store, endpoint)
    rec = await store.submit(endpoint, req("spin", timeout_ms=1000))
    done = await store.wait(rec.id, 15)
    assert done.status is Status.TIMED_OUT
    assert "executionTimeout of 1000 ms" in done.error and "re-executes itself" in done.error
    assert done.finished_at - done.started_at < 2500  # close to its timeout
    after = await run_ok(store, endpoint)
    # the same process (pid, worker id), re-executed: a fresh interpreter without the thread
    assert after["pid"] == before["pid"] == proc.pid and after["worker"] == "spinner"
    assert after["boot"] != before["boot"]
    assert proc.poll() is None


async def test_async_handler_blocking_the_loop_times_out_via_the_watchdog(
        store, endpoint, spawn_worker) -> None:
    """executionTimeout (3 s) longer than the lease (2 s): the watchdog keeps the lease while
    the loop is blocked, so the job is neither reaped nor retried on the other worker."""
    proc = spawn_worker(ASYNC, "blocker")
    await wait_for_worker(store, endpoint, "blocker")
    before = await run_ok(store, endpoint)
    rec = await store.submit(endpoint, req("block", timeout_ms=3000))
    running = await _until_running(store, rec.id)
    assert running.worker_id == "blocker"
    spawn_worker(ASYNC, "bystander")  # would reap the job if its lease ran out
    done = await store.wait(rec.id, 20)
    assert done.status is Status.TIMED_OUT, (done.status, done.error)
    assert "executionTimeout of 3000 ms" in done.error and "blocked the worker's event loop" in done.error
    assert done.attempt == 1 and (await store.health(endpoint)).jobs.retried == 0
    assert done.finished_at - done.started_at < 5000
    for _ in range(100):  # the re-executed blocker registers again
        beats = {b.id: b for b in await store.workers(endpoint)}
        if "blocker" in beats and beats["blocker"].state.value == "idle":
            break
        await asyncio.sleep(0.1)
    assert proc.poll() is None
    seen = {(await run_ok(store, endpoint))["boot"] for _ in range(6)}
    assert before["boot"] not in seen  # the blocker serves again, from a fresh interpreter


async def _until_running(store, job_id: str, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = await store.get(job_id)
        if rec.status is Status.IN_PROGRESS:
            return rec
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never started")


async def test_memory_blowup_under_the_cap_fails_the_job_and_the_worker_keeps_serving(
        store, endpoint, spawn_worker) -> None:
    proc = spawn_worker(SYNC, "hog", PODQ_WORKER_MEMORY_MB="400")
    await wait_for_worker(store, endpoint, "hog")
    before = await run_ok(store, endpoint)
    rec = await store.submit(endpoint, req("hog"))
    done = await store.wait(rec.id, 20)
    assert done.status is Status.FAILED
    error = msgspec.json.decode(done.error)
    assert error["error_type"] == "<class 'MemoryError'>"
    assert "memory cap of 400 MB (PODQ_WORKER_MEMORY_MB)" in error["error_message"]
    after = await run_ok(store, endpoint)
    assert after["boot"] == before["boot"] and proc.poll() is None  # same process, still serving


def test_memory_cap_setting() -> None:
    assert load_settings({}).worker_memory_mb == 0  # no cap
    assert load_settings({"PODQ_WORKER_MEMORY_MB": "4096"}).worker_memory_mb == 4096
    for bad in ("4G", "-1"):
        with pytest.raises(ConfigError, match="PODQ_WORKER_MEMORY_MB has an invalid value"):
            load_settings({"PODQ_WORKER_MEMORY_MB": bad})
