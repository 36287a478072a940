"""Server-Sent Events for GET /stream/{id} with `Accept: text/event-stream`.

Each chunk is pushed the moment a worker appends it, as

    id: <chunk cursor>
    data: {"output": <chunk>}

and when the job is terminal and every chunk has been sent, one final event carries the
status body and the response ends:

    event: status
    data: {"id": ..., "status": "COMPLETED", ...}

A client that lost the connection reconnects with `Last-Event-ID: <cursor>` and gets what
came after that chunk (https://html.spec.whatwg.org/multipage/server-sent-events.html).
This view keeps its own cursor: it does not move the /stream polling cursor.

The chunks of every open stream of the process are read by one shared reader (chunk_fanout.py:
a few blocking XREADs over all the streams' keys, not one per stream); each stream keeps its
own cursor and reads from Redis by it when its bounded buffer overflowed. While a stream waits
with nothing buffered, the reader writes its chunks to the socket itself (immediate_sender:
no task wakes per chunk); a backed-up socket sends them the usual way. The end of a job
comes from the done channel (store.watching); a quiet stream also re-reads the job's status
now and then, in case that notification was lost to a reconnect.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_writer import StreamWriter

from serverless import lifecycle
from serverless.errors import BadRequest
from serverless.gateway import state
from serverless.gateway.chunk_fanout import READ_COUNT, ChunkFanout, Subscription
from serverless.gateway.error_responses import ErrorReply
from serverless.gateway.replies import StreamItem, encode
from serverless.model import TERMINAL_STATUSES, Chunk
from serverless.store import JobStore, now_ms

MEDIA_TYPE = "text/event-stream"
START = "0-0"
# A comment line this often keeps proxies from closing a quiet stream.
KEEPALIVE_S = 15.0
# The most job statuses a process's quiet streams re-read per second (the safety net for a
# done notification lost to a reconnect): up to 100 streams re-read every 0.5 s (sse_block_ms),
# 1,000 every 5 s, 10,000 every 50 s.
RECHECKS_PER_S = 200
_CURSOR = re.compile(r"^\d{1,20}-\d{1,20}$")


def wants_events(request: web.Request) -> bool:
    """True when the client asked for Server-Sent Events."""
    return MEDIA_TYPE in request.headers.get("Accept", "")


def resume_cursor(value: str | None) -> str:
    """The chunk cursor to resume after, from a Last-Event-ID header value."""
    if not value:
        return START
    if not _CURSOR.match(value.strip()):
        raise BadRequest(
            f"invalid Last-Event-ID {value!r}: send the `id:` of the last event you received"
        )
    return value.strip()


def format_event(data: bytes, *, event_id: str | None = None, event: str | None = None) -> bytes:
    """One SSE event; data with line breaks becomes several `data:` lines, as the spec says."""
    head = b""
    if event is not None:
        head += b"event: " + event.encode() + b"\n"
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    if b"\n" not in data and b"\r" not in data:  # one line: the usual JSON chunk
        return head + b"data: " + data + b"\n\n"
    lines = data.splitlines() or [b""]
    return head + b"".join([b"data: " + line + b"\n" for line in lines]) + b"\n"


def chunk_events(chunks: list[Chunk]) -> bytes:
    """The events for a batch of chunks, in order."""
    return b"".join([format_event(encode(StreamItem(c.output)), event_id=c.cursor) for c in chunks])


HEADERS = {
    "Content-Type": MEDIA_TYPE,
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
}


async def prepare(request: web.Request, **extra: str) -> web.StreamResponse:
    """An event-stream response, sent its headers (`extra` ones added): every SSE route's start."""
    response = web.StreamResponse(headers={**HEADERS, **extra})
    await response.prepare(request)
    return response


# A chunk is sent without waiting only while its socket's own buffer holds less than this
# (aiohttp's drain limit): a slow client's chunks wait in its subscription's bounded buffer.
SEND_NOW_LIMIT = 0x10000


def immediate_sender(response: web.StreamResponse) -> Callable[[bytes], bool] | None:
    """A function that writes body bytes to the prepared `response` at once, framed as its
    writer frames them (HTTP/1.1 chunked), and says whether it could (False when the socket
    is closing or backed up: send those bytes with `response.write`, which waits for room).

    aiohttp's `write` is a coroutine: it can only run in the stream's own task, so each chunk
    would wake that task. The shared reader calls this instead (chunk_fanout.Subscription.sink).
    It reaches into aiohttp's writer (`_payload_writer`), so it answers None, and every chunk
    goes through `response.write`, unless the writer is the plain chunked one this framing
    matches: no compression, no declared length, no per-chunk hooks, headers already sent.
    """
    writer = getattr(response, "_payload_writer", None)
    if not (isinstance(writer, StreamWriter) and writer.chunked and writer.length is None
            and getattr(writer, "_compress", None) is None
            and getattr(writer, "_on_chunk_sent", None) is None
            and getattr(writer, "on_body_write", None) is None
            and not getattr(writer, "_headers_buf", None)):
        return None

    def send(data: bytes) -> bool:
        transport = writer.transport
        if transport is None or transport.is_closing() or \
                transport.get_write_buffer_size() >= SEND_NOW_LIMIT:
            return False
        frame = b"%x\r\n%s\r\n" % (len(data), data)
        writer.output_size += len(frame)  # the access log's body size, as aiohttp counts it
        transport.write(frame)
        return True

    return send


class _Pump:
    """Moves one job's chunks and its final status to one open response."""

    def __init__(
        self, response: web.StreamResponse, store: JobStore, fanout: ChunkFanout, job_id: str
    ) -> None:
        self.response, self.store, self.fanout, self.job_id = response, store, fanout, job_id
        self.quiet_since = asyncio.get_running_loop().time()
        self._send_now = immediate_sender(response)

    async def run(self, cursor: str, block_ms: int) -> None:
        """Send chunks as the shared reader hands them over; the job's status is read at the
        start, when the done channel says it may have ended, and when a quiet stream's
        re-check is due (the safety net for a notification lost to a reconnect)."""
        async with (
            self.store.watching(self.job_id) as ended,
            self.fanout.subscribe(self.job_id, cursor) as sub,
        ):
            relay: asyncio.Task[None] | None = None
            try:
                while True:
                    ended.clear()  # before the read: an end published after it sets it again
                    if relay is None or relay.done():
                        relay = asyncio.create_task(_relay(ended, sub.ready))
                    if await self._ended(sub):
                        return
                    recheck_at = asyncio.get_running_loop().time() + self._recheck_s(block_ms)
                    await self._pump(sub, ended, recheck_at)
            finally:
                if relay is not None:
                    relay.cancel()

    async def _ended(self, sub: Subscription) -> bool:
        """Read the job; when it is terminal, send what is left and the final status (True)."""
        async with self.fanout.direct_reads:
            record = await self.store.get(self.job_id)
        if record is None:
            await self._send(_gone(self.job_id))
            return True
        if record.status not in TERMINAL_STATUSES:
            return False
        while chunks := await self._read(sub):
            await self._send_chunks(sub, chunks)
        body = lifecycle.status_body(record, now_ms())
        await self._send(format_event(encode(body), event="status"))
        return True

    async def _pump(self, sub: Subscription, ended: asyncio.Event, recheck_at: float) -> None:
        """Send chunks as they come until the job may have ended or `recheck_at` (loop time)
        passes; a keep-alive comment goes out when the stream was quiet for KEEPALIVE_S. One
        timer per stream wakes the wait when either is due, set again only after it rang (a
        timer per chunk would cost as much as the chunk)."""
        loop = asyncio.get_running_loop()
        alarm, alarm_at = None, 0.0
        try:
            while True:
                if alarm is None:
                    alarm_at = min(recheck_at, self.quiet_since + KEEPALIVE_S)
                    alarm = loop.call_at(alarm_at, sub.ready.set)
                sub.sink = self._sink  # while it waits, chunks go out without waking it
                await sub.ready.wait()
                sub.sink = None
                if ended.is_set():
                    return
                if loop.time() >= alarm_at:
                    alarm = None
                    if loop.time() >= recheck_at:
                        return
                    await self._keepalive()
                chunks = sub.take()
                if chunks is None:  # some are not in the buffer: read them by cursor
                    chunks = await self._read(sub)
                if chunks:
                    await self._send_chunks(sub, chunks)
        finally:
            if alarm is not None:
                alarm.cancel()

    def _sink(self, chunks: list[Chunk]) -> bool:
        """Send `chunks` at once if the socket has room (the reader calls it; see Subscription)."""
        if self._send_now is None or not self._send_now(chunk_events(chunks)):
            return False
        self.quiet_since = asyncio.get_running_loop().time()
        return True

    async def _read(self, sub: Subscription) -> list[Chunk]:
        """Chunks after the stream's cursor, from Redis (the buffer lost some, or the job ended)."""
        async with self.fanout.direct_reads:
            return await self.store.read_chunks(self.job_id, sub.cursor, count=READ_COUNT)

    def _recheck_s(self, block_ms: int) -> float:
        """How long a quiet stream goes before it re-reads its status: `block_ms`, or longer
        when many streams are open, so the process re-reads at most RECHECKS_PER_S statuses a
        second; spread by up to a quarter so streams opened together do not re-read together."""
        return max(block_ms / 1000, self.fanout.open / RECHECKS_PER_S) * random.uniform(0.75, 1.0)

    async def _send_chunks(self, sub: Subscription, chunks: list[Chunk]) -> None:
        await self._send(chunk_events(chunks))
        sub.cursor = chunks[-1].cursor

    async def _send(self, data: bytes) -> None:
        await self.response.write(data)
        self.quiet_since = asyncio.get_running_loop().time()

    async def _keepalive(self) -> None:
        if asyncio.get_running_loop().time() - self.quiet_since >= KEEPALIVE_S:
            await self._send(b": keep-alive\n\n")


async def _relay(ended: asyncio.Event, ready: asyncio.Event) -> None:
    """Wake the stream's wait for chunks when the done channel says the job may have ended."""
    await ended.wait()
    ready.set()


def _gone(job_id: str) -> bytes:
    error = ErrorReply(f"job '{job_id}' is gone: its result expired while streaming")
    return format_event(encode(error), event="error")


async def stream_events(
    request: web.Request, store: JobStore, job_id: str, cursor: str, block_ms: int
) -> web.StreamResponse:
    """Answer with an event stream of the job's chunks after `cursor`, then its final status.

    Args:
        request: the /stream request (its job was already found and checked).
        store: the job store.
        job_id: the job whose chunks to send.
        cursor: send chunks after this one ("0-0" for all).
        block_ms: how long a quiet stream waits before it re-reads the job's status (longer
            when more than RECHECKS_PER_S * block_ms / 1000 streams are open).

    Returns:
        The finished response.
    """
    response = await prepare(request)
    pump = _Pump(response, store, request.app[state.CHUNK_FANOUT], job_id)
    try:
        # its own task: a chunk then resumes the pump's frames, not also the ten of aiohttp's
        # handler and middlewares (a cancelled handler cancels the task it awaits)
        await asyncio.create_task(pump.run(cursor, block_ms), name=f"podq-sse-{job_id}")
        await response.write_eof()
    except ConnectionError:  # the client went away; nothing is lost, it may resume
        pass
    return response
