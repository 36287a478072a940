"""GET /v1/endpoints/{endpoint_id}/logs: an endpoint's worker log lines, as JSON or live as SSE.

The lines are what podq-runtime workers ship (worker/log_shipper.py), read by
serverless/worker_logs.py. Admin key only: log lines carry job inputs and whatever a handler
prints. Query: `worker`, `job` (filters), `since` (an entry id, or epoch ms), `tail` (the last N
lines, default 100, at most 5,000; with `since`, the first N after it).

JSON: `{"lines": [{"id", "time", "worker", "job", "stream", "level", "line"}], "dropped": N,
"next": <entry id>}`, lines oldest first; pass `next` as `since` to get what came after.

With `Accept: text/event-stream` the answer is a stream of events, one per line, each

    id: <entry id>
    data: {"id": ..., "time": ..., "worker": ..., "job": ..., "stream": ..., "level": ..., "line": ...}

first the tail (or, with `since`, every line after it), then new lines as workers write them,
until the client goes away or the gateway stops. A client that reconnects with `Last-Event-ID`
gets exactly the lines after that entry. New lines come from a blocking XREAD per open stream on
the gateway's pooled client (worker_logs.follow); a comment line every KEEPALIVE_S keeps proxies
from closing a quiet stream.

An endpoint is found when known_endpoints knows it (registered, served by a live worker, or
holding jobs) or when it has log lines: the lines of an endpoint whose `podq dev` workers are
gone stay readable until the stream is trimmed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

from aiohttp import web
from redis.asyncio import Redis

from serverless import keys, worker_logs
from serverless.errors import NotFound
from serverless.gateway import routes, sse, state
from serverless.gateway.openapi import Param, Route
from serverless.gateway.replies import encode
from serverless.worker_logs import LogLine, LogQuery, LogsReply

# how long one XREAD of an open log stream blocks: also how soon a stopping gateway ends it
BLOCK_MS = 1_000

PARAMS = (
    Param("worker", "query", "only this worker's lines"),
    Param("job", "query", "only this job's lines"),
    Param("since", "query", "the lines after this point: epoch ms (lines written from then on), "
          "or an entry id `<ms>-<seq>` (a line's `id`, or a reply's `next`: the lines after it)",
          "integer", (0, worker_logs.MS_MAX)),
    Param("tail", "query", f"the last N lines (default {worker_logs.TAIL_DEFAULT}); with `since`, "
          "the first N after it", "integer", (1, worker_logs.TAIL_MAX)),
    Param("Accept", "header", "`text/event-stream`: the tail, then new lines live (SSE)"),
    Param("Last-Event-ID", "header", "SSE: resume after this line's id (exactly the lines after it)"),
)


async def logs(request: web.Request) -> web.StreamResponse:
    """GET /v1/endpoints/{endpoint_id}/logs: lines as JSON, or live as SSE."""
    redis: Redis = request.app[state.STORE].redis
    endpoint = await _endpoint(request, redis)
    query = worker_logs.parse_query(request.query)
    if sse.wants_events(request):
        last = request.headers.get("Last-Event-ID")
        after = sse.resume_cursor(last) if last else query.after
        return await _events(request, redis, endpoint, query, after)
    reply = await worker_logs.read(redis, endpoint, query)
    return web.Response(body=encode(reply), content_type="application/json")


ROUTES: tuple[Route, ...] = (
    Route("endpoint-logs", ("GET",), "/v1/endpoints/{endpoint_id}/logs", logs,
          "Worker log lines of an endpoint (JSON), or live as Server-Sent Events",
          reply=LogsReply, params=PARAMS, admin=True),
)


async def _endpoint(request: web.Request, redis: Redis) -> str:
    """The endpoint in the path: known (known_endpoints), or holding log lines; else 404."""
    try:
        return await routes.known_endpoint_of(request)
    except NotFound:
        endpoint = routes.endpoint_of(request)
        if not await redis.exists(keys.logs(endpoint)):
            raise
        return endpoint


def _lines_events(lines: list[LogLine]) -> bytes:
    return b"".join([sse.format_event(encode(line), event_id=line.id) for line in lines])


async def _events(request: web.Request, redis: Redis, endpoint: str, query: LogQuery,
                  after: str) -> web.StreamResponse:
    """The SSE answer: the tail (when there is no cursor), then every new matching line."""
    response = await sse.prepare(request)
    try:
        if not after:
            reply = await worker_logs.read(redis, endpoint, query)
            await response.write(_lines_events(reply.lines))
            after = reply.next
        async with aclosing(worker_logs.follow(redis, endpoint, query, after, BLOCK_MS)) as lines:
            await _live(response, lines, request.app[state.CLOSING])
        await response.write_eof()
    except ConnectionError:  # the client went away; it may resume with Last-Event-ID
        pass
    return response


async def _live(response: web.StreamResponse, lines: AsyncIterator[list[LogLine]],
                closing: asyncio.Event) -> None:
    """Send each batch of new lines; a keep-alive when quiet; stop when the gateway stops."""
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    async for batch in lines:
        if batch:
            await response.write(_lines_events(batch))
            quiet_since = loop.time()
        elif loop.time() - quiet_since >= sse.KEEPALIVE_S:
            await response.write(b": keep-alive\n\n")
            quiet_since = loop.time()
        if closing.is_set():
            return
