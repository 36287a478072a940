"""Body size caps and per-endpoint rate limits (RunPod's numbers by default).

Caps: /run takes at most 10 MB, /runsync 20 MB (docs.runpod.io, "Operation reference");
a bigger body gets 413 before it is read into memory.

Rates: a token bucket per (endpoint, route) in this process's memory. RunPod allows, per
endpoint, 1000 /run and 2000 /runsync, /status and /stream requests per 10 s, 100 /cancel and
2 /purge-queue (same page, "Rate limits"). A refused request gets 429 with Retry-After. With N
gateway replicas behind a load balancer the effective limit is about N times the configured one.
"""

from __future__ import annotations

import math
import time

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from serverless import keys
from serverless.errors import PayloadTooLarge
from serverless.gateway import state
from serverless.gateway.error_responses import error_response

MB = 1024 * 1024
# Buckets kept before full (idle) ones are dropped, so many endpoint ids cannot grow memory.
MAX_BUCKETS = 10_000


class Rate(msgspec.Struct, frozen=True):
    """`requests` per `per_s` seconds; the bucket holds `requests` tokens (the burst)."""

    requests: int
    per_s: float = 10.0


DEFAULT_RATES: dict[str, Rate] = {
    "run": Rate(1000),
    "runsync": Rate(2000),
    "status": Rate(2000),
    "stream": Rate(2000),
    "cancel": Rate(100),
    "purge-queue": Rate(2),
}


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Body caps in bytes and rates by route name (a route not listed is not rate limited)."""

    run_max_bytes: int = 10 * MB
    runsync_max_bytes: int = 20 * MB
    rates: dict[str, Rate] = msgspec.field(default_factory=lambda: dict(DEFAULT_RATES))


class TokenBucket:
    """A token bucket; `take(now)` spends one token or says how long until one is there."""

    __slots__ = ("capacity", "per_token_s", "tokens", "updated")

    def __init__(self, rate: Rate, now: float) -> None:
        self.capacity = float(rate.requests)
        self.per_token_s = rate.per_s / rate.requests
        self.tokens = self.capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed / self.per_token_s)
        self.updated = now

    def take(self, now: float) -> float:
        """0.0 when a token was spent, else the seconds until the next token."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) * self.per_token_s

    def is_full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity


class RateLimiter:
    """One TokenBucket per (endpoint, route), created on first use."""

    def __init__(self, rates: dict[str, Rate]) -> None:
        self._rates = rates
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def check(self, endpoint: str, route: str, now: float) -> float:
        """0.0 when the request may go ahead, else the seconds to wait (Retry-After)."""
        rate = self._rates.get(route)
        if rate is None:
            return 0.0
        bucket = self._buckets.get((endpoint, route))
        if bucket is None:
            self._prune(now)
            bucket = self._buckets[(endpoint, route)] = TokenBucket(rate, now)
        return bucket.take(now)

    def _prune(self, now: float) -> None:
        if len(self._buckets) >= MAX_BUCKETS:
            idle = [k for k, b in self._buckets.items() if b.is_full(now)]
            for k in idle:
                del self._buckets[k]


def rate_limited(route: str, endpoint: str, wait_s: float) -> web.Response:
    """The 429 answer, with Retry-After in whole seconds (at least 1)."""
    seconds = max(1, math.ceil(wait_s))
    message = (
        f"rate limit for /{route} on endpoint '{endpoint}' exceeded; retry after {seconds} s"
    )
    return error_response(429, message, {"Retry-After": str(seconds)})


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse (429) a request whose endpoint used up its tokens for this route."""
    route = request.match_info.route.name or ""
    endpoint = request.match_info.get("endpoint_id", "")
    if keys.valid_id(endpoint):  # an invalid id gets its 404 from the handler, and no bucket
        wait_s = request.app[state.LIMITER].check(endpoint, route, time.monotonic())
        if wait_s > 0:
            return rate_limited(route, endpoint, wait_s)
    return await handler(request)


async def read_body(request: web.Request, cap: int) -> bytes:
    """The request body, refused with PayloadTooLarge (413) as soon as it passes `cap` bytes."""
    length = request.content_length
    if length is not None and length > cap:
        raise PayloadTooLarge(_too_large(request, length, cap))
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > cap:
            raise PayloadTooLarge(_too_large(request, size, cap))
        parts.append(chunk)
    return b"".join(parts)


def _too_large(request: web.Request, size: int, cap: int) -> str:
    route = request.match_info.route.name
    limit = f"{cap // MB} MB" if cap % MB == 0 else f"{cap} bytes"
    return (
        f"request body of {size} bytes or more is over the {limit} limit of /{route}; "
        "send large inputs by reference (a URL or s3Config) instead"
    )
