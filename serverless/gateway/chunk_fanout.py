"""ChunkFanout: one shared reader of chunk streams for every open SSE stream of a gateway process.

Each open SSE stream used to hold its own blocking XREAD on its own Redis connection: N streams
were N connections, and a chunk for each of them cost a round trip and a re-issued command per
stream (1,000 streams on 2 cores: one chunk reached the last client ~300 ms after it was
written, and the idle streams alone kept the gateway at 50-70% of a core). Here every open
stream *subscribes* with its job id and its own cursor, and the process reads all of them with
a few blocking reads:

    XREAD COUNT c BLOCK ms STREAMS <wake> podq:chunks:j1 ... podq:chunks:jn  <w> cursor1 ... cursorn

- A feed per chunk stream key holds the reader's cursor for that key and the subscriptions on
  it (two clients of one job share it). One reply carries every key that got entries; the
  reader hands each subscription the batch, tagged with the cursor it continues from, and moves
  the feed's cursor. The reader never waits for a client.
- A reader owns one connection and at most `keys_per_reader` feeds (readers are added as
  streams open): the XREAD is re-sent after every reply and costs Redis and the client time in
  the number of keys it names, so shards keep each re-issue small (the keys are packed once per
  feed, not once per read), and only a shard whose keys moved re-issues at all.
- Joining: a new key must be in the next XREAD. A join while the read is blocked adds one entry
  to the reader's own wake stream (`podq:chunks:_wake-<uuid>`, MAXLEN 1, expiring a minute after
  its last use; `_` starts no job id), which every XREAD names after the last wake it saw, so
  the read returns and is re-issued with the new keys. At most one wake-up is pending per read,
  sent JOIN_DELAY_S after the first join: 1,000 streams opening at once cost a few wake-ups, not
  1,000. Leaving costs no command: the next XREAD leaves the key out.
  Why not `CLIENT UNBLOCK <reader's connection id>`: it is an @dangerous command, refused to the
  ACL user of docs/security.md; it needs the reader's connection id, which changes on every
  reconnect; and an unblock that reaches Redis before the XREAD does is lost. A wake entry needs
  only XADD on a podq key, and counts even when it lands before the XREAD.
- A slow client stalls nobody: each subscription buffers at most `buffer_bytes` of chunks.
  When a batch would overflow it, the buffer is dropped and the stream re-reads from its own
  cursor (the chunk stream in Redis is the source of truth), then takes from its buffer again.
  Every batch names the cursor it continues from, so a gap (an overflow, or a feed that was
  ahead of a stream that joined it) is read from Redis, and an overlap is skipped.
- Redis errors: a feed's cursor moves only when a reply was read. After an error the reader
  waits (0.05 s, doubling to 2 s), reconnects and reads again from the same cursors: nothing is
  lost or repeated.

Why not pub/sub: chunks are appended by the workers' scripts (serverless/lua/chunks.lua), which
publish nothing, and a pub/sub message lost to a reconnect would have to be re-read from the
chunk stream by cursor anyway; reading the streams themselves needs no change on the write
path and has one source of truth.

Memory: per open stream a Subscription (a deque, an Event) and the SSE task, beside aiohttp's
request, response and transport: about 22 MB of gateway RSS per 1,000 open streams, at 1,000
and at 10,000 streams (bench/sse_fanout.py; each stream's buffer is bounded by
`buffer_bytes`, its socket's by aiohttp's 64 KiB write limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from serverless import keys
from serverless.gateway import state
from serverless.model import Chunk

log = logging.getLogger("podq.gateway.sse")

KEYS_PER_READER = 500
BUFFER_BYTES = 256 * 1024  # per open stream
READ_COUNT = 100  # entries per key per XREAD
# A blocked read is re-issued this often even when nothing happens (drops keys nobody reads).
BLOCK_MS = 2_000
DIRECT_READS = 32
JOIN_DELAY_S = 0.002  # a new stream's key waits this long for others before the read re-issues
WAKE_TTL_MS = 60_000  # a reader's wake stream outlives its last wake-up by this (a dead gateway's goes)
_RETRY_S = (0.05, 2.0)


def parse_cursor(cursor: str) -> tuple[int, int]:
    """A stream entry id `ms-seq` as a tuple that orders as Redis orders ids."""
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq or 0)


class Subscription:
    """One open SSE stream's place in the fan-out: its cursor and a bounded buffer of chunks.

    The stream sends what `take()` returns and then moves `cursor` to the last chunk it sent.
    While it waits with nothing buffered it may set `sink`: a function that sends chunks at
    once without waiting and says whether it did (False: its socket is backed up or closing).
    Chunks that continue from `cursor` then go straight to it from the reader, and the cursor
    moves with them: the stream's task is not woken per chunk (at 1,000 streams that wake-up
    was about a third of the gateway's CPU per chunk).
    """

    def __init__(self, job_id: str, cursor: str, limit: int) -> None:
        self.job_id, self.cursor = job_id, cursor
        self.ready = asyncio.Event()  # set when take() has something, or a re-read is due
        self.sink: Callable[[list[Chunk]], bool] | None = None
        self._batches: deque[tuple[str, list[Chunk]]] = deque()
        self._bytes, self._limit = 0, limit
        self._lagging = False

    def offer(self, after: str, chunks: list[Chunk], size: int) -> None:
        """Send `chunks`, the entries that follow `after`, through `sink` when they continue
        the stream and nothing is buffered, else buffer them; never waits (the reader calls
        it)."""
        sink = self.sink
        if (sink is not None and after == self.cursor and not self._batches
                and not self._lagging and sink(chunks)):
            self.cursor = chunks[-1].cursor
            return
        if not self._lagging:
            if self._batches and self._bytes + size > self._limit:
                self.lag()
            else:
                self._batches.append((after, chunks))
                self._bytes += size
        self.ready.set()

    def lag(self) -> None:
        """Drop the buffer: the stream reads from Redis by its cursor before it takes again."""
        self._batches.clear()
        self._bytes, self._lagging = 0, True
        self.ready.set()

    def take(self) -> list[Chunk] | None:
        """The buffered chunks after `cursor`, in order; None when some are not in the buffer
        (it overflowed, or a batch starts past `cursor`): read those from Redis by cursor."""
        self.ready.clear()
        if self._lagging:
            self._lagging = False
            return None
        out: list[Chunk] = []
        cursor = self.cursor
        while self._batches:
            after, chunks = self._batches.popleft()
            if after != cursor:  # not where this stream is: skip what it has, or read a gap
                at = parse_cursor(cursor)
                if parse_cursor(after) > at:
                    self._batches.clear()
                    self._bytes = 0
                    return None
                chunks = [c for c in chunks if parse_cursor(c.cursor) > at]
            if chunks:
                out += chunks
                cursor = chunks[-1].cursor
        self._bytes = 0
        return out


class _Feed:
    __slots__ = ("key", "packed_key", "cursor", "subs", "reader")

    def __init__(self, key: bytes, cursor: str, reader: _Reader) -> None:
        self.key, self.packed_key, self.cursor, self.reader = key, _bulk(key), cursor, reader
        self.subs: list[Subscription] = []


def _bulk(arg: bytes) -> bytes:
    """One argument of a command in the Redis protocol (RESP)."""
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def _xread(feeds: list[_Feed], cursors: list[str], count: int, block_ms: int) -> bytes:
    """`XREAD COUNT count BLOCK block_ms STREAMS keys... cursors...`, packed. The keys are
    packed once per feed: redis-py would pack every argument of every re-issue again."""
    head = [b"XREAD", b"COUNT", b"%d" % count, b"BLOCK", b"%d" % block_ms, b"STREAMS"]
    return b"".join([
        b"*%d\r\n" % (len(head) + 2 * len(feeds)), *map(_bulk, head),
        *(f.packed_key for f in feeds), *(_bulk(c.encode()) for c in cursors),
    ])


def _chunks(entries: list[list[Any]]) -> list[Chunk]:
    """Stream entries `[id, [field, value, ...]]` as Chunks (their `d` field, as store.py reads
    them); an entry without one is skipped."""
    out = []
    for eid, fields in entries:
        if fields and fields[0] == b"d":  # chunks.lua writes `d` alone
            data = fields[1]
        else:
            data = dict(zip(fields[::2], fields[1::2])).get(b"d") if fields else None
        if data is not None:
            out.append(Chunk(cursor=eid.decode(), output=msgspec.Raw(data)))
    return out


class _Reader:
    """One connection's blocking XREAD over a shard of the feeds, re-issued after every reply."""

    def __init__(self, redis: Redis, name: str, block_ms: int, count: int) -> None:
        self.feeds: dict[bytes, _Feed] = {}
        self.wakes = 0  # joins that interrupted a blocked read
        self._redis = redis  # the shared pool: wake-ups go through it
        # a connection of the pool's kind (address, credentials, TLS) that only this reader uses
        self._conn = redis.connection_pool.make_connection()
        self._block_ms, self._count = block_ms, count
        # this reader's own wake stream, named first in every XREAD (`_` starts no job id)
        self._wake = _Feed(keys.chunks(f"_wake-{uuid.uuid4().hex}").encode(), "0-0", self)
        self._joined = asyncio.Event()  # a feed joined since the XREAD in flight was sent
        self._reading = False  # an XREAD is in flight
        self._waking: asyncio.Task[None] | None = None
        self.task = asyncio.create_task(self._run(), name=name)

    def add(self, feed: _Feed) -> None:
        self.feeds[feed.key] = feed
        self._joined.set()
        if self._reading and (self._waking is None or self._waking.done()):
            self._waking = asyncio.create_task(self._wake_up())

    def remove(self, feed: _Feed) -> None:
        if self.feeds.get(feed.key) is feed:
            del self.feeds[feed.key]

    async def close(self) -> None:
        for task in (self.task, self._waking):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._conn.disconnect()
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self._wake.key)

    async def _run(self) -> None:
        delay = _RETRY_S[0]
        while True:
            if not self.feeds:
                self._joined.clear()
                await self._joined.wait()
                continue
            try:
                self._deliver(*await self._read())
                delay = _RETRY_S[0]
                continue
            except (RedisError, OSError) as e:
                log.warning("chunk reader lost Redis (%s); reading again from the same cursors "
                            "in %.2f s", e, delay)
            except Exception:  # a bug here must not end every open stream's feed for good
                log.exception("chunk reader failed; reading again from the same cursors in "
                              "%.2f s", delay)
            await self._conn.disconnect(nowait=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_S[1])

    async def _read(self) -> tuple[list[_Feed], list[str], Any]:
        feeds = [self._wake, *self.feeds.values()]
        cursors = [f.cursor for f in feeds]
        command = _xread(feeds, cursors, self._count, self._block_ms)
        self._joined.clear()  # these keys are named: a join from now on needs a wake-up
        self._reading = True
        try:
            await self._conn.connect()  # a no-op while connected
            await self._conn.send_packed_command(command, check_health=False)
            return feeds, cursors, await self._conn.read_response(disable_decoding=True)
        finally:
            self._reading = False

    def _deliver(self, feeds: list[_Feed], cursors: list[str], reply: Any) -> None:
        if not reply:
            return  # nothing came within block_ms
        asked = {f.key: c for f, c in zip(feeds, cursors)}
        for key, entries in reply.items() if isinstance(reply, dict) else reply:  # RESP3 | 2
            feed = self._wake if key == self._wake.key else self.feeds.get(key)
            if feed is None or not entries:
                continue  # nobody reads this key any more
            feed.cursor = entries[-1][0].decode()
            if feed is self._wake:
                continue  # a join woke the read: the next one names the new keys
            chunks = _chunks(entries)
            size = sum(len(c.output) for c in chunks)
            for sub in feed.subs if chunks else ():
                sub.offer(asked[key], chunks, size)

    async def _wake_up(self) -> None:
        """Make the XREAD in flight return, so the next one names the keys that joined since:
        one entry in this reader's wake stream, which that XREAD names after the last wake it
        saw (so the entry counts even when it lands before the XREAD reaches Redis). It waits
        JOIN_DELAY_S first: streams opening together cost one wake-up and one re-issue."""
        await asyncio.sleep(JOIN_DELAY_S)
        if not (self._reading and self._joined.is_set()):
            return  # no read in flight lacks a key: the next one names every key
        self.wakes += 1
        with contextlib.suppress(RedisError, OSError):  # the read then times out on its own
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake.key, {"w": b"1"}, maxlen=1, approximate=False)
                pipe.pexpire(self._wake.key, WAKE_TTL_MS)
                await pipe.execute()


class ChunkFanout:
    """The chunk streams of every open SSE stream of this process, read by a few shared readers.

    Args:
        redis: the process's pooled client; each reader takes one connection from its pool.
        keys_per_reader: the most chunk streams one reader's XREAD names.
        buffer_bytes: chunk bytes buffered per open stream before it re-reads from Redis.
        block_ms: how long one XREAD blocks when nothing comes.
        count: entries per chunk stream per XREAD.
    """

    def __init__(
        self, redis: Redis, *, keys_per_reader: int = KEYS_PER_READER,
        buffer_bytes: int = BUFFER_BYTES, block_ms: int = BLOCK_MS, count: int = READ_COUNT,
    ) -> None:
        self._redis = redis
        self._keys_per_reader, self._buffer_bytes = keys_per_reader, buffer_bytes
        self._block_ms, self._count = block_ms, count
        self._feeds: dict[bytes, _Feed] = {}
        self._readers: list[_Reader] = []
        self.open = 0  # subscriptions now
        # the streams' own reads (status, catch-up by cursor) in flight at once: each takes a
        # pooled connection, and 10,000 streams told at once that their jobs ended must not
        # open 10,000 connections
        self.direct_reads = asyncio.Semaphore(DIRECT_READS)

    @property
    def wakes(self) -> int:
        """How many times a stream that joined woke a blocked read (not once per join)."""
        return sum(r.wakes for r in self._readers)

    @asynccontextmanager
    async def subscribe(self, job_id: str, cursor: str) -> AsyncIterator[Subscription]:
        """Receive the chunks of `job_id` that follow `cursor` for as long as the block runs.

        Args:
            job_id: the job whose chunk stream to read.
            cursor: the last chunk the client has ("0-0" for none).

        Returns:
            The subscription: wait on `ready`, then `take()`.
        """
        sub = Subscription(job_id, cursor, self._buffer_bytes)
        feed = self._join(sub)
        try:
            yield sub
        finally:
            self._leave(sub, feed)

    async def close(self) -> None:
        """Stop every reader and hand its connection back to the pool."""
        readers, self._readers = self._readers, []
        await asyncio.gather(*(r.close() for r in readers))
        self._feeds.clear()

    def _join(self, sub: Subscription) -> _Feed:
        key = keys.chunks(sub.job_id).encode()
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = _Feed(key, sub.cursor, self._reader_with_room())
            feed.reader.add(feed)
        elif feed.cursor != sub.cursor:
            sub.lag()  # the feed is elsewhere in the stream: catch up from Redis first
        feed.subs.append(sub)
        self.open += 1
        return feed

    def _leave(self, sub: Subscription, feed: _Feed) -> None:
        self.open -= 1
        feed.subs.remove(sub)
        if not feed.subs:
            feed.reader.remove(feed)
            if self._feeds.get(feed.key) is feed:
                del self._feeds[feed.key]

    def _reader_with_room(self) -> _Reader:
        for reader in self._readers:
            if len(reader.feeds) < self._keys_per_reader:
                return reader
        reader = _Reader(self._redis, f"podq-chunk-reader-{len(self._readers)}", self._block_ms,
                         self._count)
        self._readers.append(reader)
        return reader


async def fanout_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: close the app's ChunkFanout (its readers and their connections) at shutdown."""
    yield
    await app[state.CHUNK_FANOUT].close()
