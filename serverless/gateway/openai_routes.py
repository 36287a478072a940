"""RunPod's OpenAI-compatible route: /v2/{endpoint_id}/openai/v1/(chat/)completions, models.

The `openai` client, given `base_url=<gateway>/v2/<endpoint>/openai/v1` and a podq key, calls
these routes; each request becomes one job of the endpoint whose input is worker-vllm's contract
(runpod-workers/worker-vllm, src/handler.py and src/engine.py):

    {"openai_route": "/v1/chat/completions", "openai_input": <the request body>}
    {"openai_route": "/v1/models"}

- `"stream": true`: the answer is `text/event-stream` and every chunk the handler yields goes
  out the moment the worker appends it. worker-vllm yields strings that are already SSE
  (`"data: {...}\\n\\n"`, several events joined when it batches, `data: [DONE]` last), or,
  with RAW_OPENAI_OUTPUT=0, lists of chunk dicts (and no [DONE]); `sse_of_chunk` maps each
  (passed through, or `data: <json>`) and the stream ends with `data: [DONE]` unless the
  handler sent it. Every answer carries X-Podq-Job-Id (for /status, /cancel). The chunks are
  read by the /stream SSE machinery (sse.py's pump over chunk_fanout.py's shared
  reader); only what is written differs. The response is started with the first chunk, so a
  job that fails before yielding anything is answered as a plain OpenAI error with its status.
- otherwise the job is waited for as /runsync waits (`?wait=` ms, default 90 s) and its output
  is the body: the aggregate of a generator (`[obj]`) is unwrapped, a string holding JSON is
  sent as it is, and worker-vllm's `{"object": "error", "code": 400, ...}` becomes that status.
- errors are OpenAI's `{"error": {"message", "type", "param", "code"}}` for everything these
  handlers refuse (bad JSON 400, unknown endpoint 404, handler error 500, no result within the
  wait 504: a gateway timeout, not 408, since the client sent its request in time; the job is
  then cancelled, since no client will ask for it again and the `openai` client retries 5xx).
  A handler's own error object (vLLM's ErrorResponse) is answered with its code as the status.
  401/403/429 come from the auth and rate-limit middlewares, before these handlers run.
- a client that hangs up during a stream cancels its job (store.cancel, as /cancel does): no
  one can read the rest of an OpenAI stream, so the GPU time would be wasted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from serverless.errors import BadRequest, PodqError
from serverless.gateway import routes, sse, state
from serverless.gateway.chunk_fanout import Subscription
from serverless.gateway.limits import read_body
from serverless.gateway.openapi import Param, Route
from serverless.model import TERMINAL_STATUSES, Chunk, JobRecord, RunRequest, Status
from serverless.store import JobStore

BASE = "/v2/{endpoint_id}/openai/v1"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MODELS = "/v1/models"
DONE = b"data: [DONE]\n\n"
# every answer names its job, so a client can ask /status or /cancel about it
JOB_HEADER = "X-Podq-Job-Id"
_DONE_MARK = b"data: [DONE]"
_encode = msgspec.json.Encoder().encode
# https://platform.openai.com/docs/guides/error-codes: the `type` the API sends with a status
_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
    429: "rate_limit_error", 500: "server_error", 503: "service_unavailable", 504: "timeout",
}
# a job that ended without a result: the status it is answered with
_END_STATUS = {Status.FAILED: 500, Status.TIMED_OUT: 504, Status.CANCELLED: 500}


class OpenAIError(msgspec.Struct):
    """The inner object of OpenAI's error body."""

    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class OpenAIErrorReply(msgspec.Struct):
    """OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`."""

    error: OpenAIError


def error_body(status: int, message: str, code: str | int | None = None) -> bytes:
    """OpenAI's error body for `status`, with the `type` OpenAI sends for it."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return _encode(OpenAIErrorReply(OpenAIError(message, kind, None, code)))


def _error(status: int, message: str, job_id: str | None = None) -> web.Response:
    return web.Response(status=status, body=error_body(status, message),
                        content_type="application/json",
                        headers={JOB_HEADER: job_id} if job_id else None)


def _is_error_object(value: object) -> bool:
    """vLLM's ErrorResponse.model_dump(), as worker-vllm yields it: `{"object": "error",
    "message", "type", "param", "code"}` (older vLLM) or `{"error": {...}}` (newer)."""
    if not isinstance(value, dict):
        return False
    nested = set(value) == {"error"} and isinstance(value["error"], dict)
    return value.get("object") == "error" or nested


def _error_of(value: dict[str, Any]) -> tuple[int, bytes]:
    value = value["error"] if set(value) == {"error"} else value
    code = value.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else 500
    message = str(value.get("message", "the handler answered an error"))
    inner = OpenAIError(message, str(value.get("type") or _TYPES.get(status, "server_error")),
                        value.get("param"), code)
    return status, _encode(OpenAIErrorReply(inner))


def sse_of_chunk(chunk: bytes) -> bytes:
    """The SSE bytes for one chunk a handler yielded (its JSON as the worker stored it).

    A string that already starts with `data:` goes out as it is, ending with a blank line;
    another string, a dict, or each item of a list (worker-vllm's batches) becomes
    `data: <json>`; worker-vllm's error object becomes `data: {"error": {...}}`, which the
    `openai` client raises as an APIError.
    """
    value = msgspec.json.decode(chunk)
    if isinstance(value, str) and value.lstrip().startswith("data:"):
        text = value.encode()
        return text if text.endswith(b"\n\n") else text.rstrip(b"\n") + b"\n\n"
    items = value if isinstance(value, list) else [value]
    out = b""
    for item in items:
        body = _error_of(item)[1] if _is_error_object(item) else _encode(item)
        out += b"data: " + body + b"\n\n"
    return out


def ends_stream(sent: bytes) -> bool:
    """True when SSE bytes already carry the `data: [DONE]` event."""
    return _DONE_MARK in sent


def reply_of(output: bytes | None) -> tuple[int, bytes]:
    """The status and JSON body for a finished job's output (non-stream answers).

    A list of one item (a generator's aggregate) is unwrapped; a string holding JSON is sent
    as it is; worker-vllm's error object becomes an OpenAI error with its code as the status.
    """
    if output is None:
        return 500, error_body(500, "the handler finished without an output; return or yield "
                                    "an OpenAI response object")
    value = msgspec.json.decode(output)
    if isinstance(value, list) and len(value) == 1:
        value, output = value[0], _encode(value[0])
    if isinstance(value, str):
        try:
            value = msgspec.json.decode(value)
        except msgspec.DecodeError:
            return 200, output  # a plain string: send it as JSON text
        output = _encode(value)
    if _is_error_object(value):
        return _error_of(value)
    return 200, output


def ended_without_result(record: JobRecord) -> tuple[int, str]:
    """The status and message for a job that ended FAILED, TIMED_OUT or CANCELLED."""
    if record.status is Status.FAILED:
        return 500, record.error or f"job {record.id} failed without an error message"
    if record.status is Status.TIMED_OUT:
        return 504, record.error or f"job {record.id} ran past its execution timeout"
    return 500, f"job {record.id} was cancelled before it finished"


def _openai_errors(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Answer the podq errors a handler raises (unknown endpoint, too large, ...) in OpenAI's
    shape instead of podq's `{"error": "..."}` (error_responses.py, for every other route)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except PodqError as e:
            return _error(e.status_code, str(e))

    wrapped.__doc__, wrapped.__name__ = handler.__doc__, handler.__name__
    return wrapped


def _job_input(route: str, body: Any = None) -> RunRequest:
    value: dict[str, Any] = {"openai_route": route}
    if body is not None:
        value["openai_input"] = body
    return RunRequest(input=msgspec.Raw(_encode(value)))


class CompletionBody(msgspec.Struct):
    """What the gateway reads of a completion request: `stream`. Every other field (model,
    messages, prompt, max_tokens, ...) goes to the handler as it was sent; the handler checks
    them, as worker-vllm does with vLLM's request models."""

    stream: bool | None = None


async def _body(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; 400 for anything else or a non-boolean `stream`."""
    raw = await read_body(request, request.app[state.LIMITS].runsync_max_bytes)
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as e:
        raise BadRequest(f"invalid JSON in the request body: {e}; send a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, not {type(body).__name__}")
    try:
        msgspec.convert(body, CompletionBody)
    except msgspec.ValidationError as e:
        raise BadRequest(f"invalid request body: {e}; `stream` is true or false") from None
    return body


async def completed_job(request: web.Request, endpoint: str, job: RunRequest,
                        error: Callable[[int, str, str], web.Response] | None = None
                        ) -> JobRecord | web.Response:
    """Submit and wait as /runsync does: the COMPLETED record, or the answer to give instead,
    shaped by `error(status, message, job_id)` (default OpenAI's): 504 with the job cancelled
    when ?wait= passes, or why the job ended without a result."""
    store: JobStore = request.app[state.STORE]
    wait_ms = routes.parse_wait(request.query.get("wait"))
    record = await store.submit_and_wait(endpoint, job, wait_ms / 1000)
    answer = error or _error
    if record.status not in TERMINAL_STATUSES:
        await store.cancel(record.id)
        return answer(504, f"no result within {wait_ms} ms (job {record.id}, cancelled); "
                           "send stream=true, or a longer ?wait= (ms, up to 300000)", record.id)
    if record.status is not Status.COMPLETED:
        return answer(*ended_without_result(record), record.id)
    return record


async def _answer_when_done(request: web.Request, endpoint: str, job: RunRequest) -> web.Response:
    """Submit, wait as /runsync does, and answer the output; on timeout cancel the job (504)."""
    record = await completed_job(request, endpoint, job)
    if isinstance(record, web.Response):
        return record
    status, body = reply_of(bytes(record.output) if record.output is not None else None)
    return web.Response(status=status, body=body, content_type="application/json",
                        headers={JOB_HEADER: record.id})


class OpenAIPump(sse._Pump):
    """The /stream SSE pump, writing OpenAI's events: `sse_of_chunk` per chunk, no `id:`, and
    `data: [DONE]` (or an error event) at the end instead of the status event. The response
    starts with the first bytes, so a job that ends with nothing sent is answered as JSON."""

    def __init__(self, request: web.Request, store: JobStore, job_id: str) -> None:
        fanout = request.app[state.CHUNK_FANOUT]
        super().__init__(None, store, fanout, job_id)  # type: ignore[arg-type]
        self.request = request
        self.done = False
        self.unsent: JobRecord | None = None  # ended with nothing sent: answered as JSON

    async def _send_chunks(self, sub: Subscription, chunks: list[Chunk]) -> None:
        data = b"".join([sse_of_chunk(bytes(c.output)) for c in chunks])
        await self._send(data)
        self.done = self.done or ends_stream(data)
        sub.cursor = chunks[-1].cursor

    async def _send(self, data: bytes) -> None:
        if self.response is None:
            self.response = await sse.prepare(self.request, **{JOB_HEADER: self.job_id})
        await super()._send(data)

    async def _ended(self, sub: Subscription) -> bool:
        async with self.fanout.direct_reads:
            record = await self.store.get(self.job_id)
        if record is not None and record.status not in TERMINAL_STATUSES:
            return False
        while chunks := await self._read(sub):
            await self._send_chunks(sub, chunks)
        if record is None:
            await self._end(500, f"job {self.job_id} is gone: its result expired while streaming")
        elif record.status is Status.COMPLETED:
            if self.response is None and record.output is not None:  # returned, did not yield
                await self._send(sse_of_chunk(bytes(record.output)))
            if not self.done:
                await self._send(DONE)
        elif self.response is None:
            self.unsent = record
        else:
            await self._end(*ended_without_result(record))
        return True

    async def _end(self, status: int, message: str) -> None:
        await self._send(b"data: " + error_body(status, message) + b"\n\n")


async def stream_job(request: web.Request, endpoint: str, job: RunRequest,
                     pump_type: type[OpenAIPump] = OpenAIPump,
                     error: Callable[[int, str, str], web.Response] | None = None) -> web.StreamResponse:
    """Submit and stream the job's chunks as SSE (a chunk per event, [DONE] last) with
    `pump_type`; a job that ended before any chunk is answered by `error(status, message,
    job_id)` (default OpenAI's shape). The job is cancelled if the client leaves."""
    store: JobStore = request.app[state.STORE]
    record = await store.submit(endpoint, job)
    pump = pump_type(request, store, record.id)
    try:
        # its own task, as sse.stream_events does: a chunk resumes only the pump's frames
        await asyncio.create_task(pump.run(sse.START, request.app[state.SSE_BLOCK_MS]),
                                  name=f"podq-stream-{record.id}")
    except ConnectionError:  # the client hung up: nobody can read the rest
        await store.cancel(record.id)
        return pump.response or web.Response(status=499)  # 499: nginx's "client closed"
    except asyncio.CancelledError:
        await asyncio.shield(store.cancel(record.id))
        raise
    if pump.unsent is not None:
        return (error or _error)(*ended_without_result(pump.unsent), record.id)
    assert pump.response is not None  # _ended sent [DONE] or an error event
    try:
        await pump.response.write_eof()
    except ConnectionError:
        pass
    return pump.response


async def _completion(request: web.Request, route: str) -> web.StreamResponse:
    endpoint = await routes.known_endpoint_of(request)
    body = await _body(request)
    job = _job_input(route, body)
    if body.get("stream") is True:
        return await stream_job(request, endpoint, job)
    return await _answer_when_done(request, endpoint, job)


@_openai_errors
async def chat_completions(request: web.Request) -> web.StreamResponse:
    """POST /openai/v1/chat/completions: a job for `/v1/chat/completions`, streamed or waited."""
    return await _completion(request, CHAT)


@_openai_errors
async def completions(request: web.Request) -> web.StreamResponse:
    """POST /openai/v1/completions: a job for `/v1/completions`, streamed or waited."""
    return await _completion(request, COMPLETIONS)


@_openai_errors
async def models(request: web.Request) -> web.StreamResponse:
    """GET /openai/v1/models: a job for `/v1/models`; the handler lists its models."""
    endpoint = await routes.known_endpoint_of(request)
    return await _answer_when_done(request, endpoint, _job_input(MODELS))


_WAIT = Param("wait", "query", "non-stream: ms to wait for the result (default 90000, "
              "1000..300000); 504 and the job cancelled when it passes", "integer")
_ANSWERS = "JSON (OpenAI's response object) or, with `stream: true`, text/event-stream"
# registered by app.py with the /v2 job routes: the same key check (auth.py, by route name)
ROUTES: tuple[Route, ...] = (
    Route("openai-chat-completions", ("POST",), f"{BASE}/chat/completions", chat_completions,
          f"OpenAI chat completion, run by the endpoint's handler; answers {_ANSWERS}",
          CompletionBody, errors=(413,), params=(_WAIT,), error_reply=OpenAIErrorReply),
    Route("openai-completions", ("POST",), f"{BASE}/completions", completions,
          f"OpenAI text completion, run by the endpoint's handler; answers {_ANSWERS}",
          CompletionBody, errors=(413,), params=(_WAIT,), error_reply=OpenAIErrorReply),
    Route("openai-models", ("GET",), f"{BASE}/models", models,
          "OpenAI model list, as the endpoint's handler answers it", params=(_WAIT,),
          error_reply=OpenAIErrorReply),
)
