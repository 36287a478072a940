"""GET /metrics end to end: a scripted workload on two real gateway replicas over one real
redis-server, a real scaler (process backend) starting a real podq worker, RunPod-protocol
workers pinging through the gateway, and real webhook receivers. Every cluster figure has the
value the workload implies and is the same from both replicas; per-process figures are each
replica's own; the text parses with prometheus_client's parser."""

from __future__ import annotations

import asyncio
import platform
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scaler.backends.process import ProcessBackend
from scaler.loop import Scaler
from serverless import autopipeline
from serverless.errors import ConfigError
from serverless.gateway import GatewayOptions, RunningGateway, start_gateway
from serverless.gateway.auth import add_key
from serverless.model import EndpointConfig, Template
from serverless.registry import Registry
from serverless.settings import Settings
from serverless.store import JobStore
from tests.conftest import register
from tests.gateway.conftest import ADMIN_KEY, FAST_WEBHOOKS
from tests.gateway.test_webhooks import Receiver, receiver  # noqa: F401 - the fixture

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

HANDLER = '''
import serverless


def handler(job):
    if job["input"].get("fail"):
        return {"error": "asked to fail"}
    return {"ok": True}


if __name__ == "__main__":
    serverless.start({"handler": handler})
'''
# cluster series per endpoint with no job run and no scaler: queue depth 2 (normal, low) + oldest
# age 2 + in progress 1 + submitted 1 + finished 4 (by status) + retried 1 + delay histogram 23
# (20 buckets, +Inf, _sum, _count) + workers 5 (by state) + log lines dropped 1 = 40;
# docs/observability.md
FIXED_SERIES = 40
EXECUTION_SERIES = 20  # per final status seen: 17 buckets, +Inf, _sum, _count
COLD_START_SERIES = 16  # per backend: 13 buckets, +Inf, _sum, _count
SCALER_ONLY = {"podq_worker_cold_starts_total", "podq_worker_cold_start_seconds_bucket",
               "podq_worker_cold_start_seconds_count", "podq_worker_cold_start_seconds_sum",
               "podq_scaler_decisions_total", "podq_scaler_desired_workers"}


@pytest.fixture
def settings(redis_url: str) -> Settings:
    # a worker silent for 3 s is unhealthy (it beats every 300 ms): a busy 2-core machine never
    # turns a live worker unhealthy between the two replicas' scrapes
    return Settings(redis_url=redis_url, lease_ms=2_000, heartbeat_ms=1_000)


Start = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture
async def replicas(settings: Settings, store: JobStore) -> AsyncIterator[Start]:
    """Gateways over the suite's redis-server, each with its own connections (start_gateway)."""
    started: list[RunningGateway] = []

    async def start(**changes: Any) -> RunningGateway:
        options = GatewayOptions(admin_key=ADMIN_KEY, webhooks=FAST_WEBHOOKS, reap_interval_s=0.1)
        gateway = await start_gateway(settings.with_overrides(**changes), "127.0.0.1", 0, options)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
    async with http.request(method, url, headers=ADMIN, **kw) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def scrape(http: aiohttp.ClientSession, gateway: RunningGateway) -> Samples:
    async with http.get(f"{gateway.url}/metrics", headers=ADMIN) as r:
        assert r.status == 200 and r.content_type == "text/plain"
        text = await r.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def cluster(samples: Samples) -> Samples:
    """The series read from Redis (they carry an `endpoint` label), less the queue ages: those
    grow between two scrapes, as time does."""
    return {k: v for k, v in samples.items()
            if dict(k[1]).get("endpoint") and k[0] != "podq_queue_oldest_age_seconds"}


def series_of(samples: Samples, endpoint: str) -> int:
    return sum(1 for _, labels in samples if ("endpoint", endpoint) in labels)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def scaled_endpoint(registry: Registry, tmp_path: Path, endpoint: str) -> EndpointConfig:
    handler = tmp_path / "handler.py"
    handler.write_text(HANDLER)
    template = await registry.put_template(Template(
        id=f"t-{endpoint}", name=endpoint, handler=str(handler),
        env={"PODQ_HEARTBEAT_MS": "300", "PODQ_LEASE_MS": "2000"}))
    return await registry.put_endpoint(EndpointConfig(
        id=endpoint, name=endpoint, template_id=template.id, workers_min=1, workers_max=1))


@pytest.fixture
async def scaler(store: JobStore, tmp_path: Path) -> AsyncIterator[Scaler]:
    """The real control loop on the process backend (its workers are stopped at the end)."""
    backend = ProcessBackend(store.settings.redis_url, log_dir=str(tmp_path))
    loop = Scaler(Registry(store.redis), store, {"process": backend}, store.settings, tick_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    yield loop
    stop.set()
    await task
    await loop.close()
    for handle in await backend.list():
        await backend.stop(handle, 0.5)


async def test_two_replicas_report_what_the_workload_did(
    replicas: Start, store: JobStore, scaler: Scaler, http: aiohttp.ClientSession,
    receiver: Callable[..., Awaitable[Receiver]], tmp_path: Path,
) -> None:
    one, two = await replicas(), await replicas()
    served, queued = "ep-served", "ep-queued"  # a scaler keeps one worker; no worker at all
    await scaled_endpoint(Registry(store.redis), tmp_path, served)
    await register(store, queued)  # paused: jobs wait
    await until(lambda: _idle_workers(store, served, 1))  # the scaler's worker booted
    ok, broken = await receiver(), await receiver((500, 500, 500))

    # served: 5 /run on replica one (3 complete, 2 fail; two webhooks), 1 /runsync on two
    bodies = [{"input": {}, "webhook": ok.url}, {"input": {}, "webhook": broken.url}, {"input": {}},
              {"input": {"fail": True}}, {"input": {"fail": True}}]
    ids = [(await call(http, "POST", f"{one.url}/v2/{served}/run", json=b))["id"] for b in bodies]
    synced = await call(http, "POST", f"{two.url}/v2/{served}/runsync", json={"input": {}})
    assert synced["status"] == "COMPLETED"
    for job_id in ids:
        assert (await store.wait(job_id, 30)).status.value in ("COMPLETED", "FAILED")
    # RunPod-protocol workers ping through the gateway: one idle, one failing its fitness check
    await call(http, "GET", f"{one.url}/v2/{served}/ping/rp-1")
    await call(http, "GET", f"{two.url}/v2/{served}/ping/rp-2?status=unhealthy&check=gpu&reason=lost")

    # queued: 3 normal jobs then 1 lowPriority through replica two, the first cancelled on one
    waiting = [(await call(http, "POST", f"{two.url}/v2/{queued}/run", json=b))["id"]
               for b in ({"input": {}},) * 3 + ({"input": {}, "policy": {"lowPriority": True}},)]
    await call(http, "POST", f"{one.url}/v2/{queued}/cancel/{waiting[0]}")

    await ok.wait_for(1)
    await broken.wait_for(3)  # one try and two retries
    await until(lambda: _idle_workers(store, served, 2))  # its last job's beat said idle (+ rp-1)
    async with http.get(f"{one.url}/metrics") as r:
        assert r.status == 401  # no key
    async with http.get(f"{two.url}/v2/{queued}/stream/{waiting[1]}", headers={
            **ADMIN, "Accept": "text/event-stream"}) as stream:  # open while both are scraped
        assert stream.status == 200
        await until(lambda: _gauge_is(http, two, "podq_sse_streams", 1))
        await until(lambda: _webhooks_counted(http, one, two))
        first, second = await scrape(http, one), await scrape(http, two)

    # the cluster: the same from either replica
    assert cluster(first) == cluster(second)
    c = first
    assert value(c, "podq_jobs_submitted_total", endpoint=served) == 6
    assert {s: value(c, "podq_jobs_finished_total", endpoint=served, status=s)
            for s in ("completed", "failed", "cancelled", "timed_out")} == {
        "completed": 4, "failed": 2, "cancelled": 0, "timed_out": 0}
    assert value(c, "podq_jobs_retried_total", endpoint=served) == 0
    assert value(c, "podq_job_delay_seconds_count", endpoint=served) == 6  # every job started once
    assert value(c, "podq_job_delay_seconds_bucket", endpoint=served, le="+Inf") == 6
    for status, n in (("completed", 4), ("failed", 2)):  # histogram counts = jobs finished
        assert value(c, "podq_job_execution_seconds_count", endpoint=served, status=status) == n
        assert value(c, "podq_job_execution_seconds_bucket", endpoint=served, status=status, le="+Inf") == n
    assert {s: value(c, "podq_workers", endpoint=served, state=s)
            for s in ("idle", "running", "initializing", "unhealthy", "throttled")} == {
        "idle": 2, "running": 0, "initializing": 0, "unhealthy": 1, "throttled": 0}
    assert value(c, "podq_jobs_in_progress", endpoint=served) == 0
    assert value(c, "podq_queue_depth", endpoint=served, priority="normal") == 0

    assert value(c, "podq_queue_depth", endpoint=queued, priority="normal") == 2
    assert value(c, "podq_queue_depth", endpoint=queued, priority="low") == 1
    assert value(c, "podq_jobs_submitted_total", endpoint=queued) == 4
    assert value(c, "podq_jobs_finished_total", endpoint=queued, status="cancelled") == 1
    assert value(c, "podq_job_delay_seconds_count", endpoint=queued) == 0  # nothing started
    assert sum(value(c, "podq_workers", endpoint=queued, state=s)
               for s in ("idle", "running", "initializing", "unhealthy", "throttled")) == 0
    normal_age = value(c, "podq_queue_oldest_age_seconds", endpoint=queued, priority="normal")
    low_age = value(c, "podq_queue_oldest_age_seconds", endpoint=queued, priority="low")
    assert 0 <= low_age <= normal_age  # the normal jobs were queued first
    assert normal_age <= value(second, "podq_queue_oldest_age_seconds", endpoint=queued, priority="normal")

    # the scaler's figures, written by the leader into Redis, exported by every gateway
    process = {"endpoint": served, "backend": "process"}
    assert value(c, "podq_worker_cold_starts_total", **process, outcome="ready") == 1
    assert value(c, "podq_worker_cold_start_seconds_count", **process) == 1
    assert value(c, "podq_scaler_decisions_total", endpoint=served, action="scale_up") == 1
    assert value(c, "podq_scaler_desired_workers", endpoint=served) == 1
    assert value(c, "podq_scaler_desired_workers", endpoint=queued) == 0  # paused

    # series per endpoint (docs/observability.md): the fixed set, one execution histogram per
    # final status seen, and what a scaler adds (desired; cold starts, their histogram, decisions)
    assert series_of(c, queued) == FIXED_SERIES + 1
    assert series_of(c, served) == FIXED_SERIES + 2 * EXECUTION_SERIES + 1 + 1 + COLD_START_SERIES + 1
    assert series_of({k: v for k, v in c.items() if k[0] not in SCALER_ONLY}, served) == (
        FIXED_SERIES + 2 * EXECUTION_SERIES)

    # each replica's own figures
    run = {"route": "run", "method": "POST", "code": "200"}
    assert value(first, "podq_http_request_duration_seconds_count", **run) == 5  # served's
    assert value(second, "podq_http_request_duration_seconds_count", **run) == 4  # queued's
    requests = "podq_http_request_duration_seconds_count"
    assert value(second, requests, route="runsync", method="POST", code="200") == 1
    assert value(first, requests, route="cancel", method="POST", code="200") == 1
    assert value(first, requests, route="metrics", method="GET", code="401") == 1
    assert (value(first, "podq_sse_streams"), value(second, "podq_sse_streams")) == (0, 1)
    assert value(first, "podq_redis_roundtrip_duration_seconds_count") > 0
    build = {"version": metadata.version("podq"), "python": platform.python_version()}
    assert value(first, "podq_build_info", **build) == 1


async def test_metrics_need_the_admin_key_unless_public(
    replicas: Start, store: JobStore, http: aiohttp.ClientSession
) -> None:
    keyed, public = await replicas(), await replicas(metrics_public=True)
    await add_key(store.redis, "client-key")
    async with http.get(f"{keyed.url}/metrics") as r:
        assert r.status == 401 and "missing API key" in (await r.json())["error"]
    async with http.get(f"{keyed.url}/metrics", headers={"Authorization": "Bearer client-key"}) as r:
        assert r.status == 403 and "needs the admin key" in (await r.json())["error"]
    async with http.get(f"{public.url}/metrics") as r:
        assert r.status == 200
        assert any(f.name == "podq_build_info" for f in text_string_to_metric_families(await r.text()))
    async with http.get(f"{public.url}/v2/ep/health") as r:  # only /metrics is public
        assert r.status == 401


async def test_openmetrics_is_served_when_the_scraper_asks_for_it(
    replicas: Start, http: aiohttp.ClientSession
) -> None:
    gateway = await replicas()
    accept = {**ADMIN, "Accept": "application/openmetrics-text; version=1.0.0"}
    async with http.get(f"{gateway.url}/metrics", headers=accept) as r:
        assert r.content_type == "application/openmetrics-text"
        assert (await r.text()).endswith("# EOF\n")


async def test_metrics_off_removes_the_route_and_every_hook(
    replicas: Start, http: aiohttp.ClientSession
) -> None:
    before = list(autopipeline.ROUND_TRIP_OBSERVERS)
    gateway = await replicas(metrics=False)
    assert autopipeline.ROUND_TRIP_OBSERVERS == before  # no round trip is timed
    async with http.get(f"{gateway.url}/metrics", headers=ADMIN) as r:
        assert r.status == 404
    with pytest.raises(ConfigError, match="PODQ_METRICS_PUBLIC=true has no effect"):
        Settings(metrics=False, metrics_public=True)


async def _idle_workers(store: JobStore, endpoint: str, n: int) -> bool:
    return (await store.health(endpoint)).workers.idle == n


async def _gauge_is(http: aiohttp.ClientSession, gateway: RunningGateway, name: str, n: float) -> bool:
    return value(await scrape(http, gateway), name) == n


async def _webhooks_counted(http: aiohttp.ClientSession, *gateways: RunningGateway) -> bool:
    """The replica that delivered a webhook counts it (any replica may pop it): summed."""
    scraped = [await scrape(http, g) for g in gateways]

    def total(name: str, **labels: str) -> float:
        return sum(value(s, name, **labels) for s in scraped)

    return (total("podq_webhook_deliveries_total", outcome="success"),
            total("podq_webhook_deliveries_total", outcome="failure"),
            total("podq_webhook_retries_total")) == (1, 1, 2)
