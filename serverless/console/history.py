"""The per-minute history behind the endpoint page's 24 h charts, kept in Redis.

Every gateway replica runs the sampler (a periodic task, serverless/periodic.py), but each
minute is written once: the replica whose `SET NX` on that minute's claim key succeeds reads
the cluster figures (metrics_store.read_cluster, the same read /metrics makes) and appends one
point per endpoint to a capped list, keys.console_history(ep) (RPUSH + LTRIM to POINTS); the
claim is keys.console_history_claim(minute_ms) (EX 1 h). keys.py's docstring has both keys.

Why here and not in the scaler: the scaler leader's loop (scaler/loop.py) belongs to the
metrics work; a gateway is always running where the console is, and the claim keeps replicas
from writing a minute twice. The history lives in Redis, so it survives gateway restarts.
`finished` is the endpoint's running count of ended jobs, so jobs/s between two points is a
difference.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Sequence

import msgspec
from aiohttp import web
from redis.asyncio import Redis

from serverless import keys, periodic
from serverless.gateway import state
from serverless.metrics_store import FINISHED, EndpointFigures, read_cluster
from serverless.store import now_ms

POINTS = 1440  # 24 h of minutes
MINUTE_MS = 60_000
CLAIM_S = 3600


class Point(msgspec.Struct, array_like=True, frozen=True):
    """One endpoint at one minute (stored as a JSON array: a day of points stays small)."""

    minute_ms: int
    queued: int
    in_progress: int
    workers: int
    finished: int


_points = msgspec.json.Decoder(Point)


def minute_of(ms: int) -> int:
    """The start of the minute `ms` falls in."""
    return ms - ms % MINUTE_MS


def point(figures: EndpointFigures, minute_ms: int) -> Point:
    """An endpoint's point from its cluster figures (pure)."""
    workers = sum(msgspec.structs.astuple(figures.workers))
    finished = sum(figures.stats.get(name, 0) for name in FINISHED)
    return Point(minute_ms, sum(figures.depth.values()), figures.in_progress, workers, finished)


async def sample(redis: Redis, now: int, stale_after_ms: int, points: int = POINTS) -> bool:
    """Write this minute's points unless another replica did; True when this call wrote them."""
    minute = minute_of(now)
    if not await redis.set(keys.console_history_claim(minute), socket.gethostname(), nx=True, ex=CLAIM_S):
        return False
    figures = await read_cluster(redis, now, stale_after_ms)
    async with redis.pipeline(transaction=False) as pipe:
        for f in figures:
            key = keys.console_history(f.endpoint)
            pipe.rpush(key, msgspec.json.encode(point(f, minute)))
            pipe.ltrim(key, -points, -1)
        await pipe.execute()
    return True


async def read(redis: Redis, endpoint: str, since_ms: int = 0) -> list[Point]:
    """The endpoint's points at or after `since_ms`, oldest first."""
    raw = await redis.lrange(keys.console_history(endpoint), 0, -1)
    return [p for p in map(_points.decode, raw) if p.minute_ms >= since_ms]


def rate_per_s(points: Sequence[Point]) -> float | None:
    """Jobs finished per second between the last two points; None with fewer than two."""
    if len(points) < 2:
        return None
    a, b = points[-2], points[-1]
    seconds = (b.minute_ms - a.minute_ms) / 1000
    return max(0, b.finished - a.finished) / seconds if seconds > 0 else None


def sampler(interval_s: float = 10.0) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx: run `sample` every `interval_s` (several times a minute, so a minute is
    not missed when one run is late; the claim makes the extra runs no-ops)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        store = app[state.STORE]

        async def run() -> None:
            await sample(store.redis, now_ms(), store.stale_after_ms)

        task = asyncio.create_task(periodic.every(interval_s, run),
                                                  name="podq-console-history")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return ctx
