"""Unmodified RunPod workers against a real gateway: the harness of the conformance suite.

Each worker is the public `runpod` package of one version, in its own venv that the suite builds
once and caches (`.venv-runpod/<version>`, also built by `make runpod-venvs`), running
handlers/mock_worker.py as a subprocess in its own process group, with a fresh HOME (no
credentials file) and a fresh CWD (SDK 1.7.12-1.10.0 keep their job list there), and the env
podq gives the workers it starts (serverless.runpod_protocol.worker_env) with 1 s pings.
The gateway is real (start_gateway on a free port) over the suite's own redis-server.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from serverless.gateway import GatewayOptions, start_gateway
from serverless.gateway.server import RunningGateway
from serverless.model import EndpointConfig, Template, WorkerProtocol
from serverless.process_group import kill_group, send
from serverless.registry import Registry
from serverless.runpod_protocol import worker_env
from serverless.settings import Settings
from serverless.store import JobStore

ROOT = Path(__file__).resolve().parents[2]
VENVS = ROOT / ".venv-runpod"
HANDLER = Path(__file__).parent / "handlers" / "mock_worker.py"
KEY = "runpod-suite-admin-key"
# Every suite run: the newest SDK and the most pinned family; 1.6.2 in the slow set.
FAST_VERSIONS = ("1.12.0", "1.7.13")
SLOW_VERSION = "1.6.2"
VERSIONS = (*FAST_VERSIONS, pytest.param(SLOW_VERSION, marks=pytest.mark.slow))


def sdk_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def runpod_python(version: str) -> Path:
    """The interpreter of a venv holding exactly `runpod==version` (built on first use)."""
    venv = VENVS / version
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if stamp.exists():
        return python
    VENVS.mkdir(exist_ok=True)
    with open(VENVS / f".{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # make runpod-venvs may be building it in parallel
        if not stamp.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", f"runpod=={version}"],
                           check=True)
            stamp.touch()
    return python


@pytest.fixture
def rp_settings(redis_url: str) -> Settings:
    return Settings(
        redis_url=redis_url, lease_ms=2_000, heartbeat_ms=300, rate_limits=False,
        runpod_ping_ms=1_000, runpod_hold_ms=3_000, runpod_stop_grace_ms=3_000,
    )


@pytest.fixture
async def rp_gateway(rp_settings: Settings) -> AsyncIterator[RunningGateway]:
    gw = await start_gateway(rp_settings, "127.0.0.1", 0,
                             GatewayOptions(admin_key=KEY, reap_interval_s=0.2))
    await gw.store.redis.flushdb()  # the suite's own redis-server
    yield gw
    await gw.close()


@pytest.fixture
async def client(rp_gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=rp_gateway.url, timeout=60,
                                 headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


class RunpodWorker:
    """One `runpod` SDK worker process (and its process group)."""

    def __init__(self, proc: subprocess.Popen[bytes], worker_id: str, log: Path) -> None:
        self.proc, self.worker_id, self.log_path = proc, worker_id, log

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        send(self.proc.pid, sig)

    def kill_group(self) -> None:
        kill_group(self.proc.pid)

    async def exited(self, timeout_s: float) -> int | None:
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.proc.poll()


WorkerFactory = Callable[..., RunpodWorker]


@pytest.fixture
def start_worker(rp_gateway: RunningGateway, tmp_path: Path) -> Iterator[WorkerFactory]:
    """`start_worker(version, endpoint, kind="sync", key=KEY, **MOCK_env)`; all killed at the end."""
    started: list[RunpodWorker] = []

    def start(version: str, endpoint: str, kind: str = "sync", key: str = KEY,
              worker_id: str | None = None, **mock: str) -> RunpodWorker:
        worker_id = worker_id or f"rp-{uuid.uuid4().hex[:8]}"
        home, cwd = Path(tempfile.mkdtemp(dir=tmp_path)), Path(tempfile.mkdtemp(dir=tmp_path))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            **worker_env(rp_gateway.url, endpoint, worker_id, key, ping_ms=1_000, gpu_label="TEST GPU"),
            "RUNPOD_SKIP_GPU_CHECK": "true", "MOCK_KIND": kind,
            **{f"MOCK_{k.upper()}": v for k, v in mock.items()},
        }
        log = tmp_path / f"{worker_id}.log"
        proc = subprocess.Popen(
            [str(runpod_python(version)), "-u", str(HANDLER)], env=env, cwd=cwd,
            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        worker = RunpodWorker(proc, worker_id, log)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill_group()
        worker.proc.wait(5)


async def until(predicate: Callable[[], Any], timeout_s: float = 15.0, what: str = "condition",
                logs: Callable[[], str] | None = None) -> Any:
    """Await an (async or sync) predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            tail = f"\nworker log:\n{logs()[-3000:]}" if logs else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{tail}")
        await asyncio.sleep(0.05)


async def ready(store: JobStore, endpoint: str, worker: RunpodWorker, timeout_s: float = 30) -> None:
    """Wait for the worker's first ping (the SDK pings before its first take)."""
    await until(lambda: store.worker(endpoint, worker.worker_id), timeout_s,
                f"worker {worker.worker_id}'s first ping", worker.log)


async def status(client: httpx.AsyncClient, endpoint: str, job_id: str) -> dict[str, Any]:
    answer = await client.get(f"/v2/{endpoint}/status/{job_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


async def finished(client: httpx.AsyncClient, endpoint: str, job_id: str, timeout_s: float = 20,
                   worker: RunpodWorker | None = None) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        body = await status(client, endpoint, job_id)
        return body if body["status"] not in ("IN_QUEUE", "IN_PROGRESS") else None

    return await until(done, timeout_s, f"job {job_id} to end", worker.log if worker else None)


async def submit(client: httpx.AsyncClient, endpoint: str, payload: Any, **extra: Any) -> str:
    answer = await client.post(f"/v2/{endpoint}/run", json={"input": payload, **extra})
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def decode(raw: bytes) -> Any:
    return msgspec.json.decode(raw)


async def register(store: JobStore, endpoint: str, **fields: Any) -> Registry:
    """Put `endpoint` in the registry, so /v2 calls reach it before any worker pings."""
    registry = Registry(store.redis)
    template = await registry.put_template(
        Template(id=f"t-{endpoint}", name="rp", docker_start_cmd="python -u handler.py",
                 protocol=WorkerProtocol.RUNPOD))
    await registry.put_endpoint(EndpointConfig(id=endpoint, name=endpoint, template_id=template.id, **fields))
    return registry
