"""Worker logs end to end on the process backend: a real worker process started by the real
ProcessBackend writes lines every way a handler does; they reach GET /logs and `podq logs`
tagged with their job (one job at a time, and two at once), `podq logs -f` follows them, the
backend's own file still has everything, and PODQ_LOG_SHIPPING=false ships nothing."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from scaler.backends.base import WorkerSpec
from scaler.backends.process import ProcessBackend
from scaler.logs_cli import main as logs_main
from serverless import keys
from serverless.model import RunRequest, Status
from serverless.settings import Settings
from serverless.store import JobStore
from tests.logs.conftest import ADMIN_KEY, logs_of, poll
from tests.worker.conftest import ROOT, wait_for_worker

CHATTY = str(Path(__file__).parent / "handlers" / "chatty.py")
ENV = {"PODQ_HEARTBEAT_MS": "300", "PODQ_LEASE_MS": "2000", "PODQ_LOG_LEVEL": "INFO"}

pytestmark = pytest.mark.slow


def job(tag: str, slow: bool = False) -> RunRequest:
    return RunRequest(input=msgspec.Raw(msgspec.json.encode({"tag": tag, "slow": slow})))


def handler_lines(tag: str) -> set[tuple[str, str, str]]:
    """(stream, level, line) of what chatty.py writes for one job."""
    return {("stdout", "", f"{tag} print"), ("stderr", "", f"{tag} stderr"),
            ("log", "warning", f"{tag} logging"), ("stdout", "", f"{tag} thread")}


@pytest.fixture
async def process_worker(settings: Settings, store: JobStore, endpoint: str,
                         tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    """Start chatty.py workers through the process backend (log files under tmp_path); each
    is registered before it is returned; all are stopped at the end."""
    backend = ProcessBackend(settings.redis_url, log_dir=str(tmp_path))
    handles = []

    async def start(**env: str) -> str:
        worker_id = f"{endpoint}-{uuid.uuid4().hex[:8]}"  # as the scaler names them
        spec = WorkerSpec(endpoint_id=endpoint, worker_id=worker_id, version=1,
                          redis_url=settings.redis_url, handler=CHATTY, env={**ENV, **env})
        handles.append(await backend.start(spec))
        await wait_for_worker(store, endpoint, worker_id)
        return worker_id

    yield start
    for handle in handles:
        await backend.stop(handle, grace_s=5)
    await backend.close()


async def job_lines(gateway, endpoint: str, job_id: str, count: int) -> list[dict]:
    async def enough() -> list[dict]:
        lines = (await logs_of(gateway, endpoint, f"job={job_id}"))["lines"]
        return lines if len(lines) >= count else []

    return await poll(enough)  # type: ignore[return-value]


async def test_a_handlers_lines_reach_logs_and_podq_logs_tagged_with_their_job(
        gateway, store: JobStore, endpoint: str, process_worker, tmp_path: Path, capsys) -> None:
    worker_id = await process_worker()
    submitted = await store.submit(endpoint, job("A"))
    assert (await store.wait(submitted.id, 20)).status is Status.COMPLETED

    # 4 lines of the handler + the runtime's "job ... COMPLETED" line, written in the job's task
    lines = await job_lines(gateway, endpoint, submitted.id, 5)
    assert {(x["worker"], x["job"]) for x in lines} == {(worker_id, submitted.id)}
    assert handler_lines("A") <= {(x["stream"], x["level"], x["line"]) for x in lines}
    booted = (await logs_of(gateway, endpoint, f"worker={worker_id}&tail=5000"))["lines"]
    assert ("", "chatty: loading the model") in {(x["job"], x["line"]) for x in booted}

    capsys.readouterr()
    await asyncio.to_thread(logs_main, [endpoint, "--job", submitted.id, "--url", gateway.url,
                                        "--api-key", ADMIN_KEY])
    printed = capsys.readouterr().out
    for text in (f"{worker_id} {submitted.id} | A print", f"{worker_id} {submitted.id} | [stderr] A stderr",
                 f"{worker_id} {submitted.id} | [warning] A logging", f"{worker_id} {submitted.id} | A thread"):
        assert text in printed, printed
    assert "loading the model" not in printed  # --job: that job's lines only

    # the backend's own file still has everything, boot output included
    await asyncio.to_thread(logs_main, [endpoint, "--backend", "process", "--log-dir", str(tmp_path)])
    from_file = capsys.readouterr().out.splitlines()
    for text in ("chatty: loading the model", "A print", "A stderr", "A logging", "A thread"):
        assert f"{worker_id} | {text}" in from_file, from_file


async def test_two_jobs_at_once_each_get_their_own_lines(gateway, store: JobStore, endpoint: str,
                                                         process_worker) -> None:
    worker_id = await process_worker()
    first, second = [await store.submit(endpoint, job(tag, slow=True)) for tag in ("B", "C")]
    done = [await store.wait(j.id, 20) for j in (first, second)]
    assert [d.status for d in done] == [Status.COMPLETED] * 2
    spans = sorted((d.started_at, d.finished_at) for d in done)
    assert spans[1][0] < spans[0][1]  # they ran at the same time, in one worker
    for submitted, tag in ((first, "B"), (second, "C")):
        lines = await job_lines(gateway, endpoint, submitted.id, 4)
        written = {(x["stream"], x["level"], x["line"]) for x in lines}
        assert handler_lines(tag) - {("stdout", "", f"{tag} thread")} <= written  # (slow: no thread)
        others = [x["line"] for x in lines if (x["stream"], x["level"], x["line"]) not in handler_lines(tag)]
        assert len(others) == 1 and f"job {submitted.id} attempt 1 -> COMPLETED" in others[0]
        assert {x["worker"] for x in lines} == {worker_id}


async def test_podq_logs_follow_prints_lines_as_they_come(gateway, store: JobStore, endpoint: str,
                                                          process_worker) -> None:
    await process_worker()
    follower = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scaler.logs_cli", endpoint, "-f", "--url", gateway.url,
        "--api-key", ADMIN_KEY, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    try:
        await asyncio.sleep(0.5)  # it has the tail; the next lines come live
        submitted = await store.submit(endpoint, job("D"))
        seen: list[str] = []
        async with asyncio.timeout(20):
            while not any("D thread" in line for line in seen):
                seen.append((await follower.stdout.readline()).decode())
        assert any(f"{submitted.id} | D print" in line for line in seen), seen
    finally:
        follower.terminate()
        await follower.wait()


async def test_log_shipping_off_ships_nothing_and_the_file_keeps_everything(
        gateway, store: JobStore, endpoint: str, process_worker, tmp_path: Path) -> None:
    worker_id = await process_worker(PODQ_LOG_SHIPPING="false")
    submitted = await store.submit(endpoint, job("E"))
    assert (await store.wait(submitted.id, 20)).status is Status.COMPLETED
    await asyncio.sleep(0.5)  # more than a flush interval: nothing comes
    assert await store.redis.xlen(keys.logs(endpoint)) == 0
    written = (tmp_path / f"{worker_id}.log").read_text()
    for text in ("chatty: loading the model", "E print", "E stderr", "E logging", "E thread"):
        assert text in written
    answer = await gateway.call("GET", f"/v1/endpoints/{endpoint}/logs")
    assert answer.status == 200 and json.loads(msgspec.json.encode(answer.body))["lines"] == []


async def test_a_handler_file_run_as_a_script_ships_from_serverless_start(
        gateway, store: JobStore, settings: Settings, endpoint: str, tmp_path: Path) -> None:
    """`python handler.py` with PODQ_ENDPOINT_ID (how RunPod-style images start): capture
    begins in serverless.start, after podq's logging is set up on the real stderr; its records
    are pointed at the tee and shipped with their level."""
    out = tmp_path / "script.log"
    env = {**os.environ, **ENV, "PODQ_ENDPOINT_ID": endpoint, "PODQ_REDIS_URL": settings.redis_url,
           "PODQ_WORKER_ID": "as-script"}
    with out.open("wb") as stdout:
        proc = await asyncio.create_subprocess_exec(sys.executable, CHATTY, cwd=ROOT, env=env,
                                                    stdout=stdout, stderr=asyncio.subprocess.STDOUT)
    try:
        await wait_for_worker(store, endpoint, "as-script")
        submitted = await store.submit(endpoint, job("S"))
        assert (await store.wait(submitted.id, 20)).status is Status.COMPLETED
        lines = await job_lines(gateway, endpoint, submitted.id, 5)
        assert handler_lines("S") <= {(x["stream"], x["level"], x["line"]) for x in lines}
        runtime = [x for x in lines if x["level"] == "info"]  # podq's own record, via the tee
        assert len(runtime) == 1 and f"job {submitted.id} attempt 1 -> COMPLETED" in runtime[0]["line"]
        everything = (await logs_of(gateway, endpoint, "tail=5000"))["lines"]
        assert "chatty: loading the model" not in {x["line"] for x in everything}  # before start
    finally:
        proc.terminate()
        await proc.wait()
    assert "chatty: loading the model" in out.read_text()  # the real stdout has it
