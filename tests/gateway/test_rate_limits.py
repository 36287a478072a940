"""Rate limits per endpoint and per API key, over HTTP: 429 JSON with Retry-After in both cases."""

from __future__ import annotations

import pytest

from serverless.errors import ConfigError
from serverless.gateway.auth import hash_key
from serverless.gateway.limits import DEFAULT_KEY_RATES, Limits, Rate, limits_from_settings, parse_key_rates
from serverless.settings import Settings, load_settings
from serverless.store import JobStore
from tests.conftest import register
from tests.gateway.conftest import Gateway, GatewayFactory


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def run(gateway: Gateway, endpoint: str, key: str) -> int:
    return (await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1},
                               headers=bearer(key), auth=False)).status


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


async def test_default_key_rates_are_runpods_endpoint_rates(
    make_gateway: GatewayFactory, store: JobStore, monkeypatch
) -> None:
    for i in range(3):
        await register(store, f"ep-{i}")
    monkeypatch.delenv("PODQ_KEY_RATE_LIMITS", raising=False)
    assert limits_from_settings(Settings()).key_rates == DEFAULT_KEY_RATES
    assert DEFAULT_KEY_RATES["run"] == Rate(1000) and DEFAULT_KEY_RATES["purge-queue"] == Rate(2)
    gateway = await make_gateway()
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


@pytest.mark.usefixtures("registered")
async def test_rate_limits_off_turns_off_both(
    store, settings: Settings, make_gateway: GatewayFactory, endpoint: str
) -> None:
    from aiohttp import web

    from serverless.gateway import GatewayOptions, create_app

    app = create_app(store, Settings(redis_url=settings.redis_url, rate_limits=False),
                     GatewayOptions(admin_key="adm", limits=Limits(rates={"run": Rate(1, 60)},
                                                                   key_rates={"run": Rate(1, 60)})))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        gateway = Gateway(f"http://{host}:{port}", (await make_gateway()).session)
        assert [await run(gateway, endpoint, "adm") for _ in range(3)] == [200] * 3
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "text,expected",
    [
        ("false", {}), ("OFF", {}), ("0", {}),
        ("run=100/10", {**DEFAULT_KEY_RATES, "run": Rate(100, 10.0)}),
        ("run=5, status = 50/1s", {**DEFAULT_KEY_RATES, "run": Rate(5), "status": Rate(50, 1.0)}),
    ],
)
def test_parse_key_rates(text: str, expected: dict) -> None:
    assert parse_key_rates(text) == expected


@pytest.mark.parametrize("text", ["run", "run=0", "health=5", "run=5/0", "run=-1", "run=1/x"])
def test_parse_key_rates_refuses_nonsense(text: str) -> None:
    with pytest.raises(ConfigError, match="PODQ_KEY_RATE_LIMITS"):
        parse_key_rates(text)
