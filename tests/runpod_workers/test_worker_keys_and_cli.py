"""Worker keys (RunPod's RUNPOD_AI_API_KEY), `podq worker-env` and `podq worker --runpod`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.runpod_workers.conftest import HANDLER, KEY, finished, register, runpod_python, submit, until

pytestmark = pytest.mark.timeout(120)
PODQ = [sys.executable, "-m", "serverless.cli"]


async def _key(client, endpoint: str, worker: bool) -> str:
    answer = await client.post("/v1/keys", json={"label": "t", "endpoints": [endpoint], "worker": worker})
    assert answer.status_code == 200, answer.text
    assert answer.json()["worker"] is worker
    return answer.json()["key"]


async def test_worker_keys_reach_only_worker_routes_and_client_keys_never_take(
    rp_gateway, client, endpoint
) -> None:
    await register(rp_gateway.store, endpoint)
    worker_key, client_key = await _key(client, endpoint, True), await _key(client, endpoint, False)
    ping = f"/v2/{endpoint}/ping/w1?gpu=x&runpod_version=1.12.0"
    raw = {"Authorization": worker_key}  # the SDK sends the key bare
    assert (await client.get(ping, headers=raw)).status_code == 200
    run = await client.post(f"/v2/{endpoint}/run", json={"input": 1}, headers=raw)
    assert run.status_code == 403 and "worker key" in run.json()["error"]
    other = await client.get(f"/v2/other-ep/ping/w1", headers=raw)
    assert other.status_code == 403 and endpoint in other.json()["error"]
    started = time.monotonic()
    refused = await client.get(f"/v2/{endpoint}/job-take/w1?gpu=x", headers={"Authorization": client_key})
    assert refused.status_code == 403 and "worker route" in refused.json()["error"]
    assert time.monotonic() - started >= 0.9  # refusals on worker routes are paced
    missing = await client.get(ping, headers={"Authorization": ""})
    assert missing.status_code == 401
    # the admin key works on both sides
    assert (await client.get(ping, headers={"Authorization": KEY})).status_code == 200
    listed = (await client.get("/v1/keys")).json()
    assert sorted(k.get("worker", False) for k in listed) == [False, True]


async def test_worker_env_mints_a_key_and_its_lines_run_an_unmodified_worker(
    rp_gateway, client, endpoint, tmp_path: Path
) -> None:
    await register(rp_gateway.store, endpoint)
    env = {**os.environ, "PODQ_API_KEY": KEY, "PODQ_ENDPOINT_BASE_URL": rp_gateway.url,
           "PODQ_GATEWAY_URL": rp_gateway.url, "PODQ_RUNPOD_PING_MS": "1000"}
    out = await asyncio.to_thread(subprocess.run, [*PODQ, "worker-env", "--endpoint", endpoint,
                                                   "--gpu", "NVIDIA L4"],
                                  env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split("=", 1) for line in out.stdout.splitlines())
    assert lines["RUNPOD_WEBHOOK_GET_JOB"] == f"{rp_gateway.url}/v2/{endpoint}/job-take/$ID?gpu=NVIDIA+L4"
    assert lines["RUNPOD_AI_API_KEY"].startswith("podq_") and lines["RUNPOD_AI_API_KEY"] != KEY
    (tmp_path / "worker.env").write_text(out.stdout)
    # as `docker run --env-file` would: only those lines (and a PATH, HOME) in the environment
    proc_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "RUNPOD_SKIP_GPU_CHECK": "true", **lines}
    proc = subprocess.Popen([str(runpod_python("1.12.0")), "-u", str(HANDLER)], env=proc_env,
                            cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        job_id = await submit(client, endpoint, {"output": "via env file"})
        body = await finished(client, endpoint, job_id, timeout_s=30)
        assert body["output"] == "via env file" and body["workerId"] == lines["RUNPOD_POD_ID"]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


async def test_podq_worker_runpod_runs_the_command_forwards_sigterm_and_cleans_its_group(
    rp_gateway, client, endpoint, tmp_path: Path
) -> None:
    await register(rp_gateway.store, endpoint)
    env = {**os.environ, "PODQ_GATEWAY_URL": rp_gateway.url, "PODQ_RUNPOD_PING_MS": "1000",
           "RUNPOD_AI_API_KEY": KEY, "HOME": str(tmp_path), "RUNPOD_SKIP_GPU_CHECK": "true",
           "MOCK_KIND": "async"}
    proc = subprocess.Popen(
        [*PODQ, "worker", "--runpod", "--endpoint", endpoint, "--worker-id", "cli-w1", "--",
         str(runpod_python("1.12.0")), "-u", str(HANDLER)],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        job_id = await submit(client, endpoint, {"sleep": 2, "output": "drained"})

        async def running() -> bool:
            return (await client.get(f"/v2/{endpoint}/status/{job_id}")).json()["status"] == "IN_PROGRESS"

        await until(running, 30, "the job to start")
        proc.send_signal(signal.SIGTERM)  # forwarded to the worker: it drains
        body = await finished(client, endpoint, job_id, timeout_s=20)
        assert body["output"] == "drained" and body["workerId"] == "cli-w1"
        assert await asyncio.to_thread(proc.wait, 20) == 0
        leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit()
                     and _environ_has(p, "RUNPOD_POD_ID=cli-w1")]
        assert not leftovers, "the worker's ping child outlived it"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_podq_worker_runpod_without_a_command_says_how() -> None:
    out = subprocess.run([*PODQ, "worker", "--runpod", "--endpoint", "x"], capture_output=True, text=True)
    assert out.returncode != 0 and "after --" in out.stderr


def _environ_has(proc: Path, entry: str) -> bool:
    try:
        return entry.encode() in (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return False
