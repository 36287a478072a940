"""Endpoints that exist, and typos that do not: /run to an endpoint nobody can serve is a 404.

Without this rule a job sent to a misspelt endpoint waits in a queue no worker reads, in
silence, until its ttl (24 h) runs out. An endpoint is known when any of these holds:

    it is in the registry                  (HEXISTS keys.REGISTRY_ENDPOINTS: `podq endpoint create`)
    a live worker serves it                (a beat in keys.workers(ep) that is not stale or gone;
                                            podq-runtime and RunPod-protocol workers both beat,
                                            and an INITIALIZING one counts: it is loading a model)
    it has a queued or running job         (ZCARD keys.queue / keys.leases > 0: a job already
                                            queued is never stranded by this rule)

so `podq dev` and `podq worker --endpoint X` keep working with no registry entry while their
workers live. `is_known` decides, purely; `KnownEndpoints` reads the facts in one pipelined
round trip and keeps positive answers for a few seconds, so the hot path (/run, /runsync) does
not pay a second round trip per request. Negative answers are never cached: the first beat of
a new worker makes its endpoint known on the very next request.

Where the rule applies: the handlers of the routes that name only an endpoint (run, runsync,
purge-queue, health) call `require` after `routes.endpoint_of`, rather than a middleware keyed
on route names. The job routes (status, stream, cancel, retry) already answer 404 for unknown
jobs and must keep serving every job that exists; the worker routes are exempt; so a middleware
would need its own list of the four routes, a second spelling of a fact the handlers state by
calling `require`. In the handler the check also runs after auth and rate limits, so a caller
without a valid key learns nothing about which endpoints exist (401 comes first).
"""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis

from serverless import keys, lifecycle
from serverless.codec import beat_decoder
from serverless.errors import NotFound
from serverless.model import WorkerBeat, WorkerState
from serverless.ttl_cache import TtlCache

# how long a positive answer is kept, and for how many endpoints (per gateway process)
KNOWN_TTL_MS = 5_000
KNOWN_CACHE_SIZE = 4_096

UNKNOWN_ENDPOINT = (
    "endpoint '{endpoint}' not found: no registered endpoint and no live worker serves it; "
    "create it with `podq endpoint create --id {endpoint} --name {endpoint} --template-id TPL` "
    "or POST /v1/endpoints, or start a worker with `podq worker handler.py --endpoint {endpoint}`"
)


class Sightings(msgspec.Struct, frozen=True, kw_only=True):
    """What Redis holds about an endpoint: the inputs of `is_known`."""

    registered: bool = False
    beats: tuple[WorkerBeat, ...] = ()
    queued: int = 0
    running: int = 0


def is_live(beat: WorkerBeat, now_ms: int, stale_after_ms: int) -> bool:
    """A worker that serves its endpoint: heard from within its staleness window
    (lifecycle.stale_after), or still INITIALIZING, and not gone (lifecycle.is_gone).

    Args:
        beat: the worker's last heartbeat.
        now_ms: the time now, epoch ms.
        stale_after_ms: the window for beats with no interval of their own (podq workers).

    Returns:
        True when the worker counts as serving the endpoint.
    """
    if lifecycle.is_gone(beat, now_ms, stale_after_ms):
        return False
    # /health counts a quiet INITIALIZING worker as initializing too: loading a model is quiet
    fresh = now_ms - beat.seen_at <= lifecycle.stale_after(beat, stale_after_ms)
    return fresh or beat.state is WorkerState.INITIALIZING


def is_known(seen: Sightings, now_ms: int, stale_after_ms: int) -> bool:
    """An endpoint exists when it is registered, a live worker serves it, or it has jobs.

    Args:
        seen: what Redis holds about the endpoint.
        now_ms: the time now, epoch ms.
        stale_after_ms: the staleness window of beats with no interval of their own.

    Returns:
        True when a call naming the endpoint may go on; False for a 404.
    """
    if seen.registered or seen.queued > 0 or seen.running > 0:
        return True
    return any(is_live(beat, now_ms, stale_after_ms) for beat in seen.beats)


def unknown_endpoint(endpoint: str) -> NotFound:
    """The 404 for an endpoint nobody can serve: it names the endpoint and how to create it."""
    return NotFound(UNKNOWN_ENDPOINT.format(endpoint=endpoint))


class KnownEndpoints:
    """Answers whether an endpoint is known, from Redis, caching positive answers briefly."""

    def __init__(
        self, redis: Redis, stale_after_ms: int,
        ttl_ms: int = KNOWN_TTL_MS, size: int = KNOWN_CACHE_SIZE,
    ) -> None:
        self.redis, self.stale_after_ms = redis, stale_after_ms
        self._cache: TtlCache[bool] = TtlCache(ttl_ms, size)  # positive answers only

    async def sightings(self, endpoint: str) -> Sightings:
        """The registry entry, beats, queued and running counts of `endpoint`: one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hexists(keys.REGISTRY_ENDPOINTS, endpoint)
            pipe.hvals(keys.workers(endpoint))
            pipe.zcard(keys.queue(endpoint))
            pipe.zcard(keys.leases(endpoint))
            registered, beats, queued, running = await pipe.execute()
        return Sightings(registered=bool(registered), beats=tuple(beat_decoder.decode(b) for b in beats),
                         queued=queued, running=running)

    async def is_known(self, endpoint: str, now_ms: int) -> bool:
        """True when `endpoint` is known (see the module docstring); cached for a few seconds."""
        if self._cache.get(endpoint, now_ms):
            return True
        if not is_known(await self.sightings(endpoint), now_ms, self.stale_after_ms):
            return False
        self._cache.put(endpoint, True, now_ms)
        return True

    async def require(self, endpoint: str, now_ms: int) -> None:
        """Raise NotFound (404) naming the endpoint and the fix unless it is known.

        Args:
            endpoint: a valid endpoint id (routes.endpoint_of checked its spelling).
            now_ms: the time now, epoch ms.
        """
        if not await self.is_known(endpoint, now_ms):
            raise unknown_endpoint(endpoint)
