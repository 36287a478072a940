"""1,000 concurrent /runsync calls over real HTTP, each answered with its own result."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.conftest import register
from tests.gateway.conftest import ADMIN_KEY, Gateway

CALLS = 1000


@pytest.mark.slow
async def test_1000_concurrent_runsync_calls_are_all_answered_correctly(
    gateway: Gateway, endpoint: str, workers, store
) -> None:
    # registered: the in-test workers beat from this same busy event loop, and 1,000 clients
    # can hold it past their 0.9 s heartbeat window (out-of-process workers would not be late)
    await register(store, endpoint)
    await workers(endpoint, n=8)
    url = f"{gateway.url}/v2/{endpoint}/runsync"
    connector = aiohttp.TCPConnector(limit=0)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def call(i: int) -> tuple[int, dict]:
            async with session.post(url, json={"input": {"i": i}}) as response:
                return response.status, await response.json()

        results = await asyncio.gather(*(call(i) for i in range(CALLS)))
    assert [status for status, _ in results] == [200] * CALLS, [b for s, b in results if s != 200][:3]
    assert [body["status"] for _, body in results] == ["COMPLETED"] * CALLS
    assert [body["output"] for _, body in results] == [{"echo": {"i": i}} for i in range(CALLS)]
    assert len({body["id"] for _, body in results}) == CALLS
