"""Real `podq worker` processes on an example handler (examples/<name>/handler.py) behind a real
gateway that holds one client key: the setup of the tests that drive a gateway route with a real
client library (tests/gateway/test_openai.py, tests/hf/test_inference_client.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from serverless.gateway import GatewayOptions
from serverless.model import Status
from serverless.settings import Settings
from tests.gateway.conftest import ADMIN_KEY, ThreadedGateway

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
LEASE_MS, HEARTBEAT_MS = 2_000, 300  # the gateway's and its workers'
REGISTER_TIMEOUT_S = 20.0  # a worker process imports podq and the handler before its first beat


@dataclass(frozen=True)
class ExampleWorker:
    """One `podq worker` process: the endpoint it serves, its id and what it adds to the env."""

    endpoint: str
    worker_id: str
    env: Mapping[str, str] = field(default_factory=dict)


def client_gateway(redis_url: str, client_key: str) -> ThreadedGateway:
    """A ThreadedGateway (not started; use `with`) over `redis_url`, with ADMIN_KEY and `client_key`.

    Args:
        redis_url: the test's redis-server.
        client_key: an ordinary (non-admin) key, as a RunPod user holds.

    Returns:
        The gateway; its lease and heartbeat are LEASE_MS and HEARTBEAT_MS, as its workers'.
    """
    settings = Settings(redis_url=redis_url, lease_ms=LEASE_MS, heartbeat_ms=HEARTBEAT_MS)
    return ThreadedGateway(settings, GatewayOptions(admin_key=ADMIN_KEY, api_keys=(client_key,)))


def start_worker(handler: Path, redis_url: str, worker: ExampleWorker) -> subprocess.Popen[bytes]:
    """`python -m worker <handler>` for `worker.endpoint` against `redis_url`; output discarded."""
    env = {**os.environ, "PODQ_LEASE_MS": str(LEASE_MS), "PODQ_HEARTBEAT_MS": str(HEARTBEAT_MS),
           **worker.env, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "worker", str(handler), "--endpoint", worker.endpoint,
           "--redis", redis_url, "--worker-id", worker.worker_id]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextmanager
def serving(gateway: ThreadedGateway, handler: Path,
            *workers: ExampleWorker) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start `workers` on `handler` against the gateway's Redis, all at once.

    Args:
        gateway: a started gateway; its store sees the workers' beats.
        handler: the example handler file.
        workers: one process each.

    Returns:
        A context whose value is the processes, once each endpoint has a registered worker
        (the gateway knows it); on exit they are killed.
    """
    procs = [start_worker(handler, gateway.settings.redis_url, worker) for worker in workers]
    try:
        deadline = time.monotonic() + REGISTER_TIMEOUT_S
        for worker, proc in zip(workers, procs):
            while not gateway.run(gateway.store.workers(worker.endpoint)):
                assert proc.poll() is None and time.monotonic() < deadline, \
                    f"worker {worker.worker_id} of {worker.endpoint} never registered"
                time.sleep(0.05)
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


def wait_cancelled(gateway: ThreadedGateway, job_id: str, timeout_s: float = 10) -> None:
    """Wait until the job is CANCELLED, as a job is once the client of its stream has left."""
    deadline = time.monotonic() + timeout_s
    while (record := gateway.run(gateway.store.get(job_id))).status is not Status.CANCELLED:
        assert time.monotonic() < deadline, f"job still {record.status} after the client left"
        time.sleep(0.05)
