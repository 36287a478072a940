"""How many workers an endpoint should have: a pure function of what was observed.

RunPod's rules (shared/reference/runpod-api.md 4.4, shared/DESIGN.md "Scaling"):
- QUEUE_DELAY (scaler_value = seconds): add a worker when the oldest queued job has waited
  longer than scaler_value; with zero workers the first job starts one at once. podq adds one
  at a time: not while a worker it started is still booting (RunPod does not say; without this
  a cold start longer than scaler_value would start a worker every tick).
- REQUEST_COUNT (scaler_value = jobs per worker): ceil((in_queue + in_progress) / scaler_value).
- lowPriority jobs never cause a scale-up (they wait for workers that exist), except from zero:
  an endpoint with only lowPriority work queued gets one worker, or a batch (serverless/batches
  queues its inputs lowPriority) sent to an idle endpoint would wait forever.
- Always within workers_min..workers_max; paused means 0; scale-to-zero means 0 until a job comes.
Scaling *down* is not decided here: a target below the current count only allows the
reconciler to stop workers that have been idle for idle_timeout (see reconcile.py).
"""

from __future__ import annotations

import math

import msgspec

from serverless.model import EndpointConfig, QueueStats, ScalerType


class Observed(msgspec.Struct, kw_only=True):
    """One endpoint's state in one tick."""

    queue: QueueStats
    workers: int  # workers that exist (starting, idle or running), any version
    starting: int = 0  # of those, workers that have not sent a heartbeat yet
    zero_requested: bool = False


def desired_workers(observed: Observed, endpoint: EndpointConfig) -> int:
    """The number of workers `endpoint` should have now.

    Args:
        observed: queue statistics and the current worker count.
        endpoint: the endpoint's settings.

    Returns:
        A count within workers_min..workers_max (0 when paused or scaled to zero).
    """
    q = observed.queue
    if endpoint.paused:
        return 0
    if observed.zero_requested and q.in_queue == 0 and q.in_progress == 0:
        return 0
    if endpoint.scaler_type is ScalerType.REQUEST_COUNT:
        # running jobs count whatever their priority: they hold a worker already
        wanted = math.ceil((q.in_queue_normal + q.in_progress) / endpoint.scaler_value)
    else:
        wanted = _queue_delay(observed, endpoint)
    if wanted == 0 and q.in_queue > q.in_queue_normal:
        wanted = 1  # lowPriority work and no worker: one, never more
    return clamp(wanted, endpoint)


def _queue_delay(observed: Observed, endpoint: EndpointConfig) -> int:
    q = observed.queue
    if q.in_queue_normal == 0:
        # nothing waits: keep the workers that run jobs; idle ones may go after idle_timeout
        return min(observed.workers, q.in_progress) if q.in_progress else 0
    if observed.workers == 0:
        return 1  # the first job starts a worker at once
    if q.oldest_wait_ms > endpoint.scaler_value * 1000 and observed.starting == 0:
        # one at a time: a worker still starting will take from the queue soon, and adding
        # another for every tick of its cold start would overshoot
        return observed.workers + 1
    return observed.workers


def clamp(wanted: int, endpoint: EndpointConfig) -> int:
    return max(endpoint.workers_min, min(endpoint.workers_max, wanted))
