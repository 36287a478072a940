"""The public `runpod` package (unchanged) against podq's gateway, over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import runpod  # a declared test extra (pyproject [test]): missing, this module fails, never skips

from serverless.gateway import GatewayOptions, start_gateway
from tests.worker.conftest import running_worker

KEY = "podq-test-admin-key"


async def handler(job: dict[str, Any]) -> AsyncIterator[Any]:
    if job["input"].get("sleep"):
        await asyncio.sleep(job["input"]["sleep"])
    for word in job["input"].get("prompt", "").split():
        yield word


@pytest.fixture
async def gateway(settings, endpoint):
    gw = await start_gateway(settings, "127.0.0.1", 0, GatewayOptions(admin_key=KEY))
    runpod.api_key = KEY
    runpod.endpoint_url_base = f"{gw.url}/v2"
    async with running_worker(settings, endpoint, {"handler": handler, "return_aggregate_stream": True,
                                                   "concurrency_modifier": lambda c: 4}):
        yield gw
    await gw.close()


async def test_sync_endpoint_run_sync_status_output_health(gateway, endpoint) -> None:
    ep = runpod.Endpoint(endpoint)
    assert await asyncio.to_thread(ep.run_sync, {"prompt": "a b c"}) == ["a", "b", "c"]
    job = await asyncio.to_thread(ep.run, {"prompt": "x y"})
    assert await asyncio.to_thread(job.output, 10) == ["x", "y"]
    assert await asyncio.to_thread(job.status) == "COMPLETED"
    health = await asyncio.to_thread(ep.health)
    assert health["jobs"]["completed"] == 2 and set(health["workers"]) >= {"idle", "running"}


async def test_sync_job_stream_and_cancel(gateway, endpoint) -> None:
    ep = runpod.Endpoint(endpoint)
    job = await asyncio.to_thread(ep.run, {"prompt": "one two three"})
    assert await asyncio.to_thread(lambda: list(job.stream())) == ["one", "two", "three"]
    slow = await asyncio.to_thread(ep.run, {"sleep": 30})
    cancelled = await asyncio.to_thread(slow.cancel)
    assert cancelled["status"] == "CANCELLED"
    assert await asyncio.to_thread(slow.status) == "CANCELLED"


async def test_sync_purge_queue(gateway, endpoint) -> None:
    ep = runpod.Endpoint(endpoint)
    for _ in range(4):  # occupy the worker's 4 slots
        await asyncio.to_thread(ep.run, {"sleep": 30})
    await asyncio.sleep(0.3)
    for _ in range(3):
        await asyncio.to_thread(ep.run, {"prompt": "queued"})
    purged = await asyncio.to_thread(ep.purge_queue)
    assert purged == {"removed": 3, "status": "completed"}


async def test_asyncio_endpoint_and_job(gateway, endpoint) -> None:
    async with aiohttp.ClientSession() as session:
        ep = runpod.AsyncioEndpoint(endpoint, session)
        job = await ep.run({"prompt": "async works"})
        assert await job.output(timeout=10) == ["async", "works"]
        assert await job.status() == "COMPLETED"
        streamed = await ep.run({"prompt": "s t"})
        assert [x async for x in streamed.stream()] == ["s", "t"]
        slow = await ep.run({"sleep": 30})
        assert (await slow.cancel())["status"] == "CANCELLED"
        assert (await ep.health())["jobs"]["completed"] >= 2
        assert (await ep.purge_queue())["status"] == "completed"
