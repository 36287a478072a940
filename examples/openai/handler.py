"""An OpenAI-compatible handler without a model: it speaks worker-vllm's contract and echoes.

worker-vllm (runpod-workers/worker-vllm) receives `{"openai_route": ..., "openai_input": ...}`
from RunPod's /openai/v1 route and yields OpenAI's objects; this handler does the same, so the
gateway's route (serverless/gateway/openai_routes.py) and the `openai` client can be tried and
tested on a CPU:

- /v1/chat/completions: the last user message, word by word. `stream: true` yields each
  `chat.completion.chunk` as an SSE string (`"data: {...}\\n\\n"`, as worker-vllm yields with
  RAW_OPENAI_OUTPUT=1), then `"data: [DONE]\\n\\n"`; otherwise one `chat.completion`.
- /v1/completions: the prompt, likewise (`text_completion` objects).
- /v1/models: one model, named by PODQ_ECHO_MODEL (default "podq-echo").

A request for another model gets worker-vllm's error object (`{"object": "error", "code": 404}`),
a route it does not serve a 400 one. A message starting with `!fail ` raises with the rest as
the error, to show how a handler's exception reaches the client. PODQ_ECHO_DELAY_S (default 0)
pauses between words, as a model's tokens would come.

    podq dev examples/openai/handler.py
    OpenAI(base_url="http://127.0.0.1:8000/v2/dev/openai/v1", api_key=...)
"""

import asyncio
import json
import os
import time
import uuid

import serverless

MODEL = os.environ.get("PODQ_ECHO_MODEL", "podq-echo")
DELAY_S = float(os.environ.get("PODQ_ECHO_DELAY_S", "0"))
FAIL = "!fail "


def _text(content):
    """A message's text: a string, or OpenAI's list of content parts."""
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _last_user_text(messages):
    for message in reversed(messages or []):
        if message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def _error(message, code, kind):
    return {"object": "error", "message": message, "type": kind, "param": None, "code": code}


def _usage(prompt, words):
    prompt_tokens = len(prompt.split())
    return {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words)}


def _pieces(words):
    """The words as the deltas a model would send: the first bare, the rest after a space."""
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _sse(obj):
    return f"data: {json.dumps(obj)}\n\n"


async def _chat(body):
    prompt = " ".join(_text(m.get("content")) for m in body.get("messages") or [])
    words = _last_user_text(body.get("messages")).split()
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": MODEL}
    if not body.get("stream"):
        message = {"role": "assistant", "content": " ".join(words)}
        yield {**head, "object": "chat.completion", "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(prompt, words)}
        return
    head = {**head, "object": "chat.completion.chunk"}

    def chunk(delta, finish=None):
        return _sse({**head, "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    yield chunk({"role": "assistant", "content": ""})
    for piece in _pieces(words):
        await asyncio.sleep(DELAY_S)
        yield chunk({"content": piece})
    yield chunk({}, "stop")
    if (body.get("stream_options") or {}).get("include_usage"):
        yield _sse({**head, "choices": [], "usage": _usage(prompt, words)})
    yield "data: [DONE]\n\n"


async def _completion(body):
    prompt = body.get("prompt") or ""
    prompt = prompt[0] if isinstance(prompt, list) and prompt else prompt
    prompt = prompt if isinstance(prompt, str) else ""
    words = prompt.split()
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
            "created": int(time.time()), "model": MODEL}
    if not body.get("stream"):
        yield {**head, "choices": [
            {"index": 0, "text": " ".join(words), "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(prompt, words)}
        return
    for piece in _pieces(words):
        await asyncio.sleep(DELAY_S)
        yield _sse({**head, "choices": [
            {"index": 0, "text": piece, "logprobs": None, "finish_reason": None}]})
    yield _sse({**head, "choices": [
        {"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}]})
    yield "data: [DONE]\n\n"


def _models():
    return {"object": "list", "data": [
        {"id": MODEL, "object": "model", "created": int(time.time()), "owned_by": "podq"}]}


async def handler(job):
    route = job["input"].get("openai_route")
    body = job["input"].get("openai_input") or {}
    if route == "/v1/models":
        yield _models()
        return
    if route not in ("/v1/chat/completions", "/v1/completions"):
        yield _error(f"route {route!r} is not served; use /v1/chat/completions, "
                     "/v1/completions or /v1/models", 400, "BadRequestError")
        return
    if body.get("model", MODEL) != MODEL:
        yield _error(f"The model `{body.get('model')}` does not exist; this worker serves "
                     f"`{MODEL}`", 404, "NotFoundError")
        return
    chat = route == "/v1/chat/completions"
    text = _last_user_text(body.get("messages")) if chat else str(body.get("prompt"))
    if text.startswith(FAIL):
        raise RuntimeError(text.removeprefix(FAIL))
    answer = _chat(body) if chat else _completion(body)
    async for item in answer:
        yield item


if __name__ == "__main__":
    serverless.start({"handler": handler, "return_aggregate_stream": True})
