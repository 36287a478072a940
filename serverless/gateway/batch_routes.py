"""/v1/batches: batch jobs (docs/batch.md). A key that may reach an endpoint may batch to it
(the admin key, or a key scoped to that endpoint or to all); a batch of another endpoint is a
403 for a scoped key, and GET /v1/batches lists only the batches a key may reach.

    POST   /v1/batches                      JSON {"endpoint_id", "url", ...}: fetch the file
    POST   /v1/batches?endpoint_id=E&format=jsonl|csv   the file is the body (streamed)
    GET    /v1/batches                      the newest batches
    GET    /v1/batches/{id}                 counts by status, rate, ETA
    GET    /v1/batches/{id}/results         JSONL in input order (so far), ?status=FAILED
    POST   /v1/batches/{id}/cancel | retry  stop it | run its FAILED and TIMED_OUT inputs again
    DELETE /v1/batches/{id}                 its record and files (not while it runs)

`runners` is the gateway's cleanup context that runs the batch Supervisor (serverless/batches/
runner.py) in every replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import msgspec
from aiohttp import web

from serverless import keys
from serverless.batches import intake, results
from serverless.batches.model import (
    ACTIVE_STATES, MAX_IN_FLIGHT_CAP, RESULT_STATUSES, Batch, BatchBody, BatchDeleted,
    BatchList, BatchState, DEFAULT_MAX_IN_FLIGHT,
)
from serverless.batches.runner import Supervisor
from serverless.batches.store import BatchStore, Row, to_batch
from serverless.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge
from serverless.gateway import state, webhooks
from serverless.gateway.limits import decode_body, read_body
from serverless.gateway.openapi import Param, Route
from serverless.gateway.query_params import query_flag
from serverless.gateway.replies import encode
from serverless.model import MAX_DURATION_MS
from serverless.store import now_ms

BATCH = "/v1/batches/{batch_id}"
JSON_BODY_MAX = 64 * 1024
_body = msgspec.json.Decoder(BatchBody)


def _reply(value: msgspec.Struct) -> web.Response:
    return web.Response(body=encode(value), content_type="application/json")


def _batches(request: web.Request) -> BatchStore:
    return BatchStore(request.app[state.STORE].redis)


def _max_bytes(request: web.Request) -> int:
    return request.app[state.SETTINGS].batch_max_bytes  # PODQ_BATCH_MAX_BYTES (docs/batch.md)


def _check_reach(request: web.Request, endpoint: str) -> None:
    """403 unless the request's key may reach `endpoint`."""
    if not _reaches(request, endpoint):
        raise Forbidden(f"this key may not reach endpoint '{endpoint}'; use a key scoped to it, or the admin key")


def _reaches(request: web.Request, endpoint: str) -> bool:
    """The admin key, an unscoped key, or a key scoped to `endpoint` (the auth middleware read
    the key's scope: no lookup here)."""
    if request.app[state.KEYS].is_admin(request[state.KEY_DIGEST]):
        return True
    scope = request[state.KEY_SCOPE]
    return not scope.endpoints or endpoint in scope.endpoints


async def _known(request: web.Request, endpoint: str) -> None:
    if not keys.valid_id(endpoint):
        raise NotFound(f"endpoint {endpoint!r} not found: ids are 1-128 letters, digits, '_', '.', ':' or '-'")
    await request.app[state.KNOWN].require(endpoint, now_ms())
    _check_reach(request, endpoint)


async def _row(request: web.Request) -> Row:
    batch_id = request.match_info["batch_id"]
    row = await _batches(request).read(batch_id)
    if row is None:
        raise NotFound(f"batch {batch_id!r} not found (unknown or deleted); GET /v1/batches lists them")
    _check_reach(request, row.meta.endpoint_id)
    return row


def _batch(request: web.Request, row: Row) -> Batch:
    url = request.app[state.OBJECTS].url.rstrip("/") + "/" + results.round_prefix(row.meta.id, row.round)
    return to_batch(row, url)


# ---- create ----------------------------------------------------------------------------

def _int_param(request: web.Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(f"{name}={raw!r} is not a whole number in {low}..{high}")
    return int(raw)


async def _uploaded(request: web.Request) -> AsyncIterator[bytes]:
    while chunk := await request.content.readany():
        yield chunk


async def create_batch(request: web.Request) -> web.Response:
    """POST /v1/batches: from a URL (JSON body) or an upload (`?endpoint_id=`: the body is the file)."""
    if "endpoint_id" in request.query:
        return await _create_from_upload(request)
    body = decode_body(_body, await read_body(request, JSON_BODY_MAX))
    await _known(request, body.endpoint_id)
    fmt = intake.check_format(body.format, body.url)
    policy = request.app[state.WEBHOOK_POLICY]
    webhooks.check_url(body.url, policy.allow_private)
    if (why := await webhooks.refusal(body.url, policy)) is not None:
        raise BadRequest(f"the batch url {body.url!r} is refused: {why}")
    meta = intake.new_meta(intake.new_batch_id(), body.endpoint_id, fmt, now_ms(), source=body.url,
                           max_in_flight=body.max_in_flight, low_priority=body.low_priority,
                           execution_timeout_ms=body.execution_timeout_ms)
    async with aiohttp.ClientSession() as session:
        meta = await intake.create(_batches(request), request.app[state.OBJECTS], meta,
                                   intake.fetched(session, body.url), _max_bytes(request))
    return await _created(request, meta.id)


async def _create_from_upload(request: web.Request) -> web.Response:
    endpoint = request.query["endpoint_id"]
    await _known(request, endpoint)
    fmt = intake.check_format(request.query.get("format", "jsonl"))
    max_in_flight = _int_param(request, "max_in_flight", DEFAULT_MAX_IN_FLIGHT, 1, MAX_IN_FLIGHT_CAP)
    timeout = _int_param(request, "execution_timeout_ms", None, 1, MAX_DURATION_MS)
    meta = intake.new_meta(intake.new_batch_id(), endpoint, fmt, now_ms(), source="upload",
                           max_in_flight=max_in_flight or DEFAULT_MAX_IN_FLIGHT,
                           low_priority=query_flag(request.query, "low_priority", True),
                           execution_timeout_ms=timeout)
    cap = _max_bytes(request)
    if request.content_length is not None and request.content_length > cap:
        raise PayloadTooLarge(f"the batch file of {request.content_length} bytes is over the {cap} byte "
                              "limit; split it into several batches")
    meta = await intake.create(_batches(request), request.app[state.OBJECTS], meta, _uploaded(request), cap)
    return await _created(request, meta.id)


async def _created(request: web.Request, batch_id: str) -> web.Response:
    row = await _batches(request).read(batch_id)
    assert row is not None
    return _reply(_batch(request, row))


# ---- read ------------------------------------------------------------------------------

async def list_batches(request: web.Request) -> web.Response:
    """GET /v1/batches: the newest batches this key may reach, newest first."""
    store = _batches(request)
    rows = await asyncio.gather(*(store.read(i) for i in await store.ids()))
    reachable = [r for r in rows if r is not None and _reaches(request, r.meta.endpoint_id)]
    return _reply(BatchList([_batch(request, r) for r in reachable]))


async def get_batch(request: web.Request) -> web.Response:
    """GET /v1/batches/{id}: state, counts by status, rate and ETA."""
    return _reply(_batch(request, await _row(request)))


async def batch_results(request: web.Request) -> web.StreamResponse:
    """GET /v1/batches/{id}/results[?status=S]: the results so far as JSONL, in input order."""
    row = await _row(request)
    status = request.query.get("status")
    if status is not None and status not in RESULT_STATUSES:
        raise BadRequest(f"status={status!r} is not a result status; use one of {', '.join(RESULT_STATUSES)}")
    lines = results.results(request.app[state.OBJECTS], row.meta.id, row.round, row.written,
                            retrying=row.state in ACTIVE_STATES, status=status)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    buffer: list[bytes] = []
    async for line in lines:
        buffer.append(line)
        if len(buffer) >= 1000:
            await response.write(b"".join(buffer))
            buffer.clear()
    await response.write(b"".join(buffer))
    await response.write_eof()
    return response


# ---- change ----------------------------------------------------------------------------

async def cancel_batch(request: web.Request) -> web.Response:
    """POST /v1/batches/{id}/cancel: no more inputs are fed, those in flight are cancelled;
    a batch that already ended is answered as it is."""
    row = await _row(request)
    await _batches(request).move(row.meta.id, BatchState.CANCELLING, [BatchState.RUNNING])
    return _reply(_batch(request, await _row(request)))


async def retry_batch(request: web.Request) -> web.Response:
    """POST /v1/batches/{id}/retry: run the FAILED and TIMED_OUT inputs of a COMPLETED batch again."""
    row = await _row(request)
    if row.state is not BatchState.COMPLETED:
        raise Conflict(f"batch '{row.meta.id}' is {row.state.value}; only a COMPLETED batch can be retried "
                       "(a cancelled one: submit its file again)")
    if row.counts.get("FAILED", 0) + row.counts.get("TIMED_OUT", 0) == 0:
        raise Conflict(f"batch '{row.meta.id}' has no FAILED or TIMED_OUT input to retry")
    if not await _batches(request).new_round(row, now_ms()):
        raise Conflict(f"batch '{row.meta.id}' changed meanwhile; read it and try again")
    return _reply(_batch(request, await _row(request)))


async def delete_batch(request: web.Request) -> web.Response:
    """DELETE /v1/batches/{id}: its record, its input file and its results (not while it runs)."""
    row = await _row(request)
    if row.state in ACTIVE_STATES:
        raise Conflict(f"batch '{row.meta.id}' is {row.state.value}; cancel it first (POST {BATCH}/cancel)"
                       .replace("{batch_id}", row.meta.id))
    await _batches(request).delete(row.meta.id)
    await request.app[state.OBJECTS].delete_prefix(results.batch_prefix(row.meta.id))
    return _reply(BatchDeleted(row.meta.id))


async def runners(app: web.Application) -> AsyncIterator[None]:
    """The gateway's cleanup context: the batch Supervisor runs while the gateway does."""
    supervisor = Supervisor(app[state.STORE].redis, app[state.SETTINGS], app[state.OBJECTS])
    task = asyncio.create_task(supervisor.run_forever(), name="podq-batches")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await supervisor.close()


_UPLOAD = (
    Param("endpoint_id", "query", "upload: the endpoint to run the inputs on; the body is then the file "
          "itself (JSONL or CSV), not JSON"),
    Param("format", "query", "upload: jsonl (default) or csv"),
    Param("max_in_flight", "query", "upload: inputs queued or running at once", "integer", (1, MAX_IN_FLIGHT_CAP)),
    Param("low_priority", "query", "upload: queue the jobs as lowPriority (default true)", "boolean"),
    Param("execution_timeout_ms", "query", "upload: each job's executionTimeout", "integer", (1, MAX_DURATION_MS)),
)
_STATUS = (Param("status", "query", "only the lines of this status: " + ", ".join(RESULT_STATUSES)),)

ROUTES: tuple[Route, ...] = (
    Route("create-batch", ("POST",), "/v1/batches", create_batch,
          "Start a batch: the file at `url`, or (?endpoint_id=) the body as the file", BatchBody, Batch,
          (413,), _UPLOAD),
    Route("list-batches", ("GET",), "/v1/batches", list_batches, "The newest batches", reply=BatchList),
    Route("get-batch", ("GET",), BATCH, get_batch, "A batch's state, counts, rate and ETA", reply=Batch),
    Route("batch-results", ("GET",), f"{BATCH}/results", batch_results,
          "The results so far, JSONL in input order", params=_STATUS),
    Route("cancel-batch", ("POST",), f"{BATCH}/cancel", cancel_batch,
          "Cancel a batch: no more inputs, in-flight jobs cancelled", reply=Batch),
    Route("retry-batch", ("POST",), f"{BATCH}/retry", retry_batch,
          "Run the FAILED and TIMED_OUT inputs of a COMPLETED batch again", reply=Batch, errors=(409,)),
    Route("delete-batch", ("DELETE",), BATCH, delete_batch,
          "Delete a batch that is not running, with its files", reply=BatchDeleted, errors=(409,)),
)
