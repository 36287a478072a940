"""Worker logs end to end on the docker backend: a worker container on the suite's own dockerd
(the host's Python and this repository bind-mounted, the host network to reach the real
redis-server) writes lines every way a handler does; they reach GET /logs and `podq logs`
tagged with their job, and `podq logs --backend docker` still reads the container's own output,
boot lines included."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import msgspec
import pytest

from scaler.backends.base import WorkerSpec
from scaler.backends.docker import DockerBackend
from scaler.logs_cli import main as logs_main
from serverless.model import RunRequest, Status
from serverless.settings import Settings
from serverless.store import JobStore
from tests.backends.docker_engine import IMAGE, DockerEngine
from tests.logs.conftest import ADMIN_KEY, logs_of, poll
from tests.worker.conftest import wait_for_worker

CHATTY = str(Path(__file__).parent / "handlers" / "chatty.py")

pytestmark = pytest.mark.slow


async def test_a_containers_lines_reach_logs_and_podq_logs_tagged_with_their_job(
        docker_engine: DockerEngine, gateway, store: JobStore, settings: Settings, endpoint: str,
        capsys) -> None:
    backend = DockerBackend(docker_engine.options())
    worker_id = f"{endpoint}-{uuid.uuid4().hex[:8]}"
    spec = WorkerSpec(endpoint_id=endpoint, worker_id=worker_id, version=1, redis_url=settings.redis_url,
                      image=IMAGE, handler=CHATTY,
                      # PYTHONUNBUFFERED as docker/Dockerfile.worker sets it: prints reach
                      # the engine's log as they happen
                      env={"PODQ_HEARTBEAT_MS": "300", "PODQ_LEASE_MS": "2000", "PYTHONUNBUFFERED": "1"})
    handle = await backend.start(spec)
    try:
        await wait_for_worker(store, endpoint, worker_id, timeout=30)
        submitted = await store.submit(endpoint, RunRequest(input=msgspec.Raw(b'{"tag": "K"}')))
        assert (await store.wait(submitted.id, 20)).status is Status.COMPLETED

        async def tagged() -> list[dict]:
            lines = (await logs_of(gateway, endpoint, f"job={submitted.id}"))["lines"]
            return lines if len(lines) >= 4 else []

        lines = await poll(tagged)
        assert {(x["stream"], x["level"], x["line"]) for x in lines} == {  # type: ignore[union-attr]
            ("stdout", "", "K print"), ("stderr", "", "K stderr"), ("log", "warning", "K logging"),
            ("stdout", "", "K thread")}
        assert {(x["worker"], x["job"]) for x in lines} == {(worker_id, submitted.id)}  # type: ignore[union-attr]

        capsys.readouterr()
        await asyncio.to_thread(logs_main, [endpoint, "--job", submitted.id, "--url", gateway.url,
                                            "--api-key", ADMIN_KEY])
        printed = capsys.readouterr().out
        assert f"{worker_id} {submitted.id} | K print" in printed, printed
        assert f"{worker_id} {submitted.id} | [warning] K logging" in printed, printed

        await asyncio.to_thread(logs_main, [endpoint, "--backend", "docker", "--docker-host", docker_engine.host])
        engine = capsys.readouterr().out.splitlines()  # `worker | <engine timestamp> text`
        for text in ("chatty: loading the model", "K print", "K stderr", "K logging", "K thread"):
            assert any(line.startswith(f"{worker_id} | ") and line.endswith(f"Z {text}")
                       for line in engine), (text, engine)
    finally:
        await backend.stop(handle, 5)
        await backend.close()
