"""Endpoints that exist, and typos that do not: the rule (a table), its cache, and the 404 a
client gets for an endpoint that is not registered, not served by a live worker and holds no
job, while every job that exists stays reachable through the job routes."""

from __future__ import annotations

import msgspec
import pytest

from serverless import keys
from serverless.gateway.known_endpoints import (
    UNKNOWN_ENDPOINT,
    KnownEndpoints,
    Sightings,
    is_known,
)
from serverless.model import RunRequest, Status, WorkerBeat, WorkerState
from serverless.registry import Registry
from serverless.store import JobStore, now_ms
from tests.conftest import register
from tests.gateway.conftest import Gateway, beat

NOW = 1_700_000_000_000
WINDOW = 900  # 3 heartbeats of 300 ms: the window of a podq worker's beat
RUNPOD = 10_000  # a RunPod worker's ping interval: its window is 3 of those


def seen(ago_ms: int, state: WorkerState = WorkerState.IDLE, interval_ms: int = 0) -> WorkerBeat:
    return WorkerBeat(id="w", endpoint="ep", state=state, seen_at=NOW - ago_ms, interval_ms=interval_ms)


@pytest.mark.parametrize("sightings,expected", [
    (Sightings(), False),  # nothing at all: a typo
    (Sightings(registered=True), True),  # `podq endpoint create`, no worker yet
    (Sightings(beats=(seen(0),)), True),  # `podq worker --endpoint X` beat just now
    (Sightings(beats=(seen(WINDOW),)), True),  # silent for exactly its window: still live
    (Sightings(beats=(seen(WINDOW + 1),)), False),  # silent past 3 heartbeats: stale
    (Sightings(beats=(seen(WINDOW + 1), seen(10))), True),  # one stale, one live
    (Sightings(beats=(seen(600_000, WorkerState.INITIALIZING),)), True),  # loading a model
    (Sightings(beats=(seen(5, WorkerState.UNHEALTHY),)), True),  # says unhealthy, still there
    (Sightings(beats=(seen(2 * RUNPOD, interval_ms=RUNPOD),)), True),  # RunPod: 3 pings' window
    (Sightings(beats=(seen(3 * RUNPOD + 1, interval_ms=RUNPOD),)), False),  # RunPod, stale
    (Sightings(beats=(seen(31 * RUNPOD, WorkerState.INITIALIZING, RUNPOD),)), False),  # gone
    (Sightings(queued=1), True),  # a queued job is never stranded
    (Sightings(running=1), True),  # nor a running one
    (Sightings(beats=(seen(60_000),), queued=2), True),  # workers died, jobs wait for new ones
])
def test_an_endpoint_is_known_when(sightings: Sightings, expected: bool) -> None:
    assert is_known(sightings, NOW, WINDOW) is expected


def _beat(endpoint: str, ago_ms: int, state: WorkerState = WorkerState.IDLE) -> WorkerBeat:
    return WorkerBeat(id="w1", endpoint=endpoint, state=state, seen_at=now_ms() - ago_ms)


async def test_sightings_are_read_in_one_pipeline(store: JobStore, endpoint: str) -> None:
    known = KnownEndpoints(store.redis, store.stale_after_ms)
    assert await known.sightings(endpoint) == Sightings()
    await store.submit(endpoint, RunRequest(input=1))
    await store.beat(worker := _beat(endpoint, 0))
    await register(store, endpoint)
    assert await known.sightings(endpoint) == Sightings(registered=True, beats=(worker,), queued=1)


async def test_positive_answers_are_cached_for_their_ttl_negative_ones_never(
    store: JobStore, endpoint: str
) -> None:
    known = KnownEndpoints(store.redis, store.stale_after_ms, ttl_ms=5_000)
    now = now_ms()
    assert not await known.is_known(endpoint, now)
    await register(store, endpoint)
    assert await known.is_known(endpoint, now)  # the unknown answer was not kept
    await Registry(store.redis).delete_endpoint(endpoint)
    assert await known.is_known(endpoint, now + 4_999)  # cached: no round trip
    assert not await known.is_known(endpoint, now + 5_000)  # expired: asked again


async def test_the_cache_is_bounded_and_forgets_the_oldest(store: JobStore) -> None:
    known = KnownEndpoints(store.redis, store.stale_after_ms, size=2)
    now = now_ms()
    for endpoint in ("a", "b", "c"):
        await register(store, endpoint)
        assert await known.is_known(endpoint, now)
    for endpoint in ("a", "b", "c"):
        await Registry(store.redis).delete_endpoint(endpoint)
    assert [await known.is_known(e, now) for e in ("b", "c", "a")] == [True, True, False]


# ---- through the gateway --------------------------------------------------------------------

ENDPOINT_ROUTES = [
    ("POST", "run", {"input": {"n": 1}}),
    ("POST", "runsync?wait=1000", {"input": {"n": 1}}),
    ("GET", "health", None),
    ("POST", "purge-queue", None),
]


@pytest.mark.parametrize("method,route,body", ENDPOINT_ROUTES)
async def test_an_unknown_endpoint_is_a_404_that_says_how_to_create_it(
    gateway: Gateway, store: JobStore, method: str, route: str, body: object
) -> None:
    answer = await gateway.call(method, f"/v2/typo-ep/{route}", json=body)
    assert answer.status == 404
    assert answer.body == {"error": UNKNOWN_ENDPOINT.format(endpoint="typo-ep")}
    assert answer.body["error"] == (
        "endpoint 'typo-ep' not found: no registered endpoint and no live worker serves it; "
        "create it with `podq endpoint create --id typo-ep --name typo-ep --template-id TPL` "
        "or POST /v1/endpoints, or start a worker with `podq worker handler.py --endpoint typo-ep`"
    )
    assert await store.redis.zcard(keys.queue("typo-ep")) == 0  # nothing was queued
    assert "typo-ep" not in await store.endpoints()


async def test_a_caller_without_a_key_learns_nothing_about_which_endpoints_exist(
    gateway: Gateway
) -> None:
    answer = await gateway.call("POST", "/v2/typo-ep/run", json={"input": 1}, auth=False)
    assert answer.status == 401


@pytest.mark.parametrize("method,route,body", ENDPOINT_ROUTES)
async def test_an_endpoint_a_live_worker_serves_is_accepted(
    gateway: Gateway, store: JobStore, endpoint: str, method: str, route: str, body: object
) -> None:
    await beat(store, endpoint, "w1")  # no registry entry: `podq worker --endpoint X`
    assert (await gateway.call(method, f"/v2/{endpoint}/{route}", json=body)).status == 200


@pytest.mark.parametrize("method,route,body", ENDPOINT_ROUTES)
async def test_a_registered_endpoint_is_accepted_with_no_worker(
    gateway: Gateway, store: JobStore, endpoint: str, method: str, route: str, body: object
) -> None:
    await register(store, endpoint)
    assert (await gateway.call(method, f"/v2/{endpoint}/{route}", json=body)).status == 200


async def test_an_initializing_worker_counts_while_it_loads_its_model(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    await store.beat(_beat(endpoint, 120_000, WorkerState.INITIALIZING))
    assert (await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1})).status == 200


async def test_a_runpod_worker_that_pings_makes_its_endpoint_known(
    gateway: Gateway, endpoint: str
) -> None:
    assert (await gateway.call("GET", f"/v2/{endpoint}/health")).status == 404
    # the worker routes are exempt: a RunPod worker pings before anything is registered
    assert (await gateway.call("GET", f"/v2/{endpoint}/ping/rp-1")).status == 200
    assert (await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1})).status == 200


async def test_a_queued_job_keeps_its_endpoint_known_with_no_worker(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    await store.submit(endpoint, RunRequest(input=1))  # its worker died, or never came
    health = await gateway.call("GET", f"/v2/{endpoint}/health")
    assert health.status == 200 and health.body["jobs"]["inQueue"] == 1
    assert (await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 2})).body["status"] == "IN_QUEUE"
    purged = await gateway.call("POST", f"/v2/{endpoint}/purge-queue")
    assert purged.status == 200 and purged.body["removed"] == 2


async def test_a_stale_beat_does_not_keep_an_endpoint_known(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    await store.beat(_beat(endpoint, store.stale_after_ms + 1_000))
    answer = await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1})
    assert answer.status == 404 and answer.body["error"].startswith(f"endpoint '{endpoint}' not found")


async def test_job_routes_serve_every_job_of_an_endpoint_nobody_serves_any_more(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    async def finished(status: Status) -> str:
        record = await store.submit(endpoint, RunRequest(input=1))
        taken = await store.take(endpoint, "w1")
        assert taken is not None and taken.id == record.id
        ok = status is Status.COMPLETED
        await store.finish(taken.id, taken.attempt, status, output=msgspec.json.encode("ok") if ok else None,
                           error=None if ok else "boom")
        return record.id

    done, failed = await finished(Status.COMPLETED), await finished(Status.FAILED)
    assert (await gateway.call("GET", f"/v2/{endpoint}/health")).status == 404  # no job, no worker
    v2 = f"/v2/{endpoint}"
    status = await gateway.call("GET", f"{v2}/status/{done}")
    assert status.status == 200 and status.body["output"] == "ok"
    assert (await gateway.call("POST", f"{v2}/stream/{done}")).body == {"status": "COMPLETED", "stream": []}
    assert (await gateway.call("POST", f"{v2}/cancel/{done}")).body["status"] == "COMPLETED"
    again = await gateway.call("POST", f"{v2}/retry/{failed}")
    assert again.status == 200 and again.body["status"] == "IN_QUEUE"
    # and the retried job, queued again, makes the endpoint known until it is taken
    assert (await gateway.call("GET", f"/v2/{endpoint}/health")).body["jobs"]["inQueue"] == 1
