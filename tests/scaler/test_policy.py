"""desired_workers: one row per RunPod scaling rule."""

from __future__ import annotations

import pytest

from scaler.policy import Observed, desired_workers
from serverless.model import EndpointConfig, QueueStats, ScalerType


def ep(base: dict, **kw) -> EndpointConfig:
    return EndpointConfig(**{"id": "e", "name": "e", "template_id": "t", **base, **kw})


def obs(workers=0, queued=0, low=0, wait_s=0.0, running=0, zero=False, starting=0) -> Observed:
    q = QueueStats(in_queue=queued + low, in_queue_normal=queued,
                   oldest_wait_ms=int(wait_s * 1000) if queued else 0, in_progress=running)
    return Observed(queue=q, workers=workers, zero_requested=zero, starting=starting)


QD = dict(scaler_type=ScalerType.QUEUE_DELAY, scaler_value=4, workers_min=0, workers_max=3)
RC = dict(scaler_type=ScalerType.REQUEST_COUNT, scaler_value=2, workers_min=0, workers_max=5)


@pytest.mark.parametrize(
    "observed,endpoint,expected",
    [
        # QUEUE_DELAY
        (obs(workers=0, queued=1), ep(QD), 1),  # with zero workers the first job starts one at once
        (obs(workers=1, queued=5, wait_s=1), ep(QD), 1),  # waiting less than scaler_value: hold
        (obs(workers=1, queued=5, wait_s=5), ep(QD), 2),  # waited longer than scaler_value: add one
        (obs(workers=3, queued=50, wait_s=60), ep(QD), 3),  # never above workers_max
        (obs(workers=1, queued=5, wait_s=5, starting=1), ep(QD), 1),  # one at a time: wait for the booting one
        (obs(workers=2, running=1), ep(QD), 1),  # nothing waits: idle workers may go
        (obs(workers=2), ep(QD, workers_min=1), 1),  # ... down to workers_min
        (obs(workers=0), ep(QD, workers_min=2), 2),  # workers_min is kept even when idle
        (obs(workers=0, low=10), ep(QD), 1),  # lowPriority jobs and no worker: one (a batch runs)
        (obs(workers=1, low=10, wait_s=60), ep(QD), 1),  # ... and never more
        (obs(workers=0, low=10), ep(QD, paused=True), 0),  # paused still means none
        (obs(workers=1, queued=1, low=9, wait_s=9), ep(QD), 2),  # ... but normal jobs do
        # REQUEST_COUNT
        (obs(workers=0, queued=1), ep(RC), 1),  # ceil(1 / 2)
        (obs(workers=1, queued=3, running=2), ep(RC), 3),  # ceil((3 + 2) / 2)
        (obs(workers=1, queued=30), ep(RC), 5),  # capped at workers_max
        (obs(workers=4, running=1), ep(RC), 1),  # load fell: the target falls
        (obs(workers=0, low=8), ep(RC), 1),  # lowPriority jobs are not counted, beyond one worker
        (obs(workers=1, low=8, running=1), ep(RC), 1),
        # lifecycle
        (obs(workers=2, queued=9, wait_s=9), ep(QD, paused=True), 0),  # paused: no workers
        (obs(workers=2, zero=True), ep(QD, workers_min=2), 0),  # scale_to_zero beats workers_min
        (obs(workers=0, queued=1, zero=True), ep(QD, workers_min=2), 2),  # ... until a job comes
    ],
)
def test_desired_workers(observed, endpoint, expected) -> None:
    assert desired_workers(observed, endpoint) == expected
