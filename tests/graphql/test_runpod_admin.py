"""The unmodified `runpod` package's admin functions against podq, end to end.

A real gateway (start_gateway, real port, the suite's redis-server) and a real scaler with the
process backend on the test's loop; the package's blocking calls run in threads. The package
makes two templates and an endpoint, lists endpoints, moves the endpoint to the second
template, and `runpod.Endpoint(id).run_sync` completes through a worker the scaler started: an
unmodified RunPod worker (handlers/echo.py on the `runpod` package, RunPod's worker protocol)
whose env came from the template. Then RunPod's deleteEndpoint and deleteTemplate (the package
has no functions for them: its own run_graphql_query sends them) remove everything, and the
scaler stops the worker.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import runpod  # part of podq's test extras: never a skip
from runpod.api.graphql import run_graphql_query

from scaler.backends.process import ProcessBackend
from scaler.loop import Scaler
from serverless.gateway import GatewayOptions, start_gateway
from serverless.gateway.server import RunningGateway
from serverless.registry import Registry
from serverless.settings import Settings
from tests.scaler_running import running

HANDLER = Path(__file__).parent / "handlers" / "echo.py"
KEY = "graphql-suite-admin-key"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def podq(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[RunningGateway, ProcessBackend]]:
    """A gateway and a running scaler; the `runpod` package pointed at the gateway."""
    settings = Settings(redis_url=redis_url, lease_ms=2_000, heartbeat_ms=300, rate_limits=False,
                        runpod_ping_ms=1_000, runpod_hold_ms=3_000, runpod_stop_grace_ms=3_000,
                        grace_period_s=3)
    gateway = await start_gateway(settings, "127.0.0.1", 0, GatewayOptions(admin_key=KEY, reap_interval_s=0.2))
    await gateway.store.redis.flushdb()  # the suite's own redis-server
    monkeypatch.setenv("RUNPOD_API_BASE_URL", gateway.url)  # read at each GraphQL call
    monkeypatch.setattr(runpod, "api_key", KEY)
    monkeypatch.setattr(runpod, "endpoint_url_base", f"{gateway.url}/v2")
    backend = ProcessBackend(settings.redis_url, log_dir=str(tmp_path / "workers"))
    scaler = Scaler(Registry(gateway.store.redis), gateway.store, {"process": backend},
                    msgspec.structs.replace(settings, gateway_url=gateway.url), tick_s=0.2)
    async with running(scaler, backend):
        yield gateway, backend
    await gateway.close()


async def until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := await predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)
    return value


async def test_runpod_admin_functions_make_an_endpoint_that_serves_jobs(podq, tmp_path: Path) -> None:
    gateway, backend = podq
    command = f"{sys.executable} -u {HANDLER}"
    first = await asyncio.to_thread(runpod.create_template, "echo-one", "podq/echo:1", command,
                                    env={"GREETING": "one"}, is_serverless=True)
    second = await asyncio.to_thread(runpod.create_template, "echo-two", "podq/echo:2", command,
                                     env={"GREETING": "two"}, is_serverless=True)
    assert (first["name"], first["dockerArgs"], first["env"]) == (
        "echo-one", command, [{"key": "GREETING", "value": "one"}])

    made = await asyncio.to_thread(runpod.create_endpoint, "echo", first["id"], gpu_ids="ANY",
                                   workers_max=1, idle_timeout=30)
    assert (made["templateId"], made["gpuIds"], made["workersMax"], made["scalerType"]) == (
        first["id"], "ANY", 1, "QUEUE_DELAY")
    [listed] = await asyncio.to_thread(runpod.get_endpoints)
    assert (listed["id"], listed["version"], listed["env"]) == (
        made["id"], 1, [{"key": "GREETING", "value": "one"}])

    moved = await asyncio.to_thread(runpod.update_endpoint_template, made["id"], second["id"])
    assert moved == {"id": made["id"], "templateId": second["id"]}

    # the first job wakes the endpoint (workers_min 0): the scaler starts a RunPod worker
    result = await asyncio.to_thread(runpod.Endpoint(made["id"]).run_sync, {"n": 7}, 60)
    log = "".join(p.read_text(errors="replace") for p in (tmp_path / "workers").glob("*.log"))
    assert result == {"echo": {"n": 7}, "greeting": "two"}, log

    deleted = await asyncio.to_thread(run_graphql_query, f'mutation {{ deleteEndpoint(id: "{made["id"]}") }}')
    assert deleted == {"data": {"deleteEndpoint": None}}
    for name in ("echo-one", "echo-two"):
        query = f'mutation {{ deleteTemplate(templateName: "{name}") }}'
        assert await asyncio.to_thread(run_graphql_query, query) == {"data": {"deleteTemplate": None}}
    assert await asyncio.to_thread(runpod.get_endpoints) == []
    registry = Registry(gateway.store.redis)
    assert await registry.templates() == []

    async def stopped() -> bool:
        return not [h for h in await backend.list() if h.endpoint_id == made["id"] and h.running]

    await until(stopped, 20, "the scaler to stop the deleted endpoint's worker")


async def test_the_packages_errors_carry_podqs_messages(podq) -> None:
    with pytest.raises(runpod.error.QueryError, match="^template 'nope' does not exist"):
        await asyncio.to_thread(runpod.create_endpoint, "x", "nope", gpu_ids="ANY")
    with pytest.raises(runpod.error.QueryError, match="^User.pods is not served: podq serves no pods"):
        await asyncio.to_thread(runpod.get_pods)
    with pytest.raises(runpod.error.QueryError, match="^networkVolumeId .vol-1. cannot be applied: podq has no network volumes"):
        await asyncio.to_thread(runpod.create_endpoint, "x", "t", network_volume_id="vol-1")
    runpod.api_key = "wrong-key"
    with pytest.raises(runpod.error.AuthenticationError):
        await asyncio.to_thread(runpod.get_endpoints)
