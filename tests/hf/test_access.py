"""An endpoint's `access` (Hugging Face's `type`), enforced by the gateway's auth middleware:
the pure decision as a table, the cache with its staleness bound, and each access through a
real gateway over the real redis-server."""

from __future__ import annotations

import pytest

from serverless.gateway.app import ALL_ROUTES
from serverless.gateway.auth import (
    ACCESS_TTL_MS, OPEN_ON_PUBLIC, PRIVATE_UNSCOPED, WORKER_ROUTES, KeyChecker,
    add_key, needs_key, private_refusal,
)
from serverless.model import EndpointAccess, EndpointConfig, Template
from serverless.registry import Registry
from serverless.store import JobStore, now_ms
from serverless.ttl_cache import TtlCache
from tests.gateway.conftest import Gateway, GatewayFactory, StartWorkers

PUBLIC, PROTECTED, PRIVATE = EndpointAccess.PUBLIC, EndpointAccess.PROTECTED, EndpointAccess.PRIVATE


@pytest.mark.parametrize("access,route,needed", [
    (PUBLIC, "run", False), (PUBLIC, "runsync", False), (PUBLIC, "status", False),
    (PUBLIC, "stream", False), (PUBLIC, "cancel", False), (PUBLIC, "retry", False),
    (PUBLIC, "health", False), (PUBLIC, "hf", False), (PUBLIC, "hf-chat-completions", False),
    (PUBLIC, "openai-chat-completions", False), (PUBLIC, "openai-models", False),
    (PUBLIC, "purge-queue", True),  # emptying the queue is not a call anyone may make
    (PUBLIC, "job-take", True),  # worker routes keep their worker keys
    (PUBLIC, "get-endpoint", True),  # admin routes keep the admin key
    (PROTECTED, "run", True), (PRIVATE, "run", True), (PRIVATE, "hf", True),
])
def test_a_key_is_needed(access, route, needed) -> None:
    assert needs_key(access, route) is needed


@pytest.mark.parametrize("access,scope,admin,refused", [
    (PRIVATE, frozenset(), False, True),  # an unscoped key reaches every endpoint: not this one
    (PRIVATE, frozenset({"e"}), False, False),  # scoped to it by name
    (PRIVATE, frozenset(), True, False),  # the admin key
    (PROTECTED, frozenset(), False, False),  # today's rule
    (PUBLIC, frozenset(), False, False),
])
def test_a_private_endpoint_takes_the_admin_key_or_a_key_scoped_to_it(access, scope, admin, refused) -> None:
    message = private_refusal(access, "e", scope, admin)
    assert (message == PRIVATE_UNSCOPED.format(endpoint="e")) if refused else message is None


def test_every_v2_client_route_but_purge_queue_is_open_on_a_public_endpoint() -> None:
    client = {r.name for r in ALL_ROUTES if r.path.startswith("/v2/{endpoint_id}/")
              and r.name not in WORKER_ROUTES}
    assert client - OPEN_ON_PUBLIC == {"purge-queue"}
    assert OPEN_ON_PUBLIC <= client  # no stale names


def test_the_access_cache_keeps_an_answer_for_its_ttl_and_is_bounded() -> None:
    cache: TtlCache[EndpointAccess] = TtlCache(ttl_ms=ACCESS_TTL_MS, size=2)
    cache.put("a", PUBLIC, 0)
    assert cache.get("a", ACCESS_TTL_MS - 1) is PUBLIC and cache.get("a", ACCESS_TTL_MS) is None
    cache.put("b", PRIVATE, 0)
    cache.put("c", PROTECTED, 0)  # the oldest ("a") goes
    assert [cache.get(x, 1) for x in "abc"] == [None, PRIVATE, PROTECTED]


async def test_access_is_read_once_per_ttl_from_redis(store: JobStore) -> None:
    await register(store, "cached", PUBLIC)
    checker = KeyChecker(store.redis, "admin", access_ttl_ms=1_000)
    assert await checker.access("cached", 0) is PUBLIC
    await register(store, "cached", PRIVATE)
    assert await checker.access("cached", 999) is PUBLIC  # stale within the bound
    assert await checker.access("cached", 1_000) is PRIVATE
    assert await checker.access("never-registered", 0) is PROTECTED


# ---- through a real gateway ----------------------------------------------------------------


async def register(store: JobStore, endpoint: str, access: EndpointAccess) -> None:
    registry = Registry(store.redis)
    await registry.put_template(Template(id="t", name="t", handler="handler.py"))
    await registry.put_endpoint(EndpointConfig(id=endpoint, name=endpoint, template_id="t",
                                               access=access, created_at=now_ms()))


def key(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, store: JobStore, workers: StartWorkers) -> Gateway:
    for endpoint, access in (("pub", PUBLIC), ("prot", PROTECTED), ("priv", PRIVATE)):
        await register(store, endpoint, access)
        await workers(endpoint)
    await add_key(store.redis, "scoped-priv", endpoints=["priv"])
    await add_key(store.redis, "scoped-prot", endpoints=["prot"])
    return await make_gateway(api_keys=("unscoped",), worker_refusal_pause_s=0.0)


async def test_a_public_endpoint_answers_without_a_key(gateway: Gateway) -> None:
    run = await gateway.call("POST", "/v2/pub/runsync", json={"input": {"x": 1}}, auth=False)
    assert run.status == 200 and run.body["output"] == {"echo": {"x": 1}}
    status = await gateway.call("GET", f"/v2/pub/status/{run.body['id']}", auth=False)
    assert status.status == 200 and status.body["status"] == "COMPLETED"
    hf = await gateway.call("POST", "/v2/pub/hf", json={"inputs": "hi"}, auth=False)
    assert hf.status == 200 and hf.body == {"echo": {"inputs": "hi"}}
    assert (await gateway.call("GET", "/v2/pub/health", auth=False)).status == 200
    # a key that is sent is not checked: huggingface_hub sends the user's Hub token anywhere
    hub_token = await gateway.call("POST", "/v2/pub/run", json={"input": 1},
                                   headers=key("hf_a_hub_token"), auth=False)
    assert hub_token.status == 200


async def test_a_public_endpoint_still_guards_purge_admin_and_worker_routes(gateway: Gateway) -> None:
    for method, path in (("POST", "/v2/pub/purge-queue"), ("GET", "/v1/endpoints/pub"),
                         ("GET", "/v2/pub/job-take/w1")):
        answer = await gateway.call(method, path, auth=False)
        assert answer.status == 401 and "missing API key" in answer.body["error"], path


async def test_a_protected_endpoint_takes_any_valid_key(gateway: Gateway) -> None:
    assert (await gateway.call("POST", "/v2/prot/run", json={"input": 1}, auth=False)).status == 401
    for value in ("unscoped", "scoped-prot"):
        answer = await gateway.call("POST", "/v2/prot/run", json={"input": 1}, headers=key(value), auth=False)
        assert answer.status == 200, value


async def test_a_private_endpoint_takes_the_admin_key_or_a_key_scoped_to_it(gateway: Gateway) -> None:
    assert (await gateway.call("POST", "/v2/priv/run", json={"input": 1}, auth=False)).status == 401
    assert (await gateway.call("POST", "/v2/priv/run", json={"input": 1})).status == 200  # admin
    scoped = await gateway.call("POST", "/v2/priv/hf", json={"inputs": 1}, headers=key("scoped-priv"), auth=False)
    assert scoped.status == 200
    unscoped = await gateway.call("POST", "/v2/priv/run", json={"input": 1}, headers=key("unscoped"), auth=False)
    assert unscoped.status == 403 and unscoped.body == {"error": PRIVATE_UNSCOPED.format(endpoint="priv")}
    other = await gateway.call("GET", "/v2/priv/health", headers=key("scoped-prot"), auth=False)
    assert other.status == 403 and "may only reach endpoint(s) prot, not 'priv'" in other.body["error"]
    wrong = await gateway.call("GET", "/v2/priv/health", headers=key("nope"), auth=False)
    assert wrong.status == 401  # an invalid key learns nothing about the endpoint
