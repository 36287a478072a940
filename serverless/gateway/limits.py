"""Body size caps, and rate limits per endpoint and per API key (RunPod's numbers by default).

Caps: /run takes at most 10 MB, /runsync 20 MB (docs.runpod.io, "Operation reference");
a bigger body gets 413 before it is read into memory.

Rates: token buckets in this process's memory, one per (endpoint, route) and one per
(API key, route). RunPod allows, per endpoint, 1000 /run and 2000 /runsync, /status and /stream
requests per 10 s, 100 /cancel and 2 /purge-queue (same page, "Rate limits"). The same numbers
bound each key by default, summed over every endpoint it calls, so one key cannot spend many
endpoints' quotas; PODQ_KEY_RATE_LIMITS lowers them (`run=100/10,status=500/10`) or turns them
off (`false`); PODQ_RATE_LIMITS=false turns both kinds off. A key is known by its sha256 digest
(auth.py), never by the key itself. A refused request gets 429 JSON with Retry-After.

Why in memory and not in Redis: a shared bucket costs every request one more Redis round trip
(a /run is one round trip today) and makes a Redis hiccup refuse requests that would otherwise
go through; the limits exist to stop runaway clients, not to bill exactly. So with N gateway
replicas behind a load balancer the effective limit is about N times the configured one:
divide the configured rates by N when that matters.
"""

from __future__ import annotations

import math
import re
import time
from typing import TypeVar

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from serverless import keys
from serverless.errors import BadRequest, ConfigError, PayloadTooLarge
from serverless.gateway import state
from serverless.gateway.error_responses import error_response
from serverless.settings import Settings

MB = 1024 * 1024
# Buckets kept before full (idle) ones are dropped, so many endpoint ids cannot grow memory.
MAX_BUCKETS = 10_000
KEY_RATES_ENV = "PODQ_KEY_RATE_LIMITS"
T = TypeVar("T")


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
# per key, over every endpoint the key calls: one endpoint's worth of RunPod's rates
DEFAULT_KEY_RATES: dict[str, Rate] = dict(DEFAULT_RATES)


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Body caps in bytes; rates by route name per endpoint (`rates`) and per API key
    (`key_rates`). A route not listed is not rate limited."""

    run_max_bytes: int = 10 * MB
    runsync_max_bytes: int = 20 * MB
    rates: dict[str, Rate] = msgspec.field(default_factory=lambda: dict(DEFAULT_RATES))
    key_rates: dict[str, Rate] = msgspec.field(default_factory=lambda: dict(DEFAULT_KEY_RATES))


_RATE = re.compile(r"^\s*([a-z-]+)\s*=\s*(\d+)\s*(?:/\s*(\d+(?:\.\d+)?)\s*s?)?\s*$")


def parse_key_rates(text: str) -> dict[str, Rate]:
    """PODQ_KEY_RATE_LIMITS: `false`/`off`/`0` (none), or `route=N[/S]` pairs, comma
    separated, over the defaults (S seconds, default 10): `run=100/10,status=500`."""
    if text.strip().lower() in ("false", "off", "0", "no", "none"):
        return {}
    rates = dict(DEFAULT_KEY_RATES)
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _RATE.match(part)
        if match is None or match[1] not in DEFAULT_RATES or int(match[2]) < 1:
            raise ConfigError(
                f"{KEY_RATES_ENV}: {part!r} is not ROUTE=REQUESTS[/SECONDS] with ROUTE one of "
                f"{', '.join(DEFAULT_RATES)} and REQUESTS >= 1 (e.g. run=100/10), or false"
            )
        per_s = float(match[3]) if match[3] else 10.0
        if per_s <= 0:
            raise ConfigError(f"{KEY_RATES_ENV}: {part!r} has a window of 0 s; use e.g. run=100/10")
        rates[match[1]] = Rate(int(match[2]), per_s)
    return rates


def limits_from_settings(settings: Settings) -> Limits:
    """The default Limits, with per-key rates from PODQ_KEY_RATE_LIMITS when it is set."""
    text = settings.key_rate_limits
    return Limits(key_rates=parse_key_rates(text)) if text.strip() else Limits()


class TokenBucket:
    """A token bucket: `wait(now)` says how long until a token is there, `spend()` takes one."""

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

    def wait(self, now: float) -> float:
        """0.0 when a token is there, else the seconds until the next one."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) * self.per_token_s

    def spend(self) -> None:
        self.tokens -= 1.0

    def is_full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity


class Refusal(msgspec.Struct, frozen=True):
    """Why a request was refused: by the `endpoint` or the `key` bucket, and for how long."""

    kind: str  # "endpoint" | "key"
    subject: str
    wait_s: float


class RateLimiter:
    """Token buckets per (endpoint, route) and per (key digest, route), created on first use.

    A request is let through only when every bucket that applies has a token, and then takes
    one from each, so a request refused by one bucket costs the other nothing.
    """

    def __init__(self, rates: dict[str, Rate], key_rates: dict[str, Rate] | None = None) -> None:
        self._rates = {"endpoint": rates, "key": key_rates or {}}
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}

    def _bucket(self, kind: str, subject: str, route: str, now: float) -> TokenBucket | None:
        rate = self._rates[kind].get(route)
        if rate is None:
            return None
        bucket = self._buckets.get((kind, subject, route))
        if bucket is None:
            self._prune(now)
            bucket = self._buckets[(kind, subject, route)] = TokenBucket(rate, now)
        return bucket

    def admit(self, route: str, endpoint: str | None, key: str | None, now: float) -> Refusal | None:
        """None when the request may go ahead (its tokens are spent), else the longest wait."""
        found = [
            (kind, subject, bucket)
            for kind, subject in (("endpoint", endpoint), ("key", key))
            if subject is not None
            and (bucket := self._bucket(kind, subject, route, now)) is not None
        ]
        waits = [Refusal(kind, subject, b.wait(now)) for kind, subject, b in found]
        worst = max(waits, key=lambda r: r.wait_s, default=None)
        if worst is not None and worst.wait_s > 0:
            return worst
        for _, _, bucket in found:
            bucket.spend()
        return None

    def _prune(self, now: float) -> None:
        if len(self._buckets) >= MAX_BUCKETS:
            idle = [k for k, b in self._buckets.items() if b.is_full(now)]
            for k in idle:
                del self._buckets[k]


def rate_limited(route: str, endpoint: str, wait_s: float) -> web.Response:
    """The 429 answer for an endpoint's bucket, with Retry-After in whole seconds (at least 1)."""
    seconds = max(1, math.ceil(wait_s))
    message = (
        f"rate limit for /{route} on endpoint '{endpoint}' exceeded; retry after {seconds} s"
    )
    return error_response(429, message, {"Retry-After": str(seconds)})


def key_rate_limited(route: str, digest: str, wait_s: float) -> web.Response:
    """The 429 answer for a key's bucket; the key is named by the start of its digest."""
    seconds = max(1, math.ceil(wait_s))
    message = (
        f"rate limit for /{route} of API key {digest[:12]}... (its sha256 digest, see "
        f"`podq keys list`) exceeded over all endpoints; retry after {seconds} s"
    )
    return error_response(429, message, {"Retry-After": str(seconds)})


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse (429) a request whose endpoint or key used up its tokens for this route."""
    route = request.match_info.route.name or ""
    endpoint: str | None = request.match_info.get("endpoint_id", "")
    if not keys.valid_id(endpoint):  # an invalid id gets its 404 from the handler, and no bucket
        endpoint = None
    digest = request.get(state.KEY_DIGEST)  # set by the auth middleware
    refusal = request.app[state.LIMITER].admit(route, endpoint, digest, time.monotonic())
    if refusal is not None:
        if refusal.kind == "key":
            return key_rate_limited(route, refusal.subject, refusal.wait_s)
        return rate_limited(route, refusal.subject, refusal.wait_s)
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


def decode_body(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """Decode a JSON request body; 400 (BadRequest) for bytes that are not UTF-8 anywhere (also
    inside `input`, which is kept as raw JSON and would reach the worker unchecked) and for JSON
    nested deeper than the decoder's recursion limit (about 1000 levels)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(
            f"invalid request body: not valid UTF-8 (byte {e.start}); send JSON encoded as UTF-8"
        ) from None
    try:
        return decoder.decode(body)
    except RecursionError:
        raise BadRequest(
            "invalid request body: JSON is nested too deeply (over about 1000 levels); "
            "send flatter data"
        ) from None


def _too_large(request: web.Request, size: int, cap: int) -> str:
    route = request.match_info.route.name
    limit = f"{cap // MB} MB" if cap % MB == 0 else f"{cap} bytes"
    return (
        f"request body of {size} bytes or more is over the {limit} limit of /{route}; "
        "send large inputs by reference (a URL or s3Config) instead"
    )
