"""A Hugging Face-style handler without a model: it answers in TGI's and the pipelines' shapes.

podq's /v2/{endpoint}/hf route (serverless/gateway/hf_routes.py) makes the request body
`{"inputs", "parameters", "stream"}` the job's input and answers with what the handler returns
or yields, so `huggingface_hub.InferenceClient(base_url=.../v2/<endpoint>/hf)` works against
it. The task is HF_TASK (set from `task=` by serverless.hf.create_inference_endpoint; default
text-generation), the model's name HF_MODEL_ID (from `repository=`):

- text-generation: the prompt's words, echoed, at most `max_new_tokens` (default 20); with
  `return_full_text` the prompt comes first. Whole: `[{"generated_text": ...}]`. Streamed:
  one TGI chunk per word, `{"token": {"id", "text", "logprob", "special"}, "generated_text":
  null, "details": null}`, the last with the whole text and `details.finish_reason`.
- text-classification: `[[{"label", "score"}, ...]]`, POSITIVE or NEGATIVE by counting words
  of two small lists, best first (InferenceClient.text_classification reads the first list).
- chat (`openai_route` /v1/chat/completions, from /hf/v1/chat/completions): the last user
  message, as one `chat.completion` or as `chat.completion.chunk`s; `model` is HF_MODEL_ID
  and `system_fingerprint` HF_MODEL_REVISION, so a test sees what reached the worker.

A prompt starting with `!fail ` raises with the rest as the error before anything is sent; a
word `!boom` raises when generation reaches it (after the words before it were streamed).
PODQ_ECHO_DELAY_S (default 0) pauses between words, as a model's tokens would come.

    podq dev examples/hf/handler.py
    InferenceClient(base_url="http://127.0.0.1:8000/v2/dev/hf", token=...).text_generation("hi")
"""

import asyncio
import os
import time
import uuid

import serverless

TASK = os.environ.get("HF_TASK", "text-generation")
MODEL = os.environ.get("HF_MODEL_ID", "podq-hf-echo")
REVISION = os.environ.get("HF_MODEL_REVISION", "")
DELAY_S = float(os.environ.get("PODQ_ECHO_DELAY_S", "0"))
FAIL, BOOM = "!fail ", "!boom"
POSITIVE = frozenset({"good", "great", "love", "like", "happy", "excellent", "nice"})
NEGATIVE = frozenset({"bad", "awful", "hate", "sad", "terrible", "poor", "boring"})


def _words(prompt, parameters):
    limit = parameters.get("max_new_tokens") or 20
    return prompt.split()[:limit]


def _token(index, text, last=None):
    """One TGI stream chunk; the last carries the whole text and the finish reason."""
    chunk = {"index": index, "token": {"id": index, "text": text, "logprob": 0.0, "special": False},
             "generated_text": None, "details": None}
    if last is not None:
        generated_text, count, reason = last
        chunk["generated_text"] = generated_text
        chunk["details"] = {"finish_reason": reason, "generated_tokens": count, "seed": None}
    return chunk


async def _generate(body):
    prompt = body.get("inputs") if isinstance(body.get("inputs"), str) else ""
    parameters = body.get("parameters") or {}
    if prompt.startswith(FAIL):
        raise RuntimeError(prompt.removeprefix(FAIL))
    words = _words(prompt, parameters)
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    text = (prompt + " " if parameters.get("return_full_text") else "") + " ".join(words)
    reason = "length" if len(words) < len(prompt.split()) else "eos_token"
    if not body.get("stream"):
        if BOOM in words:
            raise RuntimeError(f"{BOOM} at token {words.index(BOOM)}")
        yield [{"generated_text": text}]
        return
    for i, piece in enumerate(pieces):
        if piece.strip() == BOOM:
            raise RuntimeError(f"{BOOM} at token {i}")
        await asyncio.sleep(DELAY_S)
        yield _token(i, piece, (text, len(words), reason) if i == len(pieces) - 1 else None)


def _classify(body):
    words = str(body.get("inputs", "")).lower().split()
    good = sum(w.strip(".,!?") in POSITIVE for w in words)
    bad = sum(w.strip(".,!?") in NEGATIVE for w in words)
    score = (good + 1) / (good + bad + 2)  # Laplace: 0.5 when no word of either list is seen
    labels = [{"label": "POSITIVE", "score": score}, {"label": "NEGATIVE", "score": 1 - score}]
    return [sorted(labels, key=lambda x: -x["score"])]


def _last_user_text(messages):
    for message in reversed(messages or []):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return ""


async def _chat(body):
    text = _last_user_text(body.get("messages"))
    if text.startswith(FAIL):
        raise RuntimeError(text.removeprefix(FAIL))
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": MODEL,
            "system_fingerprint": REVISION}
    if not body.get("stream"):
        message = {"role": "assistant", "content": text}
        yield {**head, "object": "chat.completion", "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": len(text.split()),
                      "total_tokens": len(text.split())}}
        return
    words = text.split()
    for i, word in enumerate(words):
        await asyncio.sleep(DELAY_S)
        delta = {"role": "assistant", "content": word if i == 0 else " " + word}
        finish = "stop" if i == len(words) - 1 else None
        yield {**head, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


async def handler(job):
    body = job["input"]
    route = body.get("openai_route")
    if route == "/v1/chat/completions":
        answer = _chat(body.get("openai_input") or {})
    elif route is not None:
        raise ValueError(f"route {route!r} is not served; InferenceClient calls /v1/chat/completions")
    elif TASK == "text-classification":
        yield _classify(body)
        return
    else:
        answer = _generate(body)
    async for item in answer:
        yield item


if __name__ == "__main__":
    # the aggregate is the chat route's answer (openai_routes.py reads the output); the /hf
    # route reads what was yielded either way
    serverless.start({"handler": handler, "return_aggregate_stream": True})
