"""ChunkFanout: one shared reader of many chunk streams (serverless/gateway/chunk_fanout.py).

The buffer rules are a table; the reader runs against the real redis-server: joins while its
XREAD is blocked, coalesced unblocks, leaves, shards, and its connection killed under it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import msgspec
import pytest

from serverless import keys
from serverless.gateway.chunk_fanout import ChunkFanout, Subscription, parse_cursor
from serverless.model import Chunk
from serverless.store import JobStore

LONG_BLOCK_MS = 60_000  # a join that waited for the blocked read to time out would fail the test


def chunk(cursor: str) -> Chunk:
    return Chunk(cursor=cursor, output=msgspec.Raw(b'"' + cursor.encode() + b'"'))


@pytest.mark.parametrize(
    "a,b",
    [("0-0", "0-1"), ("1-5", "2-0"), ("9-0", "10-0"), ("1700000000000-9", "1700000000000-10")],
)
def test_cursors_order_as_redis_orders_entry_ids(a: str, b: str) -> None:
    assert parse_cursor(a) < parse_cursor(b)


@pytest.mark.parametrize(
    "cursor,batches,expected",
    [
        # batches that continue from the stream's cursor are handed over in order
        ("0-0", [("0-0", ["1-0", "2-0"]), ("2-0", ["3-0"])], ["1-0", "2-0", "3-0"]),
        # a batch from a feed that was behind the stream: what it already has is skipped
        ("2-0", [("0-0", ["1-0", "2-0", "3-0"])], ["3-0"]),
        # a batch that starts past the stream's cursor leaves a gap: read it from Redis
        ("1-0", [("2-0", ["3-0"])], None),
        ("0-0", [("0-0", ["1-0"]), ("5-0", ["6-0"])], None),
        # nothing new
        ("3-0", [("0-0", ["1-0", "3-0"])], []),
    ],
)
def test_take_hands_over_what_follows_the_cursor_or_asks_for_a_read(
    cursor: str, batches: list[tuple[str, list[str]]], expected: list[str] | None
) -> None:
    sub = Subscription("job", cursor, limit=1 << 20)
    for after, cursors in batches:
        sub.offer(after, [chunk(c) for c in cursors], 10)
    taken = sub.take()
    assert (None if taken is None else [c.cursor for c in taken]) == expected


def test_a_full_buffer_is_dropped_and_the_stream_reads_from_its_cursor() -> None:
    sub = Subscription("job", "0-0", limit=25)
    sub.offer("0-0", [chunk("1-0")], 10)
    sub.offer("1-0", [chunk("2-0")], 10)
    sub.offer("2-0", [chunk("3-0")], 10)  # 30 bytes > 25: overflow
    sub.offer("3-0", [chunk("4-0")], 10)  # dropped too: the read by cursor will find it
    assert sub.ready.is_set() and sub.take() is None
    sub.cursor = "4-0"  # what the read from Redis sent
    sub.offer("4-0", [chunk("5-0")], 10)  # buffered again
    assert [c.cursor for c in sub.take() or []] == ["5-0"] and not sub.ready.is_set()


class Sink:
    """A stream's `sink` that accepts while `room` says so and records what it sent."""

    def __init__(self, room: bool = True) -> None:
        self.room, self.sent = room, []

    def __call__(self, chunks: list[Chunk]) -> bool:
        if self.room:
            self.sent += [c.cursor for c in chunks]
        return self.room


@pytest.mark.parametrize(
    "room,buffered,lagging,after,sent,taken,cursor",
    [
        # a waiting stream with nothing buffered: sent at once, the cursor moves, no wake-up
        (True, [], False, "1-0", ["2-0"], [], "2-0"),
        # its socket is backed up: buffered, and the stream is woken to send it itself
        (False, [], False, "1-0", [], ["2-0"], "1-0"),
        # a batch that does not continue the stream goes the long way: past a gap (read from
        # Redis), or from a feed that was behind (what the stream has is skipped)
        (True, [], False, "1-5", [], None, "1-0"),
        (True, [], False, "0-5", [], ["2-0"], "1-0"),
        # something is buffered already: the batch queues behind it, order kept
        (True, [("1-0", "1-5")], False, "1-5", [], ["1-5", "2-0"], "1-0"),
        # the stream must read from Redis first: nothing is sent past the gap
        (True, [], True, "1-0", [], None, "1-0"),
    ],
)
def test_a_waiting_stream_gets_chunks_through_its_sink_only_when_they_continue_it(
    room: bool, buffered: list[tuple[str, str]], lagging: bool, after: str, sent: list[str],
    taken: list[str] | None, cursor: str,
) -> None:
    sub = Subscription("job", "1-0", limit=1 << 20)
    for before, c in buffered:
        sub.offer(before, [chunk(c)], 10)
    if lagging:
        sub.lag()
    sub.sink = sink = Sink(room)
    sub.ready.clear()
    sub.offer(after, [chunk("2-0")], 10)
    assert sink.sent == sent
    assert sub.cursor == cursor
    assert sub.ready.is_set() == (not sent)
    got = sub.take()
    assert (None if got is None else [c.cursor for c in got]) == taken


# ---- the reader, against redis-server --------------------------------------------------------

Fanout = Callable[..., ChunkFanout]


@pytest.fixture
async def fanout(store: JobStore) -> AsyncIterator[Fanout]:
    made: list[ChunkFanout] = []

    def make(**kw: int) -> ChunkFanout:
        made.append(ChunkFanout(store.redis, **kw))
        return made[-1]

    yield make
    for f in made:
        await f.close()


async def append(store: JobStore, job_id: str, *outputs: bytes) -> list[str]:
    return [(await store.redis.xadd(keys.chunks(job_id), {"d": o})).decode() for o in outputs]


async def receive(sub: Subscription, store: JobStore, n: int, timeout: float = 3.0) -> list[bytes]:
    """Wait for `n` chunks as an SSE stream does: take from the buffer, read a gap by cursor."""
    got: list[bytes] = []

    async def run() -> None:
        while len(got) < n:
            await sub.ready.wait()
            chunks = sub.take()
            if chunks is None:
                chunks = await store.read_chunks(sub.job_id, sub.cursor)
            if chunks:
                got.extend(bytes(c.output) for c in chunks)
                sub.cursor = chunks[-1].cursor

    await asyncio.wait_for(run(), timeout)
    return got


async def blocked_readers(store: JobStore) -> int:
    clients = await store.redis.client_list()
    return sum(c["cmd"] == "xread" and "b" in c["flags"] for c in clients)


async def until(read: Callable[[], Awaitable[int]], want: int | None = None) -> None:
    """Poll `read()` until it returns `want` (any count but 0 when None), at most 3 s."""

    async def poll() -> None:
        while True:
            got = await read()
            if got == want if want is not None else got:
                return
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), 3.0)


async def test_streams_that_join_a_blocked_read_get_their_chunks_at_once(
    fanout: Fanout, store: JobStore
) -> None:
    fan = fanout(block_ms=LONG_BLOCK_MS)
    async with fan.subscribe("a", "0-0") as a:
        await until(lambda: blocked_readers(store))
        async with AsyncExitStack() as stack:
            joined = [await stack.enter_async_context(fan.subscribe(f"j{i}", "0-0")) for i in range(200)]
            for i in range(200):
                await append(store, f"j{i}", b"%d" % i)
            got = await asyncio.gather(*(receive(s, store, 1) for s in joined))
            assert got == [[b"%d" % i] for i in range(200)]
            assert fan.wakes == 1  # 200 joins in one go: one wake-up of the blocked read
        await append(store, "a", b'"still"')
        assert await receive(a, store, 1) == [b'"still"']


async def test_streams_leave_without_a_command_and_the_others_go_on(
    fanout: Fanout, store: JobStore
) -> None:
    fan = fanout(block_ms=LONG_BLOCK_MS)
    async with AsyncExitStack() as staying:
        stay = [await staying.enter_async_context(fan.subscribe(f"s{i}", "0-0")) for i in range(25)]
        async with AsyncExitStack() as leaving:
            for i in range(25):
                await leaving.enter_async_context(fan.subscribe(f"l{i}", "0-0"))
            assert fan.open == 50
            await until(lambda: blocked_readers(store))
        assert fan.open == 25
        for i in range(25):
            await append(store, f"l{i}", b"0")  # nobody reads these any more
            await append(store, f"s{i}", b"1", b"2")
        got = await asyncio.gather(*(receive(s, store, 2) for s in stay))
        assert got == [[b"1", b"2"]] * 25


async def test_streams_spread_over_readers_of_bounded_size(fanout: Fanout, store: JobStore) -> None:
    fan = fanout(keys_per_reader=10)
    async with AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(fan.subscribe(f"j{i}", "0-0")) for i in range(35)]
        await until(lambda: blocked_readers(store), want=4)
        for i in range(35):
            await append(store, f"j{i}", b"%d" % i, b"%d" % (i + 100))
        got = await asyncio.gather(*(receive(s, store, 2) for s in subs))
        assert got == [[b"%d" % i, b"%d" % (i + 100)] for i in range(35)]


async def test_two_streams_of_one_job_at_different_cursors_each_get_theirs(
    fanout: Fanout, store: JobStore
) -> None:
    fan = fanout()
    first, _ = await append(store, "j", b"1", b"2")
    async with fan.subscribe("j", "0-0") as a:
        assert await receive(a, store, 2) == [b"1", b"2"]
        async with fan.subscribe("j", first) as b:  # the shared feed is ahead of this one
            assert await receive(b, store, 1) == [b"2"]  # at once, with no new chunk
            await append(store, "j", b"3")
            assert await receive(a, store, 1) == [b"3"] and await receive(b, store, 1) == [b"3"]


async def test_a_join_that_lands_before_the_read_is_blocked_still_wakes_it(
    fanout: Fanout, store: JobStore
) -> None:
    fan = fanout(block_ms=LONG_BLOCK_MS)
    async with fan.subscribe("a", "0-0") as a:
        await until(lambda: blocked_readers(store))
        for n in range(20):  # joins at every moment of the reader's cycle
            async with fan.subscribe(f"j{n}", "0-0") as j:
                await append(store, "a", b"%d" % n)  # the read returns for `a` meanwhile
                await asyncio.sleep(0.0005 * (n % 5))
                async with fan.subscribe(f"k{n}", "0-0") as k:
                    await append(store, f"j{n}", b"j")
                    await append(store, f"k{n}", b"k")
                    assert await receive(j, store, 1) == [b"j"]
                    assert await receive(k, store, 1) == [b"k"]
                    assert await receive(a, store, 1) == [b"%d" % n]


async def test_wake_streams_are_gone_after_close(fanout: Fanout, store: JobStore) -> None:
    fan = fanout(block_ms=LONG_BLOCK_MS)
    async with fan.subscribe("a", "0-0"):
        await until(lambda: blocked_readers(store))
        async with fan.subscribe("b", "0-0") as b:
            await append(store, "b", b"1")
            assert await receive(b, store, 1) == [b"1"] and fan.wakes == 1
            [wake] = await store.redis.keys("podq:chunks:_wake-*")
            assert 0 < await store.redis.pttl(wake) <= 60_000
    await fan.close()
    assert await store.redis.keys("podq:chunks:_wake-*") == []


async def test_a_killed_reader_connection_loses_no_chunk(fanout: Fanout, store: JobStore) -> None:
    fan = fanout(block_ms=LONG_BLOCK_MS)
    async with AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(fan.subscribe(f"j{i}", "0-0")) for i in range(5)]
        received: list[list[bytes]] = [[] for _ in subs]
        for n in range(4):
            await until(lambda: blocked_readers(store))
            [reader] = [c for c in await store.redis.client_list() if c["cmd"] == "xread"]
            await store.redis.client_kill_filter(_id=reader["id"])
            for i in range(5):  # written while the reader reconnects
                await append(store, f"j{i}", b"%d" % (2 * n), b"%d" % (2 * n + 1))
            for i, sub in enumerate(subs):
                received[i] += await receive(sub, store, 2)
        assert received == [[b"%d" % k for k in range(8)]] * 5
