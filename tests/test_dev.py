"""`podq dev`: one command brings up Redis, the gateway and workers; Ctrl-C stops them all."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from serverless.dev import wait_for_workers
from serverless.model import WorkerBeat, WorkerState
from serverless.redis_server import free_port
from serverless.store import JobStore, now_ms

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_podq_dev_serves_example_and_stops_cleanly() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODQ_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "serverless.cli", "dev", "examples/stream/handler.py",
         "--port", str(port), "--workers", "2"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    try:
        banner = ""
        deadline = time.monotonic() + 30
        while "Ctrl-C" not in banner and time.monotonic() < deadline:
            banner += proc.stdout.readline()
        key = re.search(r"API key: (\S+)", banner).group(1)
        assert f"http://127.0.0.1:{port}/v2/stream/runsync" in banner
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/v2/stream", headers=headers, timeout=30) as c:
            body = c.post("/runsync", json={"input": {"prompt": "one two", "delay": 0}}).json()
            assert body["status"] == "COMPLETED"
            assert body["output"] == [{"token": "one"}, {"token": "two"}]
            for _ in range(50):  # both workers have registered
                if c.get("/health").json()["workers"]["idle"] == 2:
                    break
                time.sleep(0.1)
            assert c.get("/health").json()["workers"]["idle"] == 2
            assert c.get("/health", headers={"Authorization": "wrong"}).status_code == 401
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) >= 3  # redis-server and two workers
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        assert proc.wait(timeout=40) == 0
        after = proc.stdout.read()
        # Redis outlives the drain (its own session), so nothing warns about reconnecting
        assert "stopping workers, gateway and Redis" in after
        assert "warning" not in after.lower() and "reconnect" not in after.lower(), after
        for pid in children:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_the_banner_waits_until_a_worker_of_the_dev_endpoint_registered(
    store: JobStore, endpoint: str
) -> None:
    # the dev endpoint is in no registry: until a worker beats, calls to it would be a 404
    assert await wait_for_workers(store, endpoint, asyncio.Event(), timeout_s=0.2) is False
    waiting = asyncio.create_task(wait_for_workers(store, endpoint, asyncio.Event(), timeout_s=10))
    await asyncio.sleep(0.15)
    assert not waiting.done()
    await store.beat(WorkerBeat(id="dev-0", endpoint=endpoint, state=WorkerState.INITIALIZING,
                                seen_at=now_ms()))
    assert await asyncio.wait_for(waiting, 5) is True
    stopped = asyncio.Event()
    stopped.set()  # Ctrl-C while waiting: no wait at all
    assert await wait_for_workers(store, "ep-nobody", stopped, timeout_s=10) is False
