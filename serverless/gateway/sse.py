"""Server-Sent Events for GET /stream/{id} with `Accept: text/event-stream`.

Each chunk is pushed the moment a worker appends it (a blocking XREAD on the job's chunk
stream), as

    id: <chunk cursor>
    data: {"output": <chunk>}

and when the job is terminal and every chunk has been sent, one final event carries the
status body and the response ends:

    event: status
    data: {"id": ..., "status": "COMPLETED", ...}

A client that lost the connection reconnects with `Last-Event-ID: <cursor>` and gets what
came after that chunk (https://html.spec.whatwg.org/multipage/server-sent-events.html).
This view keeps its own cursor: it does not move the /stream polling cursor.
"""

from __future__ import annotations

import asyncio
import re
import time

from aiohttp import web

from serverless import lifecycle
from serverless.errors import BadRequest
from serverless.gateway.error_responses import ErrorReply
from serverless.gateway.replies import StreamItem, encode
from serverless.model import TERMINAL_STATUSES, Chunk
from serverless.store import JobStore, now_ms

MEDIA_TYPE = "text/event-stream"
START = "0-0"
# A comment line this often keeps proxies from closing a quiet stream.
KEEPALIVE_S = 15.0
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
    lines = data.splitlines() or [b""]
    return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


def chunk_events(chunks: list[Chunk]) -> bytes:
    """The events for a batch of chunks, in order."""
    return b"".join(format_event(encode(StreamItem(c.output)), event_id=c.cursor) for c in chunks)


async def _prepare(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": MEDIA_TYPE,
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    await response.prepare(request)
    return response


class _Pump:
    """Moves one job's chunks and its final status to one open response."""

    def __init__(self, response: web.StreamResponse, store: JobStore, job_id: str) -> None:
        self.response, self.store, self.job_id = response, store, job_id
        self.quiet_since = time.monotonic()

    async def run(self, cursor: str, block_ms: int) -> None:
        """Send chunks as they come; the job's status is read at the start, when the done
        channel says it may have ended, and when a wait for chunks comes back empty (the safety
        net for a notification lost to a reconnect), not once per batch of chunks."""
        async with self.store.watching(self.job_id) as ended:
            check = True
            while True:
                if check:
                    ended.clear()  # before the read: an end published after it sets it again
                    record = await self.store.get(self.job_id)
                    if record is None:
                        return await self._send(_gone(self.job_id))
                    if record.status in TERMINAL_STATUSES:
                        chunks = await self.store.read_chunks(self.job_id, cursor)
                        if not chunks:
                            body = lifecycle.status_body(record, now_ms())
                            return await self._send(format_event(encode(body), event="status"))
                        cursor = chunks[-1].cursor
                        await self._send(chunk_events(chunks))
                        continue
                chunks = await self._next_chunks(cursor, block_ms, ended)
                if chunks:
                    cursor = chunks[-1].cursor
                    await self._send(chunk_events(chunks))
                    check = ended.is_set()
                else:
                    check = True
                    await self._keepalive()

    async def _next_chunks(self, cursor: str, block_ms: int, ended: asyncio.Event) -> list[Chunk]:
        """Wait up to `block_ms` for chunks after `cursor`; [] at once when the job ends."""
        if ended.is_set():
            return []
        read = asyncio.ensure_future(self.store.read_chunks(self.job_id, cursor, block_ms=block_ms))
        end = asyncio.ensure_future(ended.wait())
        try:
            await asyncio.wait((read, end), return_when=asyncio.FIRST_COMPLETED)
        finally:
            end.cancel()
            if not read.done():  # the job ended first: drop the blocked read
                read.cancel()
        try:
            return await read
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # we were cancelled ourselves: pass it on
                raise
            return []

    async def _send(self, data: bytes) -> None:
        await self.response.write(data)
        self.quiet_since = time.monotonic()

    async def _keepalive(self) -> None:
        if time.monotonic() - self.quiet_since >= KEEPALIVE_S:
            await self._send(b": keep-alive\n\n")


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
        block_ms: how long one wait for new chunks lasts before the status is re-checked.

    Returns:
        The finished response.
    """
    response = await _prepare(request)
    try:
        await _Pump(response, store, job_id).run(cursor, block_ms)
        await response.write_eof()
    except ConnectionError:  # the client went away; nothing is lost, it may resume
        pass
    return response
