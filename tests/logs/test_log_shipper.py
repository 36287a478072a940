"""The worker's log shipper: its pure parts by tables, the buffer and the tee from many threads,
and flushes into a real redis-server (the stream stays capped; dropping never blocks a writer)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import threading

import pytest

from serverless import keys
from serverless.redis_server import RedisProcess
from serverless.queue import connect
from serverless.store import JobStore
from worker import log_shipper
from worker.handlers import current_job
from tests.logs.conftest import send_all
from worker.log_shipper import BATCH, LINE_MAX, LineBuffer, LogShipper, Target, Tee

# ---- pure ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("short", "short"),
    ("x" * LINE_MAX, "x" * LINE_MAX),  # exactly the cap: kept whole
    ("x" * (LINE_MAX + 5), "x" * LINE_MAX + " [... 5 more characters cut by podq]"),
    ("", ""),
])
def test_a_line_over_the_cap_is_cut_and_says_so(text: str, expected: str) -> None:
    assert log_shipper.cap(text) == expected


@pytest.mark.parametrize("dropped,lines,args", [
    (0, [], (10_000, "w-1", 0)),
    (3, [(1_700_000_000_123, "log", "job-1", "warning", "disk almost full"),
         (1_700_000_000_124, "stdout", "", "", "")],
     (10_000, "w-1", 3, 1_700_000_000_123, "job-1", "log", "warning", "disk almost full",
      1_700_000_000_124, "", "stdout", "", "")),
])
def test_a_flush_carries_the_cap_the_worker_the_drops_and_each_lines_fields(dropped, lines, args) -> None:
    assert log_shipper.ship_args("w-1", 10_000, dropped, lines) == args


@pytest.mark.parametrize("running,expected", [
    ((), ""),                      # no job runs: a thread's line belongs to none
    (("job-1",), "job-1"),         # one job runs: the line is that job's
    (("job-1", "job-2"), ""),      # two run: no guessing
    ({"job-9": object()}, "job-9"),  # the worker's `active` dict, as process.py passes it
])
def test_an_untagged_thread_gets_the_one_running_job(running, expected: str) -> None:
    assert log_shipper.only_job(running) == expected


# ---- the buffer and the tee ---------------------------------------------------------------


def test_a_full_buffer_drops_and_counts_every_line_it_cannot_keep() -> None:
    buffer = LineBuffer(capacity=1_000)
    threads = [threading.Thread(target=lambda: [buffer.add((0, "stdout", "", "", "x"))
                                                for _ in range(10_000)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kept = len(buffer.take(100_000))
    assert 1_000 <= kept <= 1_000 + len(threads)  # a race at the brim may add one per thread
    assert kept + buffer.dropped() == 80_000
    assert buffer.dropped() == 80_000 - kept  # reading the count does not change it


def test_the_buffer_wakes_the_flusher_once_a_batch_waits() -> None:
    wakes: list[int] = []
    buffer = LineBuffer(capacity=10 * BATCH, on_batch=lambda: wakes.append(len(buffer)))
    for _ in range(BATCH + 10):
        buffer.add((0, "stdout", "", "", "x"))
    assert wakes == [BATCH]
    assert [line[4] for line in buffer.take(3)] == ["x", "x", "x"] and len(buffer) == BATCH + 7


def _tee() -> tuple[Tee, io.StringIO, list[tuple[str, str, str]]]:
    real, lines = io.StringIO(), []
    return Tee(real, "stdout", lambda *line: lines.append(line)), real, lines


def test_the_tee_writes_everything_through_and_hands_over_whole_lines() -> None:
    tee, real, lines = _tee()
    print("one", 2, "three", file=tee)
    tee.write("partial ")
    tee.write("then done\nand a second\nand an unfinished one")
    tee.writelines(["\n", "last\n"])
    assert real.getvalue() == "one 2 three\npartial then done\nand a second\nand an unfinished one\nlast\n"
    assert lines == [("stdout", "", "one 2 three"), ("stdout", "", "partial then done"),
                     ("stdout", "", "and a second"), ("stdout", "", "and an unfinished one"),
                     ("stdout", "", "last")]
    assert tee.getvalue() == real.getvalue()  # every other attribute is the real stream's


def test_the_tee_keeps_each_threads_unfinished_line_apart() -> None:
    tee, _, lines = _tee()
    start = threading.Barrier(4)

    def write(name: str) -> None:
        start.wait()
        for i in range(500):
            print(name, i, "end", file=tee)  # four writes per line, threads interleaving

    threads = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(text for _, _, text in lines) == sorted(
        f"t{n} {i} end" for n in range(4) for i in range(500))


def test_an_endless_partial_line_is_handed_over_at_the_cap() -> None:
    tee, _, lines = _tee()
    for _ in range(3):
        tee.write("y" * (LINE_MAX // 2 + 1))  # a progress bar that never ends its line
    assert [len(text) for _, _, text in lines] == [LINE_MAX + 2]


def test_a_logging_record_through_the_tee_is_a_log_line_with_its_level() -> None:
    tee, real, lines = _tee()
    logger = logging.getLogger("tests.logs.tee")
    handler = logging.StreamHandler(tee)  # type: ignore[arg-type]
    logger.addHandler(handler)
    try:
        logger.error("model %s failed\nsecond line", "m1")
    finally:
        logger.removeHandler(handler)
    print("plain", file=tee)
    assert lines == [("log", "error", "model m1 failed"), ("log", "error", "second line"),
                     ("stdout", "", "plain")]
    assert real.getvalue() == "model m1 failed\nsecond line\nplain\n"


async def test_a_line_is_tagged_with_the_job_whose_code_wrote_it() -> None:
    shipper = LogShipper(100)
    running: list[str] = []
    shipper.attach(lambda: running)
    shipper.add("stdout", "", "the runtime, outside any job")
    token = current_job.set("job-a")
    shipper.add("stdout", "", "job a's task")
    current_job.reset(token)

    def from_a_thread() -> None:  # a thread the handler started: no context of its own
        shipper.add("stderr", "", f"thread while {len(running)} run")

    for running[:] in (["job-a"], ["job-a", "job-b"]):
        thread = threading.Thread(target=from_a_thread)
        thread.start()
        thread.join()
    assert [(line[2], line[4]) for line in shipper.buffer.take(10)] == [
        ("", "the runtime, outside any job"), ("job-a", "job a's task"),
        ("job-a", "thread while 1 run"), ("", "thread while 2 run")]


# ---- flushing into Redis ------------------------------------------------------------------


def _fill(shipper: LogShipper, n: int, job: str = "job-1") -> None:
    token = current_job.set(job)
    try:
        for i in range(n):
            shipper.add("stdout", "", f"line {i}")
    finally:
        current_job.reset(token)


async def test_a_flush_ships_lines_and_counts_the_dropped_in_one_round_trip(store: JobStore, endpoint: str) -> None:
    shipper = LogShipper(capacity=300)
    _fill(shipper, 1_000)
    await send_all(shipper, store, endpoint, maxlen=10_000)
    entries = await store.redis.xrange(keys.logs(endpoint))
    assert [e[1][b"line"] for e in entries] == [f"line {i}".encode() for i in range(300)]
    assert {(e[1][b"worker"], e[1][b"job"], e[1][b"stream"]) for e in entries} == {(b"w-1", b"job-1", b"stdout")}
    assert int(await store.redis.hget(keys.stats(endpoint), keys.LOG_LINES_DROPPED)) == 700
    assert shipper.shipped == 300


async def test_a_redis_that_forgot_the_script_is_given_it_again(store: JobStore, endpoint: str) -> None:
    await store.redis.script_flush()  # a restarted Redis without persistence knows no script
    shipper = LogShipper(capacity=10)
    _fill(shipper, 3)
    target = Target(store.redis, endpoint, "w-1", maxlen=1_000)
    assert await shipper.flush(target) == 3
    await target.close()
    assert await store.redis.xlen(keys.logs(endpoint)) == 3


async def test_the_stream_stays_capped(store: JobStore, endpoint: str) -> None:
    shipper = LogShipper(capacity=100_000)
    _fill(shipper, 20_000)
    await send_all(shipper, store, endpoint, maxlen=1_000)
    length = await store.redis.xlen(keys.logs(endpoint))
    # MAXLEN ~ trims whole nodes (stream-node-max-entries, 100 by default): a node's worth over
    assert 1_000 <= length <= 1_100
    newest = await store.redis.xrevrange(keys.logs(endpoint), count=1)
    assert newest[0][1][b"line"] == b"line 19999"


async def test_a_lone_surrogate_is_shipped_replaced_not_fatal(store: JobStore, endpoint: str) -> None:
    shipper = LogShipper(capacity=10)
    shipper.add("stdout", "", "bytes \udcff decoded with surrogateescape")
    target = Target(store.redis, endpoint, "w-1", maxlen=1_000)
    assert await shipper.flush(target) == 1
    await target.close()
    [(_, fields)] = await store.redis.xrange(keys.logs(endpoint))
    assert fields[b"line"] == "bytes ? decoded with surrogateescape".encode()


async def test_writers_never_wait_for_a_frozen_redis_and_every_line_is_accounted_for() -> None:
    server = RedisProcess().start()
    try:
        redis = await connect(server.url)
        shipper = LogShipper(capacity=1_000)
        shipper.attach(tuple)
        target = Target(redis, "frozen", "w-1", maxlen=100_000)
        flusher = asyncio.create_task(shipper.run(target, 0.01))
        await asyncio.sleep(0.05)
        os.kill(server.proc.pid, signal.SIGSTOP)  # Redis stops answering mid-run
        with open(os.devnull, "w") as devnull:
            tee = Tee(devnull, "stdout", shipper.add)
            writer = threading.Thread(target=lambda: [print("line", i, file=tee) for i in range(50_000)])
            writer.start()
            await asyncio.to_thread(writer.join, 60)
        assert not writer.is_alive(), "a writer waited for Redis"
        assert not flusher.done()  # the flush is still waiting for the frozen server
        os.kill(server.proc.pid, signal.SIGCONT)
        for _ in range(200):
            await asyncio.sleep(0.05)
            if not len(shipper.buffer):
                break
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        await shipper.close(target)
        dropped = int(await redis.hget(keys.stats("frozen"), keys.LOG_LINES_DROPPED))
        shipped = await redis.xlen(keys.logs("frozen"))
        assert dropped >= 50_000 - 2_000  # the buffer, and one batch in flight, at most
        assert shipped + dropped == 50_000 == shipper.shipped + dropped
        await redis.aclose()
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


async def test_a_failed_flush_counts_its_lines_as_dropped(store: JobStore, endpoint: str) -> None:
    shipper = LogShipper(capacity=1_000)
    _fill(shipper, 10)
    dead = Target(store.redis, endpoint, "w-1", maxlen=1_000)
    dead.stream_key = keys.stats(endpoint)  # a hash: XADD answers WRONGTYPE
    await store.redis.hset(keys.stats(endpoint), "submitted", 0)
    assert await shipper.flush(dead) == 0
    _fill(shipper, 5)
    await send_all(shipper, store, endpoint)
    await dead.close()
    assert await store.redis.xlen(keys.logs(endpoint)) == 5
    assert int(await store.redis.hget(keys.stats(endpoint), keys.LOG_LINES_DROPPED)) == 10
