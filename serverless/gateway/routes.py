"""The /v2/{endpoint_id}/... handlers: decode with a typed decoder, call the store, encode.

RunPod's contract (shared/reference/runpod-api.md 1.6): /run, /runsync, /status, /stream,
/cancel, /retry, /purge-queue, /health. Auth, rate limits and error shaping happen in the
middlewares; a handler only raises a PodqError and lets error_responses answer. The routes that
name only an endpoint (run, runsync, purge-queue, health) answer 404 for an endpoint nobody can
serve (known_endpoints); the job routes answer for any job that exists.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from serverless import keys, lifecycle
from serverless.codec import run_request_decoder
from serverless.errors import BadRequest, NotFound
from serverless.gateway import sse, state, webhooks
from serverless.gateway.limits import decode_body, read_body
from serverless.gateway.replies import JobRef, Liveness, PurgeReply, StreamItem, StreamReply, encode
from serverless.model import (
    MAX_DURATION_MS, TERMINAL_STATUSES, JobRecord, Policy, RunRequest, StatusBody,
)
from serverless.store import JobStore, now_ms

# /runsync ?wait= in ms (RunPod: default 90 s, 1 s to 5 min)
WAIT_DEFAULT_MS = 90_000
WAIT_MIN_MS = 1_000
WAIT_MAX_MS = 300_000
POLICY_MAX_MS = MAX_DURATION_MS  # policy.executionTimeout and policy.ttl


def _reply(value: msgspec.Struct) -> web.Response:
    return web.Response(body=encode(value), content_type="application/json")


def _store(request: web.Request) -> JobStore:
    return request.app[state.STORE]


def endpoint_of(request: web.Request) -> str:
    """The endpoint id in the path; 404 when it cannot be an id."""
    return checked_endpoint(request.match_info["endpoint_id"])


def checked_endpoint(endpoint: str) -> str:
    """`endpoint` when it can be an endpoint id; else 404."""
    if not keys.valid_id(endpoint):
        raise NotFound(
            f"endpoint {endpoint!r} not found: ids are 1-128 letters, digits, '_', '.', ':' or '-'"
        )
    return endpoint


async def known_endpoint_of(request: web.Request) -> str:
    """The endpoint id in the path, if the endpoint exists (known_endpoint)."""
    return await known_endpoint(request.app, request.match_info["endpoint_id"])


async def known_endpoint(app: web.Application, endpoint: str) -> str:
    """`endpoint`, if it exists: registered, served by a live worker, or holding jobs
    (known_endpoints); else 404 naming it and how to create it."""
    await app[state.KNOWN].require(checked_endpoint(endpoint), now_ms())
    return endpoint


async def find_job(request: web.Request) -> JobRecord:
    """The job named in the path, if it belongs to the endpoint in the path; else 404."""
    return await job_of(request.app, request.match_info["endpoint_id"], request.match_info["job_id"])


async def job_of(app: web.Application, endpoint: str, job_id: str) -> JobRecord:
    """Job `job_id`, if it belongs to `endpoint`; else 404."""
    endpoint = checked_endpoint(endpoint)
    record = await app[state.STORE].get(job_id)
    if record is None or record.endpoint != endpoint:
        raise NotFound(
            f"job {job_id!r} not found on endpoint '{endpoint}' "
            "(unknown, of another endpoint, or its result expired)"
        )
    return record


def parse_wait(raw: str | None) -> int:
    """/runsync's ?wait= in ms: default 90000, clamped to 1000..300000."""
    if raw is None:
        return WAIT_DEFAULT_MS
    try:
        wait = int(raw)
    except ValueError:
        raise BadRequest(
            f"wait={raw!r} is not a whole number of milliseconds; use e.g. ?wait=30000 "
            f"({WAIT_MIN_MS}..{WAIT_MAX_MS})"
        ) from None
    return min(WAIT_MAX_MS, max(WAIT_MIN_MS, wait))


def _check_policy(policy: Policy | None) -> None:
    if policy is None:
        return
    for name in ("executionTimeout", "ttl"):
        value = getattr(policy, name)
        if value is not None and not 0 < value <= POLICY_MAX_MS:
            raise BadRequest(
                f"policy.{name} of {value} ms is out of range; use 1..{POLICY_MAX_MS} ms (7 days)"
            )


def decode_run_request(body: bytes, allow_private_webhooks: bool = True) -> RunRequest:
    """Decode and check a /run or /runsync body (msgspec names a missing or mistyped field)."""
    request = decode_body(run_request_decoder, body)
    if request.webhook is not None:
        webhooks.check_url(request.webhook, allow_private_webhooks)
    _check_policy(request.policy)
    return request


async def run(request: web.Request) -> web.Response:
    """POST /run: queue a job; answers `{"id", "status": "IN_QUEUE"}` at once."""
    endpoint = await known_endpoint_of(request)
    body = await read_body(request, request.app[state.LIMITS].run_max_bytes)
    return _reply(await queue_job(request.app, endpoint, body))


async def runsync(request: web.Request) -> web.Response:
    """POST /runsync[?wait=ms]: queue a job and answer its result if it ends within `wait`."""
    endpoint = await known_endpoint_of(request)
    wait_ms = parse_wait(request.query.get("wait"))
    body = await read_body(request, request.app[state.LIMITS].runsync_max_bytes)
    return _reply(await queue_and_wait(request.app, endpoint, wait_ms, body))


# The bodies of /run and /runsync once the endpoint is known and the body read: shared by the
# handlers above and the hot path (hot_path.py), which serves the same routes off the socket.

async def queue_job(app: web.Application, endpoint: str, body: bytes) -> JobRef:
    """/run: decode `body` and queue the job."""
    request = decode_run_request(body, app[state.WEBHOOK_POLICY].allow_private)
    record = await app[state.STORE].submit(endpoint, request)
    return JobRef(record.id, record.status.value)


async def queue_and_wait(app: web.Application, endpoint: str, wait_ms: int,
                         body: bytes) -> StatusBody | JobRef:
    """/runsync: decode `body`, queue the job, and answer its result if it ends within
    `wait_ms`, else its id and status."""
    request = decode_run_request(body, app[state.WEBHOOK_POLICY].allow_private)
    record = await app[state.STORE].submit_and_wait(endpoint, request, wait_ms / 1000)
    if record.status in TERMINAL_STATUSES:
        return lifecycle.status_body(record, now_ms())
    return JobRef(record.id, record.status.value)


async def status(request: web.Request) -> web.Response:
    """GET|POST /status/{id}: the job's status body (output while running is its progress)."""
    return _reply(await job_status(request.app, request.match_info["endpoint_id"],
                                   request.match_info["job_id"]))


async def job_status(app: web.Application, endpoint: str, job_id: str) -> StatusBody:
    """/status: the status body of job `job_id` of `endpoint` (hot_path.py serves it too)."""
    return lifecycle.status_body(await job_of(app, endpoint, job_id), now_ms())


async def stream(request: web.Request) -> web.StreamResponse:
    """GET|POST /stream/{id}: chunks not yet returned (JSON), or a live SSE stream."""
    record = await find_job(request)
    store = _store(request)
    if sse.wants_events(request):
        cursor = sse.resume_cursor(request.headers.get("Last-Event-ID"))
        block_ms = request.app[state.SSE_BLOCK_MS]
        return await sse.stream_events(request, store, record.id, cursor, block_ms)
    drained = await store.drain_chunks(record.id)
    job_status, chunks = drained if drained is not None else (record.status, [])
    return _reply(StreamReply(job_status.value, [StreamItem(c.output) for c in chunks]))


async def cancel(request: web.Request) -> web.Response:
    """POST /cancel/{id}: cancel a queued or running job; a finished one is left as it is."""
    record = await find_job(request)
    cancelled = await _store(request).cancel(record.id) or record
    return _reply(JobRef(cancelled.id, cancelled.status.value))


async def retry(request: web.Request) -> web.Response:
    """POST /retry/{id}: queue a FAILED or TIMED_OUT job again (409 otherwise)."""
    record = await find_job(request)
    again = await _store(request).retry(record.id)
    return _reply(JobRef(again.id, again.status.value))


async def purge_queue(request: web.Request) -> web.Response:
    """POST /purge-queue: cancel every queued job of the endpoint; running jobs go on."""
    removed = await _store(request).purge(await known_endpoint_of(request))
    return _reply(PurgeReply(removed))


async def health(request: web.Request) -> web.Response:
    """GET /health: job counts and worker counts by state."""
    return _reply(await _store(request).health(await known_endpoint_of(request)))


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: the gateway process is up (no key needed)."""
    return _reply(Liveness())
