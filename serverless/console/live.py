"""The console's Server-Sent Events: live figures, and a job's chunks as they arrive.

Both are authenticated by the session cookie (EventSource cannot send a header; routes.py's
gate checks the cookie before these handlers run).

- `numbers`: every NUMBERS_EVERY_S, the cluster snapshot /metrics reads
  (metrics_store.read_cluster: one round trip for the endpoint list, one pipeline for all
  figures) as `{"<endpoint>.<figure>": text}` (numbers.live); `?endpoint=` keeps one endpoint.
  jobs/s is the change in finished jobs between two snapshots of this stream.
- `log_lines`: an endpoint's worker log lines (`?job=`, `?worker=` filter) written after
  `?after=` (or Last-Event-ID), as they come, through the logs module's `follow`
  (serverless/worker_logs.py: a blocking XREAD per open stream; console tabs are few). Each
  event's `id:` is the line's entry id, so a reconnect resumes where it stopped.
- `job_chunks`: the job's chunks after `?after=` (or the browser's Last-Event-ID on a
  reconnect), then its final status, by the gateway's own SSE code (sse.stream_events) and so
  the process's shared chunk reader (chunk_fanout.py): a console tab costs what an API
  client's stream costs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextlib import aclosing
from typing import Any

import msgspec
from aiohttp import web

from serverless import worker_logs
from serverless.console import numbers
from serverless.errors import NotFound
from serverless.gateway import sse, state
from serverless.metrics_store import read_cluster
from serverless.store import now_ms

NUMBERS_EVERY_S = 1.0
LOG_BLOCK_MS = 5_000  # a quiet log stream sends a keep-alive comment this often


async def until_closing(request: web.Request, pump: Coroutine[Any, Any, None]) -> None:
    """Run a stream's `pump` until it ends, the client goes away (ConnectionError) or the
    gateway begins to stop (a blocked read would otherwise hold its shutdown up)."""
    task = asyncio.ensure_future(pump)
    closing = asyncio.ensure_future(request.app[state.CLOSING].wait())
    try:
        await asyncio.wait({task, closing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, closing):
            t.cancel()
        await asyncio.gather(task, closing, return_exceptions=True)
    error = None if task.cancelled() else task.exception()
    if error is not None and not isinstance(error, ConnectionError):
        raise error


async def numbers_stream(request: web.Request) -> web.StreamResponse:
    """GET /console/live/numbers[?endpoint=]: one `data:` event of cell texts per interval."""
    store = request.app[state.STORE]
    only = request.query.get("endpoint")
    response = await sse.prepare(request)

    async def pump() -> None:
        loop = asyncio.get_running_loop()
        before: dict[str, int] = {}
        at = loop.time()
        while True:
            snapshot = [f for f in await read_cluster(store.redis, now_ms(), store.stale_after_ms)
                        if only is None or f.endpoint == only]
            now = loop.time()
            cells = numbers.live(snapshot, before, now - at)
            before, at = {f.endpoint: numbers.finished(f) for f in snapshot}, now
            await response.write(sse.format_event(msgspec.json.encode(cells)))
            await asyncio.sleep(NUMBERS_EVERY_S)

    await until_closing(request, pump())
    return response


async def job_chunks(request: web.Request) -> web.StreamResponse:
    """GET /console/live/jobs/{job_id}?after=<cursor>: the job's chunks, then its status."""
    store = request.app[state.STORE]
    job_id = request.match_info["job_id"]
    if await store.get(job_id) is None:
        raise NotFound(f"job {job_id!r} not found (unknown, or its result expired)")
    cursor = sse.resume_cursor(request.headers.get("Last-Event-ID") or request.query.get("after"))
    return await sse.stream_events(request, store, job_id, cursor, request.app[state.SSE_BLOCK_MS])


async def log_lines(request: web.Request) -> web.StreamResponse:
    """GET /console/live/logs/{endpoint_id}?after=&job=&worker=: log lines as they are written."""
    redis = request.app[state.STORE].redis
    query = worker_logs.parse_query({k: v for k, v in request.query.items() if k in ("job", "worker")})
    after = request.headers.get("Last-Event-ID") or request.query.get("after") or worker_logs.START
    cursor = worker_logs.parse_since(after)
    response = await sse.prepare(request)

    async def pump() -> None:
        async with aclosing(worker_logs.follow(redis, request.match_info["endpoint_id"], query,
                                               cursor, LOG_BLOCK_MS)) as follow:
            async for lines in follow:
                events = [sse.format_event(msgspec.json.encode(line), event_id=line.id)
                          for line in lines]
                await response.write(b"".join(events) or b": keep-alive\n\n")

    await until_closing(request, pump())
    return response
