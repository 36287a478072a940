"""Redis goes away and comes back: the gateway answers 503 meanwhile, then both it and the
workers reconnect on their own (no restart of either)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from serverless.gateway import GatewayOptions, start_gateway
from serverless.redis_server import RedisProcess
from serverless.settings import Settings
from tests.worker.conftest import running_worker

KEY = "restart-key"
pytestmark = pytest.mark.slow


async def test_gateway_503_while_redis_is_down_then_everything_recovers() -> None:
    redis = RedisProcess().start()
    settings = Settings(redis_url=redis.url, heartbeat_ms=200, lease_ms=2_000)
    gw = await start_gateway(settings, "127.0.0.1", 0, GatewayOptions(admin_key=KEY))
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        async with running_worker(settings, "ep-restart", {"handler": lambda job: "ok"}), \
                aiohttp.ClientSession(headers=headers) as http:
            url = f"{gw.url}/v2/ep-restart"
            async with http.post(f"{url}/runsync", json={"input": {}}) as r:
                assert (await r.json())["output"] == "ok"
            redis.stop()
            async with http.post(f"{url}/run", json={"input": {}}) as r:
                body = await r.json()
                assert r.status == 503 and "Redis" in body["error"]
            restarted = RedisProcess(port=redis.port).start()
            try:
                for _ in range(100):  # the worker's take loop and the gateway reconnect
                    async with http.post(f"{url}/runsync?wait=2000", json={"input": {}}) as r:
                        if r.status == 200 and (await r.json()).get("output") == "ok":
                            break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("no job completed after Redis came back")
            finally:
                await gw.close()
                restarted.stop()
    finally:
        redis.stop()
