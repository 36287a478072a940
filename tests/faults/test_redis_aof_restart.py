"""Redis with AOF (appendonly yes, appendfsync always) is killed and restarted while jobs run:
every job the API acknowledged (HTTP 200 from /run) before the crash is still there after it
and completes; the gateway answers 503 with a clear JSON error meanwhile; gateway and worker
processes reconnect on their own. (tests/test_redis_restart.py covers Redis without AOF.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import msgspec
import pytest

from serverless.gateway import GatewayOptions, start_gateway
from serverless.redis_server import RedisProcess
from serverless.settings import Settings
from tests.worker.conftest import HANDLERS, ROOT

KEY = "aof-key"
EP = "ep-aof"
pytestmark = pytest.mark.slow


def durable_redis(folder: Path, port: int | None = None) -> RedisProcess:
    """redis-server persisting every write before it answers; the AOF lives in `folder`
    (RedisProcess removes only its own temporary directory, so the AOF survives a restart)."""
    return RedisProcess("--appendonly", "yes", "--appendfsync", "always", "--dir", str(folder),
                        port=port).start()


def spawn(redis_url: str, worker_id: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PODQ_HEARTBEAT_MS": "200", "PODQ_LEASE_MS": "2000", "PODQ_LOG_LEVEL": "INFO"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "worker", str(HANDLERS / "sleepy.py"), "--endpoint", EP,
             "--redis", redis_url, "--worker-id", worker_id],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


async def until_known(http: aiohttp.ClientSession, url: str) -> None:
    """Wait for a worker to register: until then the endpoint is unknown (404) to the gateway."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        async with http.get(f"{url}/health") as r:
            if r.status == 200:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no worker registered for {url} within 30 s")


async def test_acknowledged_jobs_survive_a_redis_crash_with_aof(tmp_path: Path) -> None:
    data = tmp_path / "aof"
    data.mkdir()
    redis = durable_redis(data)
    settings = Settings(redis_url=redis.url, heartbeat_ms=200, lease_ms=2_000)
    gw = await start_gateway(settings, "127.0.0.1", 0, GatewayOptions(admin_key=KEY))
    log = tmp_path / "workers.log"
    workers = [spawn(redis.url, f"w{i}", log) for i in range(2)]
    restarted: RedisProcess | None = None
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as http:
            url = f"{gw.url}/v2/{EP}"
            await until_known(http, url)
            acked = []
            for i in range(40):  # 8 running at a time (2 workers x 4), the rest queued
                async with http.post(f"{url}/run", json={"input": {"seconds": 0.4}}) as r:
                    assert r.status == 200, await r.text()
                    acked.append((await r.json())["id"])
            await asyncio.sleep(0.6)  # some done, some running, most queued
            redis.proc.kill()  # SIGKILL: no shutdown, only what appendfsync wrote survives
            redis.proc.wait()
            async with http.post(f"{url}/run", json={"input": {}}) as r:
                body = await r.json()
            assert r.status == 503 and "Redis" in body["error"], body
            async with http.get(f"{url}/status/{acked[0]}") as r:
                assert r.status == 503 and "Redis" in (await r.json())["error"]
            await asyncio.sleep(1.0)  # workers keep failing to reach it meanwhile
            restarted = durable_redis(data, port=redis.port)

            statuses: dict[str, str] = {}
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                for job_id in acked:
                    if statuses.get(job_id) != "COMPLETED":
                        async with http.get(f"{url}/status/{job_id}") as r:
                            statuses[job_id] = (await r.json()).get("status", str(r.status)) \
                                if r.status in (200, 404) else str(r.status)
                if all(s == "COMPLETED" for s in statuses.values()):
                    break
                await asyncio.sleep(0.2)
            assert all(s == "COMPLETED" for s in statuses.values()), (statuses, log.read_text()[-3000:])
            async with http.post(f"{url}/runsync", json={"input": {}}) as r:  # all reconnected
                assert r.status == 200 and (await r.json())["status"] == "COMPLETED"
            async with http.get(f"{url}/health") as r:
                health = await r.json()
            assert health["jobs"]["completed"] == len(acked) + 1 and health["jobs"]["failed"] == 0
            assert all(w.poll() is None for w in workers)  # nobody had to be restarted
    finally:
        for w in workers:
            w.kill()
            w.wait()
        await gw.close()
        for server in (redis, restarted):
            if server is not None:
                server.stop()


async def test_an_outage_longer_than_a_lease_does_not_requeue_running_jobs(tmp_path: Path) -> None:
    """Redis is away for longer than a lease while a job runs: every lease looks expired when it
    comes back. A reaper polling every 50 ms (the gateway's every second) reconnects long before
    the worker's next renew; it holds back until live workers have renewed, so the job is not
    run a second time (before: requeued, attempt 2, the first attempt's result refused)."""
    from serverless import periodic
    from serverless.model import RunRequest, Status
    from serverless.queue import connect
    from serverless.store import JobStore
    from tests.worker.conftest import running_worker

    data = tmp_path / "aof"
    data.mkdir()
    redis = durable_redis(data)
    settings = Settings(redis_url=redis.url, heartbeat_ms=200, lease_ms=1_000, runpod_ping_ms=1_000)
    runs: list[float] = []

    async def handler(job):
        runs.append(time.monotonic())
        await asyncio.sleep(3)
        return "done"

    restarted: RedisProcess | None = None
    reaper = JobStore(await connect(redis.url), settings)
    try:
        async with running_worker(settings, EP, {"handler": handler}):
            reaping = asyncio.create_task(periodic.every(0.05, lambda: reaper.reap(EP)))
            rec = await reaper.submit(EP, RunRequest(input=msgspec.Raw(b"{}")))
            while not runs:
                await asyncio.sleep(0.02)
            redis.proc.kill()
            redis.proc.wait()
            await asyncio.sleep(1.5)  # longer than the lease
            restarted = durable_redis(data, port=redis.port)
            done = await reaper.wait(rec.id, 20)
            reaping.cancel()
        assert (done.status, done.attempt, len(runs)) == (Status.COMPLETED, 1, 1)
        assert (await reaper.health(EP)).jobs.retried == 0
    finally:
        await reaper.close()
        for server in (redis, restarted):
            if server is not None:
                server.stop()
