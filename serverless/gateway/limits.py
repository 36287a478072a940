"""Body size caps, and rate limits per endpoint and per API key (off unless configured).

Caps: /run takes at most 10 MB, /runsync 20 MB (docs.runpod.io, "Operation reference");
a bigger body gets 413 before it is read into memory.

Rates are off by default: podq runs on your own GPUs, and RunPod's cloud quotas would refuse a
load test long before the workers are busy. Where they are on, they come from (serverless/rates.py
has the grammar: `runpod`, `run=500/10,runsync=1000/10`, `off`):

    an endpoint's own `rate_limits` (the registry)   a preset, a spec, or "off"
    else the gateway's default (PODQ_RATE_LIMITS)    also for endpoints not in the registry
    per API key (PODQ_KEY_RATE_LIMITS)               summed over every endpoint the key calls

A key is known by its sha256 digest (auth.py), never by the key itself. A refused request gets
429 JSON naming the route and the endpoint (or key digest) with Retry-After: the seconds until
the bucket has room again.

Shared across gateway replicas: each bucket is one Redis key, checked and charged by one small
script (`_SPEND`, GCRA: a token bucket of `requests` tokens refilled at `requests / per_s`),
so N replicas allow the configured rate, not N times it, and a limited request costs one round
trip (an unlimited one none, past the config cache below). The script reads no clock: a bucket's key expires when its debt is paid back, so its
PTTL *is* the debt (Redis's own clock; the value keeps the sub-millisecond part), and replicas'
clocks never matter. All of a request's buckets are checked before any is charged, so a request
refused by one bucket spends nothing from the others. Exact up to 1 ms of Redis's clock.
A bucket's key is keys.rate_bucket(kind, subject, route), spelled in keys.py like every key.

An endpoint's setting is read from the registry at most once per `Limits.config_ttl_s` (5 s) per
gateway process, for at most CONFIG_CACHE_SIZE endpoints: a change to `rate_limits` applies on
every replica within 5 s. Routes no rate names (health, retry, worker and admin routes) never
touch Redis here. A Redis error in the limiter lets the request through (fail open: the limits
stop runaway clients, they must not turn a Redis hiccup into refusals) and is logged once until
Redis answers again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TypeVar

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.asyncio import Redis
from redis.exceptions import RedisError

from serverless import keys
from serverless.errors import BadRequest, ConfigError, PayloadTooLarge
from serverless.gateway import state
from serverless.gateway.error_responses import error_response
from serverless.rates import ROUTES, Rate, parse_rates
from serverless.registry import Registry
from serverless.settings import Settings

log = logging.getLogger("podq.gateway.limits")
MB = 1024 * 1024
RATES_ENV = "PODQ_RATE_LIMITS"
KEY_RATES_ENV = "PODQ_KEY_RATE_LIMITS"
# how long a process keeps an endpoint's rates before it reads the registry again, and for how
# many endpoints (the oldest entry goes first)
CONFIG_TTL_S = 5.0
CONFIG_CACHE_SIZE = 4_096
REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
T = TypeVar("T")

# GCRA over Redis's own clock (module docstring). KEYS: the buckets; ARGV: interval_ms and
# capacity of each, in turn. Returns {0, "0"} when every bucket had room (each is then charged one
# interval), else {i, wait_ms} for the bucket i (1-based) with the longest wait.
_SPEND = """
local debts, worst, worst_i = {}, 0.001, 0
for i, key in ipairs(KEYS) do
  local interval, capacity = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local debt = 0
  local ttl = redis.call('PTTL', key)
  if ttl > 0 then
    local exact = tonumber(redis.call('GET', key)) or ttl
    debt = math.max(0, ttl - (math.ceil(exact) - exact))
  end
  debts[i] = debt
  local wait = debt - (capacity - 1) * interval
  if wait > worst then worst, worst_i = wait, i end
end
if worst_i > 0 then return {worst_i, tostring(worst)} end
for i, key in ipairs(KEYS) do
  local debt = debts[i] + tonumber(ARGV[2 * i - 1])
  redis.call('SET', key, tostring(debt), 'PX', math.ceil(debt))
end
return {0, '0'}
"""


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Body caps in bytes; the gateway's default rates for endpoints with no `rate_limits` of
    their own (`rates`), rates per API key (`key_rates`), by route name; and how long an
    endpoint's own setting is cached. A route not listed is not rate limited."""

    run_max_bytes: int = 10 * MB
    runsync_max_bytes: int = 20 * MB
    rates: dict[str, Rate] = {}
    key_rates: dict[str, Rate] = {}
    config_ttl_s: float = CONFIG_TTL_S


def setting_rates(value: str | bool, setting: str) -> dict[str, Rate]:
    """The rates of a spec (serverless/rates.py), or ConfigError naming `setting`."""
    try:
        return parse_rates(value)
    except ValueError as e:
        raise ConfigError(f"{setting}: {e}") from None


def parse_key_rates(text: str) -> dict[str, Rate]:
    """PODQ_KEY_RATE_LIMITS: a spec; `false`, `off` or '' for none (the default)."""
    return setting_rates(text, KEY_RATES_ENV)


def limits_from_settings(settings: Settings) -> Limits:
    """Default caps, with rates from PODQ_RATE_LIMITS and PODQ_KEY_RATE_LIMITS (both off unset).

    Raises:
        ConfigError: a spec that does not parse, naming its variable.
    """
    return Limits(rates=setting_rates(settings.rate_limits, RATES_ENV),
                  key_rates=parse_key_rates(settings.key_rate_limits))


class Refusal(msgspec.Struct, frozen=True):
    """Why a request was refused: by the `endpoint` or the `key` bucket, and for how long."""

    kind: str  # "endpoint" | "key"
    subject: str
    wait_s: float


class Bucket(msgspec.Struct, frozen=True):
    """One rate that applies to a request: whose (`kind`, `subject`) and on which route."""

    kind: str  # "endpoint" | "key"
    subject: str
    route: str
    rate: Rate

    @property
    def redis_key(self) -> str:
        kind = "ep" if self.kind == "endpoint" else "key"
        return keys.rate_bucket(kind, self.subject, self.route)

    @property
    def script_args(self) -> tuple[str, str]:
        return repr(self.rate.per_s * 1000 / self.rate.requests), str(self.rate.requests)


class EndpointRates:
    """Each endpoint's rates: its registry `rate_limits` (None or "": the gateway's default),
    read at most once per `ttl_s` and kept for at most `size` endpoints per process."""

    def __init__(self, registry: Registry, default: dict[str, Rate], ttl_s: float,
                 size: int = CONFIG_CACHE_SIZE) -> None:
        self.registry, self.default, self.ttl_s, self.size = registry, default, ttl_s, size
        self._cache: dict[str, tuple[float, dict[str, Rate]]] = {}
        self._bad: set[str] = set()  # endpoints whose stored spec was logged as invalid

    async def rates(self, endpoint: str, now: float) -> dict[str, Rate]:
        """The rates that apply to `endpoint` (`now`: monotonic seconds, for the cache)."""
        cached = self._cache.get(endpoint)
        if cached is not None and cached[0] > now:
            return cached[1]
        config = await self.registry.get_endpoint(endpoint)
        rates = self._resolve(endpoint, config.rate_limits if config else None)
        self._cache.pop(endpoint, None)  # re-added last, so the oldest stays first
        while len(self._cache) >= self.size:
            del self._cache[next(iter(self._cache))]
        self._cache[endpoint] = (now + self.ttl_s, rates)
        return rates

    def _resolve(self, endpoint: str, spec: str | None) -> dict[str, Rate]:
        if spec is None or not spec.strip():
            return self.default
        try:
            return parse_rates(spec)
        except ValueError as e:  # written around the registry's check: keep serving
            if endpoint not in self._bad:
                self._bad.add(endpoint)
                log.warning("endpoint %s: stored rate_limits %r is invalid (%s); using the "
                            "gateway's default until it is fixed", endpoint, spec, e)
            return self.default


class RateLimiter:
    """The rate limits of every request, in buckets shared by all gateway replicas through
    Redis (module docstring): `admit` checks and charges them in one round trip."""

    def __init__(self, redis: Redis, limits: Limits) -> None:
        self.key_rates = limits.key_rates
        self.endpoints = EndpointRates(Registry(redis), limits.rates, limits.config_ttl_s)
        self._spend = redis.register_script(_SPEND)
        self._failing = False

    async def admit(
        self, route: str, endpoint: str | None, key: str | None, now: float
    ) -> Refusal | None:
        """None when the request may go ahead (every bucket charged), else the longest wait.

        Args:
            route: the route's name (`run`, `status`, ...); others are never limited.
            endpoint: a valid endpoint id, or None (no endpoint bucket).
            key: the request's key digest, or None (no key bucket).
            now: monotonic seconds (the endpoint config cache's clock).

        Returns:
            None to serve the request (also when Redis fails: fail open), else the Refusal.
        """
        if route not in ROUTES:
            return None
        try:
            buckets = await self._buckets(route, endpoint, key, now)
            refusal = await self._charge(buckets) if buckets else None
        except REDIS_ERRORS as e:
            self._fail_open(e)
            return None
        if self._failing:
            self._failing = False
            log.info("rate limits apply again: Redis answers the limiter")
        return refusal

    async def _buckets(
        self, route: str, endpoint: str | None, key: str | None, now: float
    ) -> list[Bucket]:
        found = []
        if endpoint is not None and (rate := (await self.endpoints.rates(endpoint, now)).get(route)):
            found.append(Bucket("endpoint", endpoint, route, rate))
        if key is not None and (rate := self.key_rates.get(route)):
            found.append(Bucket("key", key, route, rate))
        return found

    async def _charge(self, buckets: list[Bucket]) -> Refusal | None:
        args = [arg for bucket in buckets for arg in bucket.script_args]
        index, wait_ms = await self._spend(keys=[b.redis_key for b in buckets], args=args)
        if int(index) == 0:
            return None
        bucket = buckets[int(index) - 1]
        return Refusal(bucket.kind, bucket.subject, float(wait_ms) / 1000)

    def _fail_open(self, e: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.warning("rate limits not applied: Redis error in the limiter (%s: %s); requests "
                        "go through unlimited until Redis answers again", type(e).__name__, e)


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


async def rate_refusal(app: web.Application, route: str, endpoint: str | None,
                       digest: str | None) -> web.Response | None:
    """The 429 for a request to `route` whose endpoint or key has no room left, else None
    (every bucket charged). `endpoint`: the id in the path, None when the route names none;
    `digest`: the valid key's (auth.check_key), None when none was checked."""
    if endpoint is not None and not keys.valid_id(endpoint):
        endpoint = None  # an invalid id gets its 404 from the handler, and no bucket
    limiter = app[state.LIMITER]
    refusal = await limiter.admit(route, endpoint, digest, asyncio.get_running_loop().time())
    if refusal is None:
        return None
    if refusal.kind == "key":
        return key_rate_limited(route, refusal.subject, refusal.wait_s)
    return rate_limited(route, refusal.subject, refusal.wait_s)


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse (429) a request whose endpoint or key has no room left for this route."""
    refusal = await rate_refusal(request.app, request.match_info.route.name or "",
                                 request.match_info.get("endpoint_id", ""),
                                 request.get(state.KEY_DIGEST))  # set by the auth middleware
    return refusal if refusal is not None else await handler(request)


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
