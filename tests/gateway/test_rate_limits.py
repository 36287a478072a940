"""Rate limits per endpoint and per API key, over HTTP: off by default; on, they are 429 JSON
with Retry-After, set per endpoint in the registry (or gateway-wide), and shared by every
gateway replica through Redis; a Redis error in the limiter lets requests through."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis

from serverless.gateway import GatewayOptions, create_app, state
from serverless.gateway.auth import hash_key
from serverless.gateway.limits import CONFIG_TTL_S, Limits, Rate, RateLimiter, limits_from_settings
from serverless.queue import connect
from serverless.rates import RUNPOD_RATES
from serverless.redis_server import RedisProcess, free_port
from serverless.settings import Settings, load_settings
from serverless.store import JobStore
from tests.conftest import register
from tests.gateway.conftest import ADMIN_KEY, Gateway, GatewayFactory, beat

LIMITS_LOG = "podq.gateway.limits"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def run(gateway: Gateway, endpoint: str, key: str = ADMIN_KEY) -> int:
    return (await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1},
                               headers=bearer(key), auth=False)).status


async def create_endpoint(gateway: Gateway, endpoint: str, rate_limits: Any) -> dict[str, Any]:
    """An endpoint created through the admin API with `rate_limits`, paused (no scaler here)."""
    template = await gateway.call("POST", "/v1/templates", json={"name": "t", "handler": "h.py"})
    created = await gateway.call("POST", "/v1/endpoints", json={
        "id": endpoint, "name": "e", "template_id": template.body["id"], "paused": True,
        "rate_limits": rate_limits,
    })
    assert created.status == 200, created.body
    return created.body


@asynccontextmanager
async def serve(app: web.Application, session_from: Gateway) -> AsyncIterator[Gateway]:
    """`app` on a real port, called through the session of a make_gateway gateway."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield Gateway(f"http://{host}:{port}", session_from.session)
    finally:
        await runner.cleanup()


# ---- off by default ----------------------------------------------------------------------


@pytest.mark.usefixtures("registered")
async def test_rate_limits_are_off_by_default(make_gateway: GatewayFactory, endpoint: str) -> None:
    gateway = await make_gateway()  # no Limits given: PODQ_RATE_LIMITS and _KEY_ unset

    async def many(method: str, path: str, n: int) -> set[int]:
        statuses: set[int] = set()
        for start in range(0, n, 50):
            answers = await asyncio.gather(*(
                gateway.call(method, path, json={"input": 1} if path.endswith("/run") else None)
                for _ in range(start, min(n, start + 50))))
            statuses |= {a.status for a in answers}
        return statuses

    # past RunPod's quotas: 1000 /run, 100 /cancel and 2 /purge-queue per 10 s
    assert await many("POST", f"/v2/{endpoint}/run", 1050) == {200}
    assert await many("POST", f"/v2/{endpoint}/cancel/no-such-job", 150) == {404}
    assert await many("POST", f"/v2/{endpoint}/purge-queue", 5) == {200}


# ---- per endpoint, from the registry -----------------------------------------------------


@pytest.mark.usefixtures("registered")
async def test_the_runpod_preset_applies_to_its_endpoint_only(
    make_gateway: GatewayFactory, endpoint: str
) -> None:
    gateway = await make_gateway()
    created = await create_endpoint(gateway, "ep-quota", "runpod")
    assert created["rate_limits"] == "runpod"
    shown = await gateway.call("GET", "/v1/endpoints/ep-quota")
    assert shown.body["rate_limits"] == "runpod"
    purges = [(await gateway.call("POST", "/v2/ep-quota/purge-queue")) for _ in range(3)]
    assert [p.status for p in purges] == [200, 200, 429]  # RunPod: 2 purges per 10 s
    # a slot frees every 5 s (2 per 10 s), and the refusal names the route and the endpoint
    assert purges[2].headers["Retry-After"] == "5"
    assert purges[2].body == {
        "error": "rate limit for /purge-queue on endpoint 'ep-quota' exceeded; retry after 5 s"}
    others = [(await gateway.call("POST", f"/v2/{endpoint}/purge-queue")).status for _ in range(3)]
    assert others == [200] * 3  # an endpoint with no rate_limits: the gateway's default, off


async def test_a_custom_spec_limits_the_routes_it_names(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway()
    await create_endpoint(gateway, "ep-spec", "run=2/60,status=1/30")
    assert [await run(gateway, "ep-spec") for _ in range(3)] == [200, 200, 429]
    refused = await gateway.call("POST", "/v2/ep-spec/run", json={"input": 1})
    assert refused.headers["Retry-After"] == "30"  # 2 per 60 s: a slot every 30 s
    assert refused.body == {"error": "rate limit for /run on endpoint 'ep-spec' exceeded; retry after 30 s"}
    statuses = [(await gateway.call("GET", "/v2/ep-spec/status/j1")).status for _ in range(2)]
    assert statuses == [404, 429]  # the 404 was served, so it counted
    cancels = [(await gateway.call("POST", "/v2/ep-spec/cancel/j1")).status for _ in range(5)]
    assert cancels == [404] * 5  # a route the spec leaves out is not limited


async def test_endpoints_without_a_setting_use_the_gateway_default(
    make_gateway: GatewayFactory, store: JobStore
) -> None:
    gateway = await make_gateway(limits=Limits(rates={"run": Rate(1, per_s=60)}))
    await beat(store, "ep-dev", "w0")  # `podq dev`: served by a worker, not in the registry
    await register(store, "ep-registered")  # in the registry, rate_limits None
    await create_endpoint(gateway, "ep-off", "off")
    assert [await run(gateway, "ep-dev") for _ in range(2)] == [200, 429]
    assert [await run(gateway, "ep-registered") for _ in range(2)] == [200, 429]
    assert [await run(gateway, "ep-off") for _ in range(3)] == [200] * 3


async def test_the_gateway_default_comes_from_podq_rate_limits(
    make_gateway: GatewayFactory, store: JobStore
) -> None:
    await register(store, "ep-a")
    gateway = await make_gateway(limits=limits_from_settings(load_settings({"PODQ_RATE_LIMITS": "runpod"})))
    purges = [(await gateway.call("POST", "/v2/ep-a/purge-queue")).status for _ in range(3)]
    assert purges == [200, 200, 429]


async def test_a_change_applies_once_the_cached_setting_expires(make_gateway: GatewayFactory) -> None:
    quick = await make_gateway(limits=Limits(config_ttl_s=0.2))
    slow = await make_gateway()  # keeps an endpoint's setting CONFIG_TTL_S (5 s)
    assert CONFIG_TTL_S == 5.0
    await create_endpoint(quick, "ep-change", "run=1/60")
    assert [await run(quick, "ep-change"), await run(slow, "ep-change")] == [200, 429]
    changed = await quick.call("PATCH", "/v1/endpoints/ep-change", json={"rate_limits": "off"})
    assert changed.body["rate_limits"] == "off"
    assert await run(slow, "ep-change") == 429  # slow still has run=1/60 for up to 5 s
    await asyncio.sleep(0.3)
    assert [await run(quick, "ep-change") for _ in range(3)] == [200] * 3


@pytest.mark.parametrize(
    "spec,why",
    [
        ("fast", "'fast' is not ROUTE=REQUESTS[/SECONDS]"),
        ("run=0", "'run=0' is not ROUTE=REQUESTS[/SECONDS]"),
        ("run=10,health=5", "'health=5' is not ROUTE=REQUESTS[/SECONDS]"),
        ("run=5/0", "'run=5/0' has a window of 0 s; write e.g. run=5/10"),
    ],
)
async def test_an_invalid_setting_is_a_400_on_create_and_update(
    gateway: Gateway, spec: str, why: str
) -> None:
    template = await gateway.call("POST", "/v1/templates", json={"name": "t", "handler": "h.py"})
    body = {"id": "ep-bad", "name": "e", "template_id": template.body["id"], "rate_limits": spec}
    refused = await gateway.call("POST", "/v1/endpoints", json=body)
    assert refused.status == 400
    assert refused.body["error"].startswith(f"rate_limits {spec!r} is invalid: {why}")
    assert (await gateway.call("GET", "/v1/endpoints/ep-bad")).status == 404  # nothing written
    await create_endpoint(gateway, "ep-good", "runpod")
    patched = await gateway.call("PATCH", "/v1/endpoints/ep-good", json={"rate_limits": spec})
    assert (patched.status, patched.body) == (400, refused.body)
    assert (await gateway.call("GET", "/v1/endpoints/ep-good")).body["rate_limits"] == "runpod"
    wrong_type = await gateway.call("PATCH", "/v1/endpoints/ep-good", json={"rate_limits": 5})
    assert wrong_type.status == 400 and "rate_limits" in wrong_type.body["error"]


# ---- shared by replicas ------------------------------------------------------------------


async def test_two_gateway_replicas_share_one_limit(
    make_gateway: GatewayFactory, store: JobStore, settings: Settings, endpoint: str
) -> None:
    await register(store, endpoint)
    limits = Limits(rates={"run": Rate(3, per_s=60)}, key_rates={"status": Rate(2, per_s=60)})
    first = await make_gateway(limits=limits)
    # the second replica: its own app, limiter and Redis connection pool
    other_store = JobStore(await connect(settings.redis_url), settings)
    options = GatewayOptions(admin_key=ADMIN_KEY, limits=limits)
    try:
        async with serve(create_app(other_store, settings, options), first) as second:
            assert [await run(first, endpoint) for _ in range(2)] == [200, 200]
            assert [await run(second, endpoint) for _ in range(2)] == [200, 429]  # sees the 2
            assert await run(first, endpoint) == 429
            other = f"{endpoint}-2"
            await register(store, other)
            status = [(await gw.call("GET", f"/v2/{ep}/status/j1")).status
                      for gw, ep in ((first, endpoint), (second, other), (second, endpoint))]
            assert status == [404, 404, 429]  # the admin key's bucket, over both endpoints
    finally:
        await other_store.close()


async def test_the_shared_bucket_refills_at_its_rate(store: JobStore) -> None:
    """A token bucket (GCRA) in Redis, with the fractions of a millisecond kept: 3 per 100 ms
    is a burst of 3, then one every 33.3 ms."""
    limiter = RateLimiter(store.redis, Limits(rates={"run": Rate(3, per_s=0.1)}))
    now = asyncio.get_running_loop().time()
    assert [await limiter.admit("run", "ep-x", None, now) for _ in range(3)] == [None] * 3
    refusal = await limiter.admit("run", "ep-x", None, now)
    assert refusal is not None and refusal.kind == "endpoint" and refusal.subject == "ep-x"
    assert 0 < refusal.wait_s <= 0.0334
    await asyncio.sleep(0.034)
    assert await limiter.admit("run", "ep-x", None, now) is None
    assert await limiter.admit("health", "ep-x", None, now) is None  # never limited


# ---- fail open ---------------------------------------------------------------------------


@pytest.mark.usefixtures("registered")
async def test_a_redis_error_in_the_limiter_lets_requests_through_and_is_logged_once(
    make_gateway: GatewayFactory, store: JobStore, settings: Settings, endpoint: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = Limits(rates={"run": Rate(1, per_s=60)}, key_rates={"run": Rate(1, per_s=60)})
    app = create_app(store, settings, GatewayOptions(admin_key=ADMIN_KEY, limits=limits))
    closed = Redis(host="127.0.0.1", port=free_port())  # nothing listens there
    app[state.LIMITER] = RateLimiter(closed, limits)
    caplog.set_level(logging.WARNING, LIMITS_LOG)
    try:
        async with serve(app, await make_gateway()) as gateway:
            assert [await run(gateway, endpoint) for _ in range(3)] == [200] * 3
    finally:
        await closed.aclose()
    logged = [r.getMessage() for r in caplog.records if r.name == LIMITS_LOG]
    assert len(logged) == 1
    assert logged[0].startswith("rate limits not applied: Redis error in the limiter (ConnectionError: ")
    assert logged[0].endswith("requests go through unlimited until Redis answers again")


async def test_the_limiter_needs_only_the_acl_of_docs_security_and_recovers(
    redis_server: RedisProcess, store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The script reads no clock (no TIME): @read and @write commands and EVALSHA are enough.
    Refused a command (NOPERM), the limiter lets requests through, then applies again."""
    user = "podq-limiter-test"
    rules = ("on", ">pw", "resetkeys", "~podq:*", "-@all", "+@read", "+@write", "+@connection")
    await store.redis.execute_command("ACL", "SETUSER", user, "reset", *rules)
    limited = Redis.from_url(redis_server.url_for(user=user, password="pw"))
    limiter = RateLimiter(limited, Limits(rates={"run": Rate(1, per_s=60)}))
    caplog.set_level(logging.INFO, LIMITS_LOG)
    now = asyncio.get_running_loop().time()
    try:
        assert [await limiter.admit("run", "ep-acl", None, now) for _ in range(2)] == [None, None]
        await store.redis.execute_command("ACL", "SETUSER", user, "+evalsha", "+eval", "+script|load")
        assert await limiter.admit("run", "ep-acl", None, now) is None
        assert (await limiter.admit("run", "ep-acl", None, now)).kind == "endpoint"
    finally:
        await limited.aclose()
        await store.redis.execute_command("ACL", "DELUSER", user)
    logged = [r.getMessage() for r in caplog.records if r.name == LIMITS_LOG]
    assert len(logged) == 2 and "(NoPermissionError: " in logged[0]
    assert logged[1] == "rate limits apply again: Redis answers the limiter"


# ---- per API key (PODQ_KEY_RATE_LIMITS; explicit Limits here) ----------------------------


async def test_a_key_is_limited_over_all_endpoints(make_gateway: GatewayFactory, store: JobStore) -> None:
    for ep in ("ep-a", "ep-b", "ep-c"):
        await register(store, ep)
    gateway = await make_gateway(
        api_keys=("alice", "bob"), limits=Limits(rates={}, key_rates={"run": Rate(2, per_s=20)})
    )
    assert [await run(gateway, ep, "alice") for ep in ("ep-a", "ep-b")] == [200, 200]
    refused = await gateway.call("POST", "/v2/ep-c/run", json={"input": 1}, headers=bearer("alice"), auth=False)
    assert refused.status == 429 and refused.headers["Retry-After"] == "10"
    assert refused.headers["Content-Type"].startswith("application/json")
    digest = hash_key("alice")
    assert refused.body == {"error": f"rate limit for /run of API key {digest[:12]}... (its sha256 "
                                     "digest, see `podq keys list`) exceeded over all endpoints; "
                                     "retry after 10 s"}
    assert "alice" not in refused.body["error"]  # never the key itself
    assert await run(gateway, "ep-c", "bob") == 200  # another key has its own bucket
    health = await gateway.call("GET", "/v2/ep-a/health", headers=bearer("alice"), auth=False)
    assert health.status == 200  # and each route its own


async def test_stored_keys_are_limited_by_digest(make_gateway: GatewayFactory, endpoint: str) -> None:
    gateway = await make_gateway(limits=Limits(rates={}, key_rates={"status": Rate(1, per_s=60)}))
    key = (await gateway.call("POST", "/v1/keys", json={"label": "ci"})).body["key"]
    statuses = [
        (await gateway.call("GET", f"/v2/{endpoint}/status/j1", headers=bearer(key), auth=False)).status
        for _ in range(2)
    ]
    assert statuses == [404, 429]  # the 404 spent a token too: the request was served


@pytest.mark.usefixtures("registered")
async def test_endpoint_and_key_limits_both_apply_and_a_refusal_spends_nothing(
    make_gateway: GatewayFactory, endpoint: str
) -> None:
    gateway = await make_gateway(
        api_keys=("alice", "bob"),
        limits=Limits(rates={"run": Rate(3, per_s=30)}, key_rates={"run": Rate(2, per_s=60)}),
    )
    assert [await run(gateway, endpoint, "alice") for _ in range(3)] == [200, 200, 429]  # key
    # alice's refused request took no endpoint token: bob still gets the endpoint's third
    assert [await run(gateway, endpoint, "bob") for _ in range(2)] == [200, 429]
    refused = await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1}, headers=bearer("bob"), auth=False)
    assert refused.headers["Retry-After"] == "10"
    assert refused.body == {
        "error": f"rate limit for /run on endpoint '{endpoint}' exceeded; retry after 10 s"
    }


@pytest.mark.usefixtures("registered")
async def test_refused_keys_spend_no_tokens(make_gateway: GatewayFactory, endpoint: str) -> None:
    gateway = await make_gateway(api_keys=("alice",), limits=Limits(rates={"run": Rate(1, per_s=60)}))
    for _ in range(3):
        assert await run(gateway, endpoint, "wrong") == 401  # auth comes first
    assert await run(gateway, endpoint, "alice") == 200


async def test_the_runpod_preset_per_key(make_gateway: GatewayFactory, store: JobStore) -> None:
    for i in range(3):
        await register(store, f"ep-{i}")
    limits = limits_from_settings(load_settings({"PODQ_KEY_RATE_LIMITS": "runpod"}))
    assert (limits.rates, limits.key_rates) == ({}, RUNPOD_RATES)
    gateway = await make_gateway(limits=limits)
    answers = [
        (await gateway.call("POST", f"/v2/ep-{i}/purge-queue")).status for i in range(3)
    ]
    assert answers == [200, 200, 429]  # 2 purges per 10 s per key, over distinct endpoints


async def test_key_rates_come_from_the_environment(
    make_gateway: GatewayFactory, store: JobStore, endpoint: str
) -> None:
    for ep in (endpoint, "ep-0", "ep-1", "ep-2"):
        await register(store, ep)
    limited = load_settings({"PODQ_KEY_RATE_LIMITS": "run=1/60"})
    gateway = await make_gateway(api_keys=("alice",), limits=limits_from_settings(limited))
    assert [await run(gateway, endpoint, "alice") for _ in range(2)] == [200, 429]
    off = load_settings({"PODQ_KEY_RATE_LIMITS": "false"})
    unlimited = await make_gateway(api_keys=("alice",), limits=limits_from_settings(off))
    assert [await run(unlimited, f"ep-{i}", "alice") for i in range(3)] == [200] * 3
