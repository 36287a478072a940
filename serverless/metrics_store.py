"""Cluster metrics held in Redis: the figures /metrics reports the same from every gateway.

A gateway only sees the jobs someone waits on (workers write results straight to Redis), so
job counts and timings cannot be per-process counters: they are counted in Redis, by the
function that makes the move, in the same call (no extra round trip): per endpoint, the stats
hash (keys.STATS), the delay and execution histograms (keys.HIST_DELAY, keys.HIST_EXEC), the
scaler leader's counters (keys.SCALER) and its cold-start histogram (keys.HIST_COLD). keys.py's
docstring lists each hash's fields and the script that writes them.

The scaler's figures are written by `ScalerTally`, one pipeline per tick. Buckets are fixed
(two layouts cannot be merged into one percentile: bull-board's metrics package argues the
same) and in whole ms, since every podq timestamp is. Counters are never reset: a flushed Redis
restarts them at 0, which Prometheus' rate() reads as a counter reset.

`read_cluster` is what a scrape costs: one round trip for the endpoint list, then one pipeline
for every endpoint's figures (queue depth and age, leases, the hashes above, heartbeats).
The key names are spelled in keys.py; `lua_header()` gives the Lua library
(serverless/functions.py) the histogram keys' K_* functions built from them, and the buckets.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from serverless import keys, lifecycle
from serverless.codec import beat_decoder
from serverless.model import WorkerCounts

# Bucket upper bounds in ms (fixed; shared/reference/observability.md section 2): warm pickup
# is ~1 ms, cold starts 10 s to minutes, backlogs can last an hour.
DELAY_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
            120_000, 300_000, 600_000, 1_800_000, 3_600_000)
# podq's default executionTimeout is 10 min
EXEC_MS = (10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000,
           300_000, 600_000, 1_800_000, 3_600_000)
# image pulls and model loads: RunPod images commonly allow 20 min (RUNPOD_INIT_TIMEOUT=1200)
COLD_MS = (500, 1_000, 2_500, 5_000, 10_000, 20_000, 30_000, 60_000, 120_000, 300_000, 600_000,
           1_200_000, 1_800_000)
INF = "+Inf"
SUM = "sum_ms"

# The stats hash's terminal counters (as _lib.lua's COUNTER spells them), and worker states.
FINISHED = ("completed", "failed", "cancelled", "timed_out")
PRIORITIES = ("normal", "low")
WORKER_STATES = tuple(WorkerCounts.__struct_fields__)

# The scaler's stop reasons (scaler/reconcile.py) by the decision they carry out; a start is
# `scale_up`. The first prefix that matches wins.
STOP_ACTIONS = (
    ("worker is ", "replace_unhealthy"),  # dead, or unhealthy (silent, boot timeout, said so)
    ("worker asked to be replaced", "recycle"),
    ("worker still runs a job", "recycle"),
    ("rolled to version", "rolling_update"),
    ("idle for", "scale_down"),
    ("endpoint paused or scaled to zero", "scale_to_zero"),
)


def le_text(bound_ms: float) -> str:
    """A bucket's Prometheus `le` label (seconds, as prometheus_client writes it: 1 -> '1.0')."""
    return repr(bound_ms / 1000)


def bucket(bounds_ms: Sequence[float], value_ms: int) -> str:
    """The `le` of the bucket `value_ms` falls in (the Lua side does the same: _metrics.lua)."""
    for bound in bounds_ms:
        if value_ms <= bound:
            return le_text(bound)
    return INF


def stop_action(reason: str) -> str:
    """The decision a scaler Stop carries out, from its reason (`other` for one not listed)."""
    return next((action for prefix, action in STOP_ACTIONS if reason.startswith(prefix)), "other")


def lua_header() -> str:
    """Key functions K_hist_delay(ep), K_hist_exec(ep) and the bucket tables (bounds in ms and
    their `le` texts) for the Lua function library."""
    lines = [keys.lua_key_fn("hist_delay", keys.HIST_DELAY),
             keys.lua_key_fn("hist_exec", keys.HIST_EXEC)]
    for name, bounds in (("DELAY", DELAY_MS), ("EXEC", EXEC_MS)):
        lines.append(f"local {name}_MS = {{{', '.join(repr(b) for b in bounds)}}}")
        lines.append(f"local {name}_LE = {{{', '.join(repr(le_text(b)) for b in bounds)}}}")
    return "\n".join(lines) + "\n"


# ---- the scaler's side ------------------------------------------------------------------


class ScalerTally:
    """What the scaler leader did in one tick (cold starts, decisions, desired workers), kept
    in memory and written by `flush` in one pipeline; what a failed flush held is written by
    the next one."""

    def __init__(self) -> None:
        self._add: Counter[tuple[str, str]] = Counter()
        self._set: dict[tuple[str, str], int] = {}

    def cold_start(self, endpoint: str, backend: str, outcome: str, took_ms: int | None) -> None:
        """A worker's start ended: `ready` (with the ms from start to ready), `failed` (it
        left before it was ready) or `timeout` (it left after its boot timeout)."""
        self._add[(keys.scaler(endpoint), f"cold:{backend}:{outcome}")] += 1
        if took_ms is not None:
            hist = keys.hist_cold(endpoint)
            self._add[(hist, f"{backend}:{bucket(COLD_MS, took_ms)}")] += 1
            self._add[(hist, f"{backend}:{SUM}")] += max(0, took_ms)

    def decision(self, endpoint: str, action: str) -> None:
        """One worker started (`scale_up`) or stopped (stop_action of its reason)."""
        self._add[(keys.scaler(endpoint), f"decision:{action}")] += 1

    def desired(self, endpoint: str, workers: int) -> None:
        """The policy's target for the endpoint this tick."""
        self._set[(keys.scaler(endpoint), "desired")] = workers

    async def flush(self, redis: Redis) -> None:
        """Write what was tallied since the last flush (one round trip; none when empty)."""
        if not self._add and not self._set:
            return
        async with redis.pipeline(transaction=False) as pipe:
            for (key, field), n in self._add.items():
                pipe.hincrby(key, field, n)
            for (key, field), value in self._set.items():
                pipe.hset(key, field, value)
            await pipe.execute()
        self._add.clear()
        self._set.clear()


# ---- the scrape's side ------------------------------------------------------------------


class Histogram(msgspec.Struct, frozen=True):
    """Cumulative buckets [(le, count)] ending with +Inf, and the sum in seconds."""

    buckets: list[tuple[str, int]]
    sum_s: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1]


class EndpointFigures(msgspec.Struct, kw_only=True):
    """One endpoint's cluster figures at one moment."""

    endpoint: str
    depth: dict[str, int]  # priority -> queued jobs
    oldest_age_s: dict[str, float]  # priority -> wait of its oldest queued job (0 when none)
    in_progress: int
    stats: dict[str, int]  # submitted, completed, ..., retried
    delay: Histogram
    execution: dict[str, Histogram]  # final status -> histogram, statuses seen only
    workers: WorkerCounts
    cold_starts: dict[tuple[str, str], int]  # (backend, outcome) -> starts
    cold_start: dict[str, Histogram]  # backend -> histogram
    decisions: dict[str, int]  # action -> workers
    desired: int | None  # None until a scaler wrote one


def histogram(fields: Mapping[str, int], bounds_ms: Sequence[float]) -> Histogram:
    """A histogram hash's fields (`le` -> count, not cumulative; sum_ms) as cumulative buckets."""
    running, buckets = 0, []
    for le in [*map(le_text, bounds_ms), INF]:
        running += fields.get(le, 0)
        buckets.append((le, running))
    return Histogram(buckets, fields.get(SUM, 0) / 1000)


def _ints(raw: Mapping[bytes, bytes]) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in raw.items()}


def _grouped(fields: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """`prefix:rest` fields grouped by prefix: {'completed': {'0.01': 3, 'sum_ms': 7}}."""
    groups: dict[str, dict[str, int]] = {}
    for name, value in fields.items():
        prefix, _, rest = name.partition(":")
        groups.setdefault(prefix, {})[rest] = value
    return groups


def _age_s(entry: list[tuple[bytes, float]], offset: int, now: int) -> float:
    return max(0.0, now - (entry[0][1] - offset)) / 1000 if entry else 0.0


_PER_ENDPOINT = 11  # commands queued per endpoint by _queue_reads


def _queue_reads(pipe: Any, endpoint: str) -> None:
    low = keys.LOW_PRIORITY_OFFSET
    queue = keys.queue(endpoint)
    pipe.zcount(queue, "-inf", f"({low}")
    pipe.zcount(queue, low, "+inf")
    pipe.zrangebyscore(queue, "-inf", f"({low}", start=0, num=1, withscores=True)
    pipe.zrangebyscore(queue, low, "+inf", start=0, num=1, withscores=True)
    pipe.zcard(keys.leases(endpoint))
    for key in (keys.stats(endpoint), keys.hist_delay(endpoint), keys.hist_exec(endpoint),
                keys.scaler(endpoint), keys.hist_cold(endpoint)):
        pipe.hgetall(key)
    pipe.hvals(keys.workers(endpoint))


def figures(endpoint: str, replies: Sequence[Any], now: int,
            stale_after_ms: int) -> EndpointFigures:
    """One endpoint's figures from the replies of _queue_reads (pure)."""
    normal, low, oldest, oldest_low, running, stats, delay, execution, scaler, cold, beats = replies
    scaler_ints = _ints(scaler)
    scaler_fields = _grouped(scaler_ints)
    return EndpointFigures(
        endpoint=endpoint,
        depth={"normal": normal, "low": low},
        oldest_age_s={"normal": _age_s(oldest, 0, now),
                      "low": _age_s(oldest_low, keys.LOW_PRIORITY_OFFSET, now)},
        in_progress=running,
        stats=_ints(stats),
        delay=histogram(_ints(delay), DELAY_MS),
        execution={s: histogram(f, EXEC_MS) for s, f in sorted(_grouped(_ints(execution)).items())},
        workers=lifecycle.worker_counts([beat_decoder.decode(b) for b in beats], now,
                                        stale_after_ms),
        cold_starts={tuple(k.split(":", 1)): v for k, v in scaler_fields.get("cold", {}).items()},
        cold_start={b: histogram(f, COLD_MS) for b, f in sorted(_grouped(_ints(cold)).items())},
        decisions=scaler_fields.get("decision", {}),
        desired=scaler_ints.get("desired"),
    )


async def endpoint_ids(redis: Redis) -> list[str]:
    """Every endpoint to report: registered ones and ones that ever got a job."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.smembers(keys.ENDPOINTS)
        pipe.hkeys(keys.REGISTRY_ENDPOINTS)
        with_jobs, registered = await pipe.execute()
    return sorted({x.decode() for x in (*with_jobs, *registered)})


async def read_cluster(redis: Redis, now: int, stale_after_ms: int) -> list[EndpointFigures]:
    """Every endpoint's figures: the endpoint list, then one pipeline for all of them.

    Args:
        redis: the shared Redis.
        now: ms since the epoch (queue ages and worker staleness are judged at it).
        stale_after_ms: heartbeat silence after which a worker counts as unhealthy.

    Returns:
        One EndpointFigures per endpoint, sorted by endpoint id.
    """
    endpoints = await endpoint_ids(redis)
    if not endpoints:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for endpoint in endpoints:
            _queue_reads(pipe, endpoint)
        replies = await pipe.execute()
    return [figures(ep, replies[i * _PER_ENDPOINT:(i + 1) * _PER_ENDPOINT], now, stale_after_ms)
            for i, ep in enumerate(endpoints)]
