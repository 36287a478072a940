"""The fleet scenario's pieces on a real redis-server: the real scaler loop, the RecordingBackend
and the simulated workers (bench/fleet_backend.py) serve a small burst end to end. A functional
test: it checks what happened (every job completed, starts and stops recorded), not how fast."""

from __future__ import annotations

import math

import pytest

from bench.fleet_backend import RecordingBackend
from bench.scenarios.fleet import Plan, measure
from scaler.backends.base import BackendError, WorkerSpec
from serverless.store import JobStore

pytestmark = pytest.mark.slow


async def test_three_workers_serve_a_burst_and_are_stopped(store: JobStore, redis_url: str) -> None:
    plan = Plan(n=3, burst=200, steady_s=1, drain_cap_s=30, ramp_s=2, idle_s=1, tick_s=0.5,
                heartbeat_ms=500)
    figures = await measure(redis_url, plan)  # `store` emptied this test's Redis

    burst = figures.burst
    assert burst.completed == 200
    assert not math.isnan(burst.drained_s)
    assert not math.isnan(burst.started_s) and not math.isnan(burst.ready_s)
    assert not math.isnan(burst.down_s)  # back to workers_min 0 after idle_timeout
    # the steady phase started 3 and stopped them, the burst did the same, QUEUE_DELAY started 1+
    assert len(figures.started) >= 7
    assert len(figures.stopped) >= 6
    assert figures.ramp_started >= 1
    specs = [s.spec for s in figures.started]
    assert {(s.endpoint_id, s.version, s.gpu_count, s.redis_url) for s in specs} == {("fleet", 1, 0, redis_url)}
    assert {s.worker_id for s in figures.stopped} <= {s.worker_id for s in specs}
    assert all(s.grace_s == 25.0 for s in figures.stopped)  # Settings.grace_period_s, as the scaler passes it
    assert figures.exits == []
    steady = figures.steady
    assert steady.clients >= 2 * plan.n  # a JobStore pool and a doorbell connection each
    assert steady.window.ops_s > 0 and steady.memory_b > 0
    assert steady.window.late.count > 0  # the generator measured its beats


@pytest.mark.parametrize("fields,message", [
    ({"gpu_count": 1}, "worker w1: simulated workers have no GPU; set the endpoint's gpu_count to 0"),
    ({"gpu_uuids": ["GPU-1"]}, "worker w1: simulated workers have no GPU; set the endpoint's gpu_count to 0"),
    ({"cpus": 2.0}, "worker w1: simulated workers are not containers and cannot be limited; "
                    "set the endpoint's cpus and memory_gb to 0"),
    ({"memory_mb": 512}, "worker w1: simulated workers are not containers and cannot be limited; "
                         "set the endpoint's cpus and memory_gb to 0"),
])
async def test_recording_backend_refuses_what_a_simulated_worker_cannot_have(fields, message) -> None:
    backend = RecordingBackend(links=[])
    spec = WorkerSpec(endpoint_id="ep", worker_id="w1", version=1, redis_url="redis://x", **fields)
    with pytest.raises(BackendError) as e:
        await backend.start(spec)
    assert str(e.value) == message
    assert backend.started == [] and await backend.list() == []
