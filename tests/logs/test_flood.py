"""A handler printing 100,000 lines as fast as it can, in a real worker process: every line is
either shipped (tagged with its job) or counted as dropped, none is lost without a count, and
the real stdout gets all of them. How long shipping makes it take is measured by
bench/scenarios/log_shipping.py, not asserted here (docs/observability.md has the figure)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from serverless import keys
from serverless.model import RunRequest, Status
from serverless.settings import Settings
from serverless.store import JobStore
from tests.logs.conftest import poll
from tests.worker.conftest import ROOT, wait_for_worker

FLOOD = str(Path(__file__).parent / "handlers" / "flood.py")
LINES = 100_000

pytestmark = pytest.mark.slow


def start_worker(settings: Settings, endpoint: str, worker_id: str, out: Path, **env: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "worker", FLOOD, "--endpoint", endpoint,
               "--redis", settings.redis_url, "--worker-id", worker_id]
    with out.open("wb") as stdout:
        return subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=subprocess.STDOUT,
                                env={**os.environ, "PODQ_HEARTBEAT_MS": "300", **env})


async def shipped_lines(store: JobStore, endpoint: str, job_id: str) -> int:
    """The job's lines in the endpoint's stream."""
    count, cursor = 0, "-"
    while page := await store.redis.xrange(keys.logs(endpoint), min=cursor, max="+", count=10_000):
        count += sum(1 for _, fields in page if fields[b"job"] == job_id.encode())
        cursor = "(" + page[-1][0].decode()
    return count


async def dropped(store: JobStore, endpoint: str) -> int:
    return int(await store.redis.hget(keys.stats(endpoint), keys.LOG_LINES_DROPPED) or 0)


def flood(lines: int) -> RunRequest:
    return RunRequest(input=msgspec.Raw(msgspec.json.encode({"lines": lines})))


async def test_every_line_of_a_flood_is_shipped_or_counted_as_dropped(
        settings: Settings, store: JobStore, endpoint: str, tmp_path: Path) -> None:
    out = tmp_path / "worker.log"
    worker = start_worker(settings, endpoint, "flooder", out, PODQ_LOG_STREAM_MAXLEN="200000")
    try:
        await wait_for_worker(store, endpoint, "flooder")
        submitted = await store.submit(endpoint, flood(LINES))
        done = await store.wait(submitted.id, 60)
        assert done.status is Status.COMPLETED, done.error

        async def accounted() -> tuple[int, int] | None:
            counts = (await shipped_lines(store, endpoint, submitted.id), await dropped(store, endpoint))
            return counts if sum(counts) >= LINES else None

        counts = await poll(accounted, timeout=30, every=0.5)
        assert counts is not None, "the worker never shipped or counted every line"
        shipped, lost = counts
        assert shipped + lost == LINES
        assert shipped >= 10_000  # at least a full buffer made it
    finally:
        worker.terminate()
        await asyncio.to_thread(worker.wait, 20)
    printed = out.read_text().count("flood line ")
    assert printed == LINES  # the real stdout saw every line, dropped or not


async def test_the_stream_keeps_only_the_newest_lines_it_is_capped_to(
        settings: Settings, store: JobStore, endpoint: str, tmp_path: Path) -> None:
    worker = start_worker(settings, endpoint, "capped", tmp_path / "worker.log",
                          PODQ_LOG_STREAM_MAXLEN="1000")
    try:
        await wait_for_worker(store, endpoint, "capped")
        for _ in range(3):
            assert (await store.wait((await store.submit(endpoint, flood(3_000))).id, 30)).status is Status.COMPLETED
        await asyncio.sleep(0.5)
        length = await store.redis.xlen(keys.logs(endpoint))
        assert 1_000 <= length <= 1_100  # MAXLEN ~ 1000: whole nodes of 100 entries are trimmed
        newest = await store.redis.xrevrange(keys.logs(endpoint), count=1)
        assert newest[0][1][b"line"].startswith(b"flood line 2999 of 3000")
    finally:
        worker.terminate()
        await asyncio.to_thread(worker.wait, 20)
