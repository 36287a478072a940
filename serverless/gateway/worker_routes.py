"""RunPod's worker-side HTTP protocol: the routes an unmodified `runpod` worker calls.

    GET  /v2/{ep}/job-take/{worker}[?job_in_progress=0|1]        one job, long-polled
    GET  /v2/{ep}/job-take-batch/{worker}?batch_size=N           up to N jobs, long-polled
    POST /v2/{ep}/job-done/{worker}/{job}[?isStream=..]          a result or a progress update
    POST /v2/{ep}/job-stream/{worker}/{job}                      one stream chunk
    GET  /v2/{ep}/ping/{worker}?job_id=a,b&runpod_version=X      the heartbeat
    GET  /v2/{ep}/job-stop/{worker}                              jobs to stop, long-polled

Each applies the same store operations podq's own workers use, so both kinds get one lease,
fencing, cancel and timeout model: a take leases the job to the worker id (three ping intervals,
renewed by pings), a result is accepted only from the worker holding the current attempt, and
podq enforces executionTimeout (the SDK never does). What the SDK does with each answer is in
shared/reference/runpod-worker-protocol.md; the rules that follow from it:
- never answer an empty take at once (the SDK re-polls immediately): hold up to
  `runpod_hold_ms`, then 204;
- a take answer that could not be written gives its jobs back to the queue;
- job-done and job-stream answer 200 to duplicates and late posts (a 4xx makes the SDK drop a
  result, a 5xx makes it post again): idempotent, the first final result wins;
- the body is JSON whatever its Content-Type says.
Decisions about bodies live in serverless/runpod_protocol.py (pure); this module is the I/O.
"""

from __future__ import annotations

import asyncio

import msgspec
from aiohttp import web

from serverless import keys
from serverless.errors import NotFound
from serverless.gateway import state
from serverless.gateway.error_responses import error_response
from serverless.gateway.limits import MB, read_body
from serverless.gateway.replies import encode
from serverless.model import JobRecord, TakenJob
from serverless.queue import wait_for_work
from serverless.runpod_protocol import (
    Final,
    Progress,
    done_event,
    next_beat,
    parse_batch_size,
    parse_ping,
    stream_chunk,
    take_body,
)
from serverless.store import JobStore, now_ms

# A result may be as large as RunPod allows (~20 MB) and more: refusing one loses it for good.
RESULT_MAX_BYTES = 64 * MB
CHUNK_MAX_BYTES = 20 * MB
# While a take waits for work it re-checks the queue at least this often (another gateway
# replica, or a podq worker, may have consumed the doorbell ring).
RECHECK_S = 1.0


class Accepted(msgspec.Struct):
    """job-done / job-stream: whether the post changed the job (false for a duplicate, a late
    post or a post from a worker that no longer holds the job; still a 200)."""

    accepted: bool
    reason: str = ""


class Pong(msgspec.Struct):
    ok: bool = True


class JobsToStop(msgspec.Struct):
    """job-stop's answer (SDK 1.10+): ids of the worker's jobs to cancel."""

    jobsToStop: list[str]


def _json(value: msgspec.Struct) -> web.Response:
    return web.Response(body=encode(value), content_type="application/json")


def _store(request: web.Request) -> JobStore:
    return request.app[state.STORE]


def _ids(request: web.Request) -> tuple[str, str]:
    endpoint, worker = request.match_info["endpoint_id"], request.match_info["worker_id"]
    if not keys.valid_id(endpoint):
        raise NotFound(f"endpoint {endpoint!r} not found: ids are 1-128 letters, digits, '_.:-'")
    if not keys.valid_id(worker):
        raise NotFound(
            f"worker id {worker!r} is invalid: RUNPOD_POD_ID must be 1-128 letters, digits, '_.:-'"
        )
    return endpoint, worker


def _closed(request: web.Request) -> bool:
    """The worker went away, or the gateway is shutting down: a held poll ends."""
    transport = request.transport
    return transport is None or transport.is_closing() or request.app[state.CLOSING].is_set()


# The SDK (1.7.3+) sleeps 5 s after a 429 on job-take: podq's way to say "take nothing now".
BACK_OFF = {"Retry-After": "5"}


async def _take_terms(request: web.Request, endpoint: str, worker: str) -> int | web.Response:
    """The executionTimeout for jobs handed to this worker, or a 429 when it must take none:
    its endpoint is paused, or it asked to be replaced (stopPod) and waits for the scaler."""
    config = await request.app[state.REGISTRY].get_endpoint(endpoint)
    if config is not None and config.paused:
        return error_response(429, f"endpoint {endpoint!r} is paused: no jobs are handed out "
                                   "until it is resumed", BACK_OFF)
    beat = await _store(request).worker(endpoint, worker)
    if beat is not None and beat.recycle:
        return error_response(429, f"worker {worker!r} asked to be replaced (stopPod): it gets no "
                                   "more jobs", BACK_OFF)
    if config is not None:
        return config.execution_timeout_ms
    return request.app[state.SETTINGS].execution_timeout_ms


async def job_take(request: web.Request) -> web.StreamResponse:
    """GET job-take / job-take-batch: hand over up to batch_size jobs, holding while none is
    queued. `job_in_progress=0` means the worker holds nothing: jobs podq thinks it holds were
    lost on the way and go back to the queue first."""
    endpoint, worker = _ids(request)
    batch = request.match_info.route.name == "job-take-batch"
    size = parse_batch_size(request.query.get("batch_size")) if batch else 1
    store = _store(request)
    if request.query.get("job_in_progress") == "0":
        await store.release_runpod_worker(endpoint, worker)
    timeout_ms = await _take_terms(request, endpoint, worker)
    if isinstance(timeout_ms, web.Response):
        return timeout_ms
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.app[state.SETTINGS].runpod_hold_ms / 1000
    while not _closed(request):
        jobs = await store.take_for_runpod(endpoint, worker, size, timeout_ms)
        if jobs:
            return await _hand_over(request, store, jobs, batch)
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await wait_for_work(store.redis, endpoint, min(remaining, RECHECK_S))
    return web.Response(status=204)


async def _hand_over(
    request: web.Request, store: JobStore, jobs: list[TakenJob], batch: bool
) -> web.StreamResponse:
    response = web.Response(body=take_body(jobs, batch), content_type="application/json")
    try:
        await response.prepare(request)
        await response.write_eof()
    except (ConnectionError, RuntimeError):  # the worker went away while its take was held
        for job in jobs:
            await store.requeue(job.id, job.attempt)
    return response


async def _held_job(store: JobStore, endpoint: str, worker: str, job_id: str) -> JobRecord | str:
    """The job if `worker` holds it, else why its post is ignored."""
    record = await store.get(job_id)
    if record is None or record.endpoint != endpoint:
        return f"job {job_id!r} is unknown on endpoint {endpoint!r} (or its result expired)"
    if record.worker_id != worker:
        return f"job {job_id!r} is not held by worker {worker!r} (its lease was lost and it moved on)"
    return record


async def job_done(request: web.Request) -> web.Response:
    """POST job-done: a final result (fenced: only the holder of the current attempt writes it;
    the first one wins) or, with `"status": "IN_PROGRESS"`, a progress update."""
    endpoint, worker = _ids(request)
    job_id = request.match_info["job_id"]
    event = done_event(await read_body(request, RESULT_MAX_BYTES))
    store = _store(request)
    held = await _held_job(store, endpoint, worker, job_id)
    if isinstance(held, str):
        return _json(Accepted(False, held))
    if isinstance(event, Progress):
        ok = await store.progress(job_id, held.attempt, event.output)
        return _json(Accepted(ok, "" if ok else f"job is {held.status}: progress ignored"))
    assert isinstance(event, Final)
    if event.stop_pod:  # before the result is out: whoever sees it sees the worker retiring
        await _ask_to_recycle(store, endpoint, worker)
    result = await store.finish(
        job_id, held.attempt, event.status, output=event.output, error=event.error
    )
    if result.outcome == "ok":
        return _json(Accepted(True))
    return _json(Accepted(False, f"job is already {result.status}: the first result stands"))


async def _ask_to_recycle(store: JobStore, endpoint: str, worker: str) -> None:
    beat = await store.worker(endpoint, worker)
    if beat is not None and not beat.recycle:
        await store.beat(msgspec.structs.replace(beat, recycle=True))


async def job_stream(request: web.Request) -> web.Response:
    """POST job-stream: one chunk, appended in order to the stream /stream and SSE read."""
    endpoint, worker = _ids(request)
    job_id = request.match_info["job_id"]
    chunk = stream_chunk(await read_body(request, CHUNK_MAX_BYTES))
    store = _store(request)
    held = await _held_job(store, endpoint, worker, job_id)
    if isinstance(held, str):
        return _json(Accepted(False, held))
    ok = await store.append_chunks(job_id, held.attempt, [chunk])
    return _json(Accepted(ok, "" if ok else "the job is no longer running: chunk ignored"))


async def ping(request: web.Request) -> web.Response:
    """GET ping: renew the leases of the jobs the worker lists and record it as alive (it
    counts in /health and for the scaler); `status=unhealthy` records why it is not."""
    endpoint, worker = _ids(request)
    store = _store(request)
    report = parse_ping(request.query)
    now = now_ms()
    stuck = await store.ping_runpod_jobs(endpoint, worker, report.job_ids, now)
    old = await store.worker(endpoint, worker)
    interval = request.app[state.SETTINGS].runpod_ping_ms
    await store.beat(next_beat(old, report, endpoint=endpoint, worker_id=worker, now=now,
                               interval_ms=interval, stuck=stuck))
    await store.redis.sadd(keys.ENDPOINTS, endpoint)  # the reapers look after its jobs
    return _json(Pong())


async def job_stop(request: web.Request) -> web.Response:
    """GET job-stop (SDK 1.10+): ids of the worker's jobs that were cancelled or timed out,
    each sent once; held like a take when there are none."""
    endpoint, worker = _ids(request)
    store = _store(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.app[state.SETTINGS].runpod_hold_ms / 1000
    # in slices, so a worker that went away (or a gateway shutting down) ends the hold soon
    while not _closed(request) and (remaining := deadline - loop.time()) > 0:
        ids = await store.pop_stops(endpoint, worker, min(remaining, RECHECK_S))
        if ids:
            return _json(JobsToStop(ids))
    return web.Response(status=204)
