"""Worker processes: crash recovery, SIGTERM drain, refresh_worker, RunPod handler files."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from serverless.model import RunRequest, Status
from tests.worker.conftest import HANDLERS, ROOT, wait_for_worker


def req(payload: object) -> RunRequest:
    return RunRequest(input=msgspec.Raw(msgspec.json.encode(payload)))


async def wait_status(store, job_id: str, status: Status, timeout: float = 15):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        rec = await store.get(job_id)
        if rec.status is status:
            return rec
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} is {rec.status}, never {status}")


@pytest.mark.slow
async def test_sigkill_mid_job_is_recovered_by_another_worker(store, endpoint, spawn_worker) -> None:
    victim = spawn_worker("sleepy.py", "victim")
    await wait_for_worker(store, endpoint, "victim")
    rec = await store.submit(endpoint, req({"seconds": 3}))
    running = await wait_status(store, rec.id, Status.IN_PROGRESS)
    assert running.worker_id == "victim"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    spawn_worker("sleepy.py", "rescuer")
    done = await store.wait(rec.id, 30)
    recovered_in = loop.time() - killed_at
    assert done.status is Status.COMPLETED
    assert msgspec.json.decode(done.output)["worker"] == "rescuer"
    assert done.attempt == 2 and done.tries == 2
    assert (await store.health(endpoint)).jobs.retried == 1
    assert recovered_in < 30


@pytest.mark.slow
async def test_sigterm_drains_in_flight_then_exits(store, endpoint, spawn_worker) -> None:
    proc = spawn_worker("sleepy.py", "drainer")
    await wait_for_worker(store, endpoint, "drainer")
    rec = await store.submit(endpoint, req({"seconds": 1}))
    await wait_status(store, rec.id, Status.IN_PROGRESS)
    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)  # let the signal land before the next submit rings the doorbell
    queued_after = await store.submit(endpoint, req({"seconds": 0}))
    done = await store.wait(rec.id, 10)
    assert done.status is Status.COMPLETED
    assert await asyncio.to_thread(proc.wait, 10) == 0
    # it stopped taking jobs: the one submitted after SIGTERM is still queued for others
    assert (await store.get(queued_after.id)).status is Status.IN_QUEUE
    assert await store.workers(endpoint) == []


@pytest.mark.slow
async def test_sigterm_past_grace_requeues_unfinished_job(store, endpoint, spawn_worker) -> None:
    proc = spawn_worker("sleepy.py", "impatient", PODQ_GRACE_PERIOD_S="0.3")
    await wait_for_worker(store, endpoint, "impatient")
    rec = await store.submit(endpoint, req({"seconds": 30}))
    await wait_status(store, rec.id, Status.IN_PROGRESS)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 10) == 0
    back = await store.get(rec.id)
    assert back.status is Status.IN_QUEUE and back.tries == 0  # handed back, not counted as a try
    spawn_worker("sleepy.py", "next")
    await store.cancel(rec.id)


@pytest.mark.slow
async def test_refresh_worker_gives_each_job_a_fresh_process(store, endpoint, spawn_worker) -> None:
    spawn_worker("refresh.py", "fresh")
    await wait_for_worker(store, endpoint, "fresh")
    outputs = []
    for _ in range(3):
        rec = await store.submit(endpoint, req({}))
        done = await store.wait(rec.id, 20)
        assert done.status is Status.COMPLETED
        outputs.append(msgspec.json.decode(done.output))
    assert outputs == [{"runs_in_this_process": 1}] * 3


@pytest.mark.slow
async def test_runpod_handler_file_runs_unchanged(store, endpoint, spawn_worker) -> None:
    spawn_worker("runpod_style.py", "compat")
    rec = await store.submit(endpoint, req({"name": "podq"}))
    done = await store.wait(rec.id, 20)
    assert done.status is Status.COMPLETED and msgspec.json.decode(done.output) == "hello podq"


def _local(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODQ_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def test_local_test_input_flag(tmp_path: Path) -> None:
    handler = ROOT / "examples" / "echo" / "handler.py"
    result = _local([str(handler), "--test_input", '{"input": {"a": 1}}'], tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"id": "local_test", "status": "COMPLETED",
                                         "output": {"echo": {"a": 1}}}


def test_local_test_input_json_file_and_generator(tmp_path: Path) -> None:
    (tmp_path / "test_input.json").write_text('{"input": {"prompt": "a b", "delay": 0}}')
    result = _local([str(ROOT / "examples" / "stream" / "handler.py")], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ['{"stream": {"token": "a"}}', '{"stream": {"token": "b"}}']
    assert json.loads("\n".join(lines[2:]))["output"] == [{"token": "a"}, {"token": "b"}]


def test_local_mode_without_input_explains_and_exits_1(tmp_path: Path) -> None:
    result = _local([str(ROOT / "examples" / "echo" / "handler.py")], tmp_path)
    assert result.returncode == 1
    assert "pass --test_input" in result.stderr


def test_local_failed_job_exits_1(tmp_path: Path) -> None:
    handler = tmp_path / "bad.py"
    handler.write_text("import serverless\n"
                       "serverless.start({'handler': lambda job: {'error': 'nope'}})\n")
    result = _local([str(handler), "--test_input", '{"input": 1}'], tmp_path)
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"] == "nope"


@pytest.mark.slow
async def test_paused_worker_loses_lease_and_its_late_result_is_rejected(store, endpoint, spawn_worker) -> None:
    stale = spawn_worker("sleepy.py", "paused")
    await wait_for_worker(store, endpoint, "paused")
    rec = await store.submit(endpoint, req({"seconds": 1}))
    await wait_status(store, rec.id, Status.IN_PROGRESS)
    stale.send_signal(signal.SIGSTOP)  # no heartbeats: the lease runs out
    spawn_worker("sleepy.py", "fresh")
    try:
        done = await store.wait(rec.id, 30)
        assert done.status is Status.COMPLETED
        assert msgspec.json.decode(done.output)["worker"] == "fresh"
    finally:
        stale.send_signal(signal.SIGCONT)
    await asyncio.sleep(1.5)  # the paused worker wakes up, finishes its sleep, tries to write
    final = await store.get(rec.id)
    assert msgspec.json.decode(final.output)["worker"] == "fresh" and final.attempt == 2


@pytest.mark.slow
async def test_worker_registers_initializing_while_its_handler_file_loads(store, endpoint, spawn_worker, tmp_path) -> None:
    slow_load = tmp_path / "slow_load.py"
    slow_load.write_text("import time\ntime.sleep(1.5)  # loading a model\nimport serverless\n"
                         "serverless.start({'handler': lambda job: 1})\n")
    spawn_worker(str(slow_load), "loader")

    async def state():
        beats = {b.id: b for b in await store.workers(endpoint)}
        return beats["loader"].state.value if "loader" in beats else None

    for _ in range(100):
        if await state():
            break
        await asyncio.sleep(0.02)
    assert await state() == "initializing"
    assert (await store.health(endpoint)).workers.initializing == 1
    for _ in range(150):
        if await state() == "idle":
            break
        await asyncio.sleep(0.05)
    assert await state() == "idle"
