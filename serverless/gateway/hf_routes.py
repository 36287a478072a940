"""Hugging Face-style inference: POST /v2/{endpoint_id}/hf (and /hf/v1/chat/completions).

`huggingface_hub.InferenceClient(base_url=<gateway>/v2/<endpoint>/hf, token=<key>)` calls
these routes (huggingface_hub 2.x, inference/_providers/hf_inference.py: a URL given as the
model is posted to as it is, except chat, which appends `/v1/chat/completions`):

- POST /hf: the body `{"inputs", "parameters"?, "stream"?, ...}` (every task but chat) is the
  job's input, byte for byte. The handler answers in the task's own shape (text-generation:
  `[{"generated_text": ...}]`; text-classification: `[[{"label", "score"}, ...]]`; ...):
    - without `stream`, the job is waited for as /runsync waits (`?wait=` ms, default 90 s)
      and the body is the handler's output as it is. A generator handler's body is what it
      yielded: its one item, or the list of its items (return_aggregate_stream or not), so
      the same handler can stream and answer whole.
    - with `"stream": true`, the answer is text/event-stream: `data: <chunk>` per yielded
      chunk the moment the worker appends it (TGI's `{"token": {...}, "generated_text",
      "details"}`), then `data: [DONE]`. A job that fails after its first chunk ends with
      TGI's error event `data: {"error": "...", "error_type": "generation"}`, which
      InferenceClient raises as GenerationError; one that fails before is a JSON error.
  Errors are podq's `{"error": "..."}` with the status (400 bad body, 404 unknown endpoint,
  500 handler error, 504 no result within the wait: the job is cancelled). A client that hangs
  up on a stream cancels the job, as on the OpenAI route.
- POST /hf/v1/chat/completions: chat_completion's path; the OpenAI route's handler answers it
  (openai_routes.py: job input `{"openai_route": "/v1/chat/completions", "openai_input"}`).

The streaming pump is the OpenAI route's (the shared chunk reader, sse.prepare, [DONE]); only
the error event at the end is TGI's instead of OpenAI's.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from serverless.errors import BadRequest
from serverless.gateway import openai_routes, routes, state
from serverless.gateway.limits import read_body
from serverless.gateway.openai_routes import JOB_HEADER, CompletionBody, OpenAIErrorReply
from serverless.gateway.openapi import Param, Route
from serverless.model import RunRequest

BASE = "/v2/{endpoint_id}/hf"
# TGI's error kinds (text-generation-inference, router/src/server.rs); InferenceClient maps
# "generation" to GenerationError
ERROR_TYPE = "generation"
_encode = msgspec.json.Encoder().encode
_CHUNKS_READ = 10_000  # the most chunks a non-stream answer gathers


class HFBody(msgspec.Struct):
    """What the gateway reads of an HF inference request: `inputs` (required, any JSON),
    `parameters` (an object) and `stream`. Other fields go to the handler as they were sent."""

    inputs: Any
    parameters: dict[str, Any] | None = None
    stream: bool | None = None


class HFError(msgspec.Struct):
    """A TGI error, as InferenceClient parses it (`error_type` picks the exception)."""

    error: str
    error_type: str = ERROR_TYPE


def body_of(output: bytes | None, chunks: list[bytes]) -> bytes:
    """The answer's body for a finished job: what a generator yielded (one item as it is,
    several as a JSON list), else the output the handler returned (`null` for none)."""
    if len(chunks) == 1:
        return chunks[0]
    if chunks:
        return b"[" + b",".join(chunks) + b"]"
    return output if output is not None else b"null"


def error_event(message: str) -> bytes:
    """TGI's SSE error event: InferenceClient raises GenerationError with `message`."""
    return b"data: " + _encode(HFError(message)) + b"\n\n"


def _json(status: int, body: bytes, job_id: str) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json",
                        headers={JOB_HEADER: job_id})


def _error(status: int, message: str, job_id: str) -> web.Response:
    return _json(status, _encode({"error": message}), job_id)


async def _body(request: web.Request) -> tuple[bytes, bool]:
    """The raw body (a JSON object with `inputs`) and whether it asks for a stream; 400 else."""
    raw = await read_body(request, request.app[state.LIMITS].runsync_max_bytes)
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as e:
        raise BadRequest(f"invalid JSON in the request body: {e}; send a JSON object "
                         '{"inputs": ..., "parameters": {...}} (binary inputs as base64)') from None
    if not isinstance(value, dict):
        raise BadRequest(f"the request body must be a JSON object with `inputs`, not "
                         f"{type(value).__name__}")
    try:
        body = msgspec.convert(value, HFBody)
    except msgspec.ValidationError as e:
        raise BadRequest(f"invalid request body: {e}; send {{\"inputs\": ..., \"parameters\": "
                         "{...}, \"stream\": true|false}") from None
    return raw, body.stream is True


async def _answer_when_done(request: web.Request, endpoint: str, job: RunRequest) -> web.Response:
    """Submit, wait as /runsync does, and answer the output; on timeout cancel the job (504)."""
    record = await openai_routes.completed_job(request, endpoint, job, _error)
    if isinstance(record, web.Response):
        return record
    chunks = await request.app[state.STORE].read_chunks(record.id, count=_CHUNKS_READ)
    output = bytes(record.output) if record.output is not None else None
    return _json(200, body_of(output, [bytes(c.output) for c in chunks]), record.id)


class _HFPump(openai_routes.OpenAIPump):
    """The OpenAI route's pump (a chunk per event, [DONE] last), ending a failed job with
    TGI's error event instead of OpenAI's."""

    async def _end(self, status: int, message: str) -> None:
        await self._send(error_event(message))


async def inference(request: web.Request) -> web.StreamResponse:
    """POST /v2/{endpoint_id}/hf: the body is the job's input; the handler's output answers."""
    endpoint = await routes.known_endpoint_of(request)
    raw, stream = await _body(request)
    job = RunRequest(input=msgspec.Raw(raw))
    if stream:
        return await openai_routes.stream_job(request, endpoint, job, _HFPump, _error)
    return await _answer_when_done(request, endpoint, job)


_WAIT = Param("wait", "query", "non-stream: ms to wait for the result (default 90000, "
              "1000..300000); 504 and the job cancelled when it passes", "integer")
# registered by app.py with the /v2 job routes: the same key check (auth.py, by route name;
# both are open on a public endpoint: auth.OPEN_ON_PUBLIC)
ROUTES: tuple[Route, ...] = (
    Route("hf", ("POST",), BASE, inference,
          "Hugging Face-style inference run by the endpoint's handler: the body is the job's "
          "input; answers the handler's output (JSON) or, with `stream: true`, "
          "text/event-stream", HFBody, errors=(413,), params=(_WAIT,)),
    Route("hf-chat-completions", ("POST",), f"{BASE}/v1/chat/completions",
          openai_routes.chat_completions,
          "InferenceClient.chat_completion's path: the OpenAI chat route, run by the "
          "endpoint's handler", CompletionBody, errors=(413,), params=(_WAIT,),
          error_reply=OpenAIErrorReply),
)
