from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from serverless.queue import connect
from serverless.settings import Settings
from serverless.store import JobStore
from worker.config import parse_config
from worker.runtime import Worker

HANDLERS = Path(__file__).parent / "handlers"
ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def running_worker(settings: Settings, endpoint: str, config: dict[str, Any],
                         worker_id: str = "w-inproc") -> AsyncIterator[Worker]:
    """A real Worker in this event loop, against the real redis-server, registered (its first
    beat written: the gateway knows its endpoint) before it is yielded; stopped on exit."""
    store = JobStore(await connect(settings.redis_url), settings)
    worker = Worker(parse_config(config), store, settings, endpoint, worker_id)
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(500):
            if task.done() or await store.worker(endpoint, worker_id) is not None:
                break
            await asyncio.sleep(0.01)
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
        await store.close()


@pytest.fixture
def worker_factory(settings: Settings, endpoint: str) -> Callable[..., Any]:
    def make(handler: Callable[..., Any], **config: Any) -> Any:
        return running_worker(settings, endpoint, {"handler": handler, **config})

    return make


@pytest.fixture
def spawn_worker(settings: Settings, endpoint: str) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `podq worker` subprocesses on a handler file from tests/worker/handlers."""
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, worker_id: str, **env: str) -> subprocess.Popen[bytes]:
        full_env = {
            **os.environ,
            "PODQ_LEASE_MS": str(settings.lease_ms),
            "PODQ_HEARTBEAT_MS": str(settings.heartbeat_ms),
            "PODQ_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        cmd = [sys.executable, "-m", "worker", str(HANDLERS / name), "--endpoint", endpoint,
               "--redis", settings.redis_url, "--worker-id", worker_id]
        proc = subprocess.Popen(cmd, env=full_env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


async def wait_for_worker(store: JobStore, endpoint: str, worker_id: str, timeout: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if any(w.id == worker_id for w in await store.workers(endpoint)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"worker {worker_id} never registered")
