"""The asyncio client (AsyncioEndpoint, AsyncioJob) against a live gateway on this loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from serverless.client import AsyncioEndpoint, AsyncioJob
from serverless.errors import JobFailed, Unauthorized
from tests.gateway.conftest import ADMIN_KEY, Gateway


@pytest.fixture
async def client(
    gateway: Gateway, endpoint: str, workers, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AsyncioEndpoint]:
    monkeypatch.setenv("PODQ_ENDPOINT_BASE_URL", f"{gateway.url}/v2")
    await workers(endpoint, n=2)
    async with AsyncioEndpoint(endpoint, api_key=ADMIN_KEY) as ep:
        yield ep


async def test_run_sync_and_run_then_output(client: AsyncioEndpoint) -> None:
    assert await client.run_sync({"x": 1}) == {"echo": {"x": 1}}
    job = await client.run({"input": {"y": 2}, "policy": {"executionTimeout": 60000}})
    assert isinstance(job, AsyncioJob)
    assert await job.output() == {"echo": {"y": 2}}  # waits by default, unlike RunPod's
    assert await job.status() == "COMPLETED"


async def test_output_zero_fetches_once_and_timeout_raises(client: AsyncioEndpoint) -> None:
    job = await client.run({"sleep_s": 1})
    assert await job.output(timeout=0) is None
    with pytest.raises(TimeoutError, match="keeps running"):
        await job.output(timeout=0.2)
    assert await job.output(timeout=5) == {"echo": {"sleep_s": 1}}


async def test_failed_job_raises_job_failed(client: AsyncioEndpoint) -> None:
    with pytest.raises(JobFailed, match="ended FAILED: out of memory"):
        await client.run_sync({"fail": "out of memory"})
    job = await client.run({"fail": "again"})
    with pytest.raises(JobFailed) as info:
        await job.output(timeout=5)
    assert (info.value.job_id, info.value.status, info.value.error) == (job.job_id, "FAILED", "again")


async def test_stream_yields_live_and_ends(client: AsyncioEndpoint) -> None:
    job = await client.run({"chunks": [1, 2, 3], "gap_s": 0.2})
    loop = asyncio.get_running_loop()
    arrivals = [(chunk, loop.time()) async for chunk in job.stream()]
    assert [c for c, _ in arrivals] == [1, 2, 3]
    assert arrivals[2][1] - arrivals[0][1] > 0.3
    assert await job.status() == "COMPLETED"


async def test_stream_ends_on_cancel(client: AsyncioEndpoint) -> None:
    job = await client.run({"chunks": ["only"], "sleep_s": 30})
    seen = []
    async for chunk in job.stream():
        seen.append(chunk)
        assert (await job.cancel())["status"] == "CANCELLED"
    assert seen == ["only"]


@pytest.mark.usefixtures("registered")
async def test_health_purge_and_a_caller_session(
    gateway: Gateway, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODQ_ENDPOINT_BASE_URL", f"{gateway.url}/v2")
    async with aiohttp.ClientSession() as session:
        ep = AsyncioEndpoint(endpoint, session, api_key=ADMIN_KEY)
        await ep.run({"queued": True})
        assert (await ep.health())["jobs"]["inQueue"] == 1
        assert await ep.purge_queue() == {"removed": 1, "status": "completed"}
        await ep.close()
        assert not session.closed  # the caller's session is the caller's to close


async def test_job_built_from_ids_with_runpod_signature(
    client: AsyncioEndpoint, endpoint: str
) -> None:
    job_id = (await client.run({"z": 1})).job_id
    async with aiohttp.ClientSession() as session:
        job = AsyncioJob(endpoint, job_id, session, {"Authorization": f"Bearer {ADMIN_KEY}"})
        assert await job.output(timeout=5) == {"echo": {"z": 1}}


async def test_401_is_a_clear_error(gateway: Gateway, endpoint: str, monkeypatch) -> None:
    monkeypatch.setenv("PODQ_ENDPOINT_BASE_URL", f"{gateway.url}/v2")
    monkeypatch.delenv("PODQ_API_KEY", raising=False)
    async with AsyncioEndpoint(endpoint) as ep:
        with pytest.raises(Unauthorized, match="missing API key.*export PODQ_API_KEY"):
            await ep.run({"x": 1})
