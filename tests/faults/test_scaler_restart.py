"""The scaler process is SIGKILLed while its workers run jobs, and a new one is started: it adopts
the running workers (no duplicates, no orphans) and no job is lost or run twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from scaler.backends.process import ProcessBackend
from serverless.model import EndpointConfig, RunRequest, Status, Template
from serverless.registry import Registry
from tests.worker.conftest import ROOT

WORK = str(ROOT / "tests" / "scaler" / "handlers" / "work.py")
pytestmark = pytest.mark.slow


def start_scaler(redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PODQ_REDIS_URL": redis_url, "PODQ_HEARTBEAT_MS": "200",
           "PODQ_LEASE_MS": "2000", "PODQ_GRACE_PERIOD_S": "3", "PODQ_LOG_LEVEL": "INFO"}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "serverless.cli", "scaler", "--tick", "0.2"],
                                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


async def running(backend: ProcessBackend) -> list[str]:
    return sorted(h.worker_id for h in await backend.list() if h.running)


async def test_sigkilled_scaler_is_replaced_and_adopts_running_workers(store, redis_url, tmp_path) -> None:
    registry = Registry(store.redis)
    await registry.put_template(Template(id="t-work", name="work", handler=WORK, env={
        "PODQ_HEARTBEAT_MS": "200", "PODQ_LEASE_MS": "2000"}))
    endpoint = await registry.put_endpoint(EndpointConfig(
        id="ep-adopt", name="adopt", template_id="t-work", gpu_ids="ANY", workers_min=2, workers_max=2))
    backend = ProcessBackend(redis_url, log_dir=str(tmp_path))  # lists what the scaler started
    log = tmp_path / "scaler.log"
    first = start_scaler(redis_url, log)
    second = None
    try:
        deadline = time.monotonic() + 30
        while len(await running(backend)) < 2:
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        workers = await running(backend)
        pids = sorted(h.ref for h in await backend.list())
        ids = [(await store.submit(endpoint.id, RunRequest(
            input=msgspec.Raw(b'{"seconds": 0.5}')))).id for _ in range(16)]
        while Status.IN_PROGRESS not in [(await store.get(i)).status for i in ids]:
            await asyncio.sleep(0.05)

        first.send_signal(signal.SIGKILL)  # no drain, no lease hand-back: gone
        first.wait()
        second = start_scaler(redis_url, log)

        peak, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 30:
            peak = max(peak, len(await running(backend)))
            statuses = [(await store.get(i)).status for i in ids]
            if all(s is Status.COMPLETED for s in statuses) and time.monotonic() - t0 > 7:
                break  # and past the old leader lease (5 s), so the new scaler has acted
            await asyncio.sleep(0.1)
        assert statuses == [Status.COMPLETED] * len(ids), (statuses, log.read_text()[-3000:])
        assert await store.redis.get("podq:scaler:leader")  # the first one's lease ran out: the new leader
        assert peak == 2  # never a duplicate worker
        assert await running(backend) == workers  # the same workers, adopted
        assert sorted(h.ref for h in await backend.list()) == pids  # the same processes
        health = await store.health(endpoint.id)
        assert health.jobs.retried == 0 and health.jobs.failed == 0  # no job lost or re-run
        beats = sorted(b.id for b in await store.workers(endpoint.id))
        assert beats == workers  # every worker process is registered: no orphans
        assert "podq scaler" not in log.read_text()  # no error exit
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
        for handle in await backend.list():
            await backend.stop(handle, 0.5)
