"""The scaler runs unmodified RunPod workers from a `protocol: runpod` template (process backend):
RunPod's env with a minted worker key, a fresh process per start, recycling on stopPod and when
a cancelled job cannot be stopped, and no orphaned ping child left behind."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import msgspec
import pytest

from scaler.backends.base import WorkerHandle
from scaler.backends.process import ProcessBackend, _environ
from scaler.loop import Scaler
from serverless.gateway.auth import list_keys
from serverless.model import EndpointConfig, Template, WorkerProtocol
from serverless.registry import Registry
from serverless.settings import Settings
from tests.runpod_workers.conftest import HANDLER, KEY, finished, runpod_python, status, submit, until
from tests.scaler_running import running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
async def scaled(rp_gateway, rp_settings: Settings, tmp_path: Path) -> AsyncIterator:
    settings = msgspec.structs.replace(rp_settings, gateway_url=rp_gateway.url, grace_period_s=3)
    registry = Registry(rp_gateway.store.redis)
    backend = ProcessBackend(settings.redis_url, log_dir=str(tmp_path / "workers"))

    @asynccontextmanager
    async def run(endpoint: str, **mock: str) -> AsyncIterator[Scaler]:
        command = f"{runpod_python('1.12.0')} -u {HANDLER}"
        env = {"RUNPOD_SKIP_GPU_CHECK": "true", **{f"MOCK_{k.upper()}": v for k, v in mock.items()}}
        await registry.put_template(Template(id=f"t-{endpoint}", name="rp", docker_start_cmd=command,
                                             protocol=WorkerProtocol.RUNPOD, env=env))
        await registry.put_endpoint(EndpointConfig(id=endpoint, name=endpoint, template_id=f"t-{endpoint}",
                                                   workers_min=1, workers_max=2, idle_timeout=1))
        async with running(Scaler(registry, rp_gateway.store, {"process": backend}, settings, tick_s=0.2),
                           backend) as scaler:
            yield scaler

    yield run, backend


async def _live(backend: ProcessBackend, endpoint: str) -> list:
    return [h for h in await backend.list() if h.endpoint_id == endpoint and h.running]


async def test_the_scaler_starts_a_runpod_worker_with_runpods_env_and_a_worker_key(
    scaled, rp_gateway, client, endpoint
) -> None:
    run, backend = scaled
    async with run(endpoint):
        handles = await until(lambda: _live(backend, endpoint), 15, "a worker")
        env = _environ(int(handles[0].ref))
        assert env["RUNPOD_POD_ID"] == handles[0].worker_id
        assert env["RUNPOD_WEBHOOK_GET_JOB"] == f"{rp_gateway.url}/v2/{endpoint}/job-take/$ID?gpu="
        assert env["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] == "true" and env["RUNPOD_PING_INTERVAL"] == "1000"
        worker_keys = [k for k in await list_keys(rp_gateway.store.redis) if k.worker]
        assert [k.endpoints for k in worker_keys] == [[endpoint]]
        assert env["RUNPOD_AI_API_KEY"] != KEY
        # the public runpod client, unchanged, drives it
        import runpod

        runpod.api_key, runpod.endpoint_url_base = KEY, f"{rp_gateway.url}/v2"
        result = await asyncio.to_thread(runpod.Endpoint(endpoint).run_sync, {"output": {"ok": 1}}, 60)
        assert result == {"ok": 1}
        job = await asyncio.to_thread(runpod.Endpoint(endpoint).run, {"output": "async"})
        assert await asyncio.to_thread(job.output, 60) == "async"
        health = await asyncio.to_thread(runpod.Endpoint(endpoint).health)
        assert health["workers"]["idle"] + health["workers"]["running"] == 1


async def test_stop_pod_makes_the_scaler_replace_the_worker_with_a_fresh_one(
    scaled, rp_gateway, client, endpoint
) -> None:
    run, backend = scaled
    async with run(endpoint):
        first = (await until(lambda: _live(backend, endpoint), 15, "a worker"))[0]
        answer = await client.post(f"/v2/{endpoint}/runsync",
                                   json={"input": {"output": {"a": 1}, "refresh": True}})
        assert answer.json()["workerId"] == first.worker_id

        async def replaced():
            live = await _live(backend, endpoint)
            return [h for h in live if h.worker_id != first.worker_id] if first.worker_id not in {
                h.worker_id for h in live} else None

        await until(replaced, 30, "a fresh worker instead of the refreshed one")
        answer = await client.post(f"/v2/{endpoint}/runsync", json={"input": {"output": 2}})
        assert answer.json()["output"] == 2 and answer.json()["workerId"] != first.worker_id


async def test_a_worker_stuck_on_a_cancelled_sync_job_is_recycled_after_the_grace(
    scaled, rp_gateway, client, endpoint
) -> None:
    run, backend = scaled
    async with run(endpoint, kind="sync"):
        first, job_id = await _started(backend, client, endpoint, {"sleep": 60})
        await client.post(f"/v2/{endpoint}/cancel/{job_id}")
        # the sync handler cannot be stopped; after runpod_stop_grace_ms (3 s) it is replaced
        await until(lambda: _gone(backend, endpoint, first.worker_id), 30, "the stuck worker recycled")
        answer = await client.post(f"/v2/{endpoint}/runsync", json={"input": {"output": "next"}})
        assert answer.json()["output"] == "next"
        assert (await status(client, endpoint, job_id))["status"] == "CANCELLED"


async def test_killing_only_the_main_process_leaves_no_pinging_orphan(
    scaled, rp_gateway, client, endpoint
) -> None:
    run, backend = scaled
    async with run(endpoint, kind="async"):
        first, job_id = await _started(backend, client, endpoint, {"sleep": 3, "output": "rescued"})
        pid = int(first.ref)
        children = [p for p in _pids() if _group(p) == pid and p != pid]
        assert children, "the SDK's ping child should be in the worker's group"
        os.kill(pid, signal.SIGKILL)  # the main process only: its ping child would go on pinging
        await until(lambda: not [p for p in _pids() if _group(p) == pid], 20, "the orphaned group killed")
        body = await finished(client, endpoint, job_id, timeout_s=60)
        assert body["status"] == "COMPLETED" and body["workerId"] != first.worker_id


async def _started(backend: ProcessBackend, client: httpx.AsyncClient, endpoint: str,
                   payload: object) -> tuple[WorkerHandle, str]:
    """The endpoint's first live worker, and the id of a job of `payload` once it is IN_PROGRESS."""
    first = (await until(lambda: _live(backend, endpoint), 15, "a worker"))[0]
    job_id = await submit(client, endpoint, payload)

    async def running() -> bool:
        return (await status(client, endpoint, job_id))["status"] == "IN_PROGRESS"

    await until(running, 30, "the job to start")
    return first, job_id


async def _gone(backend: ProcessBackend, endpoint: str, worker_id: str) -> bool:
    return worker_id not in {h.worker_id for h in await _live(backend, endpoint)}


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _group(pid: int) -> int:
    from serverless.process_group import group_of

    return group_of(pid)
