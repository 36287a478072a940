"""RunPod's /openai/v1 route, driven by the real `openai` package.

A real gateway (ThreadedGateway: its own loop, since the `openai` client is also used
synchronously) over the real redis-server, and a real `podq worker` process running
examples/openai/handler.py, which speaks worker-vllm's contract. The pure mappings of
openai_routes.py (chunk -> SSE bytes, output -> body) have table tests at the end.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator

import httpx
import msgspec
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from serverless.gateway.openai_routes import DONE, JOB_HEADER, ends_stream, reply_of, sse_of_chunk
from serverless.model import Status
from serverless.redis_server import RedisProcess
from tests.example_workers import EXAMPLES, ExampleWorker, client_gateway, serving, wait_cancelled
from tests.gateway.conftest import ThreadedGateway

HANDLER = EXAMPLES / "openai" / "handler.py"
CLIENT_KEY = "openai-client-key"  # an ordinary (non-admin) key, as a RunPod user holds
ENDPOINT = "openai-echo"
MODEL = "podq-echo"
PROMPT = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def gateway(redis_server: RedisProcess) -> Iterator[ThreadedGateway]:
    with client_gateway(redis_server.url, CLIENT_KEY) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def worker(gateway: ThreadedGateway) -> Iterator[subprocess.Popen[bytes]]:
    """`podq worker` on the example handler; words come 20 ms apart, as a model's tokens."""
    echo = ExampleWorker(ENDPOINT, "openai-w0", {"PODQ_ECHO_DELAY_S": "0.02"})
    with serving(gateway, HANDLER, echo) as procs:
        yield procs[0]


@pytest.fixture
def client(gateway: ThreadedGateway, worker: subprocess.Popen[bytes]) -> Iterator[OpenAI]:
    # no retries: a 5xx must show as it is, not as a second job
    with OpenAI(base_url=f"{gateway.url}/v2/{ENDPOINT}/openai/v1", api_key=CLIENT_KEY,
                max_retries=0, timeout=30) as client:
        yield client


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "echo"}, {"role": "user", "content": text}]


def test_chat_completion_answers_one_chat_completion_object(client: OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=chat(PROMPT))
    assert reply.object == "chat.completion"
    assert reply.model == MODEL and reply.id.startswith("chatcmpl-")
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == PROMPT
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == len(PROMPT.split())


def test_streamed_chat_completion_comes_in_order_as_chunks(client: OpenAI) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=chat(PROMPT), stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == PROMPT
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 9


def test_text_completion_plain_and_streamed(client: OpenAI) -> None:
    reply = client.completions.create(model=MODEL, prompt=PROMPT)
    assert reply.object == "text_completion" and reply.choices[0].text == PROMPT
    streamed = list(client.completions.create(model=MODEL, prompt=PROMPT, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == PROMPT
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_models_lists_the_handlers_model(client: OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]


def test_the_async_client_streams_too(
        gateway: ThreadedGateway, worker: subprocess.Popen[bytes]) -> None:
    async def main() -> tuple[str, str]:
        async with AsyncOpenAI(base_url=f"{gateway.url}/v2/{ENDPOINT}/openai/v1",
                               api_key=CLIENT_KEY, max_retries=0) as aclient:
            whole = await aclient.chat.completions.create(model=MODEL, messages=chat("hi there"))
            stream = await aclient.chat.completions.create(model=MODEL, messages=chat(PROMPT),
                                                           stream=True)
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            return whole.choices[0].message.content or "", "".join(parts)

    assert asyncio.run(main()) == ("hi there", PROMPT)


def test_a_wrong_key_is_an_authentication_error(
        gateway: ThreadedGateway, worker: subprocess.Popen[bytes]) -> None:
    with OpenAI(base_url=f"{gateway.url}/v2/{ENDPOINT}/openai/v1", api_key="wrong",
                max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


def test_an_unknown_endpoint_is_not_found_in_openais_error_shape(gateway: ThreadedGateway) -> None:
    with OpenAI(base_url=f"{gateway.url}/v2/nobody-serves-this/openai/v1", api_key=CLIENT_KEY,
                max_retries=0) as lost:
        with pytest.raises(openai.NotFoundError) as caught:
            lost.chat.completions.create(model=MODEL, messages=chat(PROMPT))
    assert caught.value.body is not None
    assert caught.value.type == "not_found_error" and "nobody-serves-this" in caught.value.message


def test_a_handler_error_is_an_internal_server_error_with_its_message(client: OpenAI) -> None:
    for stream in (False, True):  # nothing was streamed yet: a plain 500 either way
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model=MODEL, messages=chat("!fail the GPU melted"),
                                           stream=stream)
        assert "the GPU melted" in caught.value.message


def test_the_handlers_error_object_keeps_its_status(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-9", messages=chat(PROMPT))


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"stream": "yes"}'])
def test_a_bad_body_is_a_bad_request_in_openais_error_shape(
        gateway: ThreadedGateway, worker: subprocess.Popen[bytes], body: bytes) -> None:
    # the `openai` client only sends JSON it built itself: a bad body comes from elsewhere
    reply = httpx.post(f"{gateway.url}/v2/{ENDPOINT}/openai/v1/chat/completions", content=body,
                       headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=10)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_a_stream_the_client_closes_early_cancels_its_job(
        client: OpenAI, gateway: ThreadedGateway) -> None:
    long = " ".join(f"w{i}" for i in range(2_000))  # 40 s at 20 ms a word
    with client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=chat(long), stream=True) as response:
        job_id = response.headers[JOB_HEADER]
        for i, _ in enumerate(response.parse()):
            if i == 3:
                break
    wait_cancelled(gateway, job_id)


def test_every_answer_names_its_job(client: OpenAI, gateway: ThreadedGateway) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=chat("hello"))
    record = gateway.run(gateway.store.get(raw.headers[JOB_HEADER]))
    assert record is not None and record.status is Status.COMPLETED
    assert msgspec.json.decode(bytes(record.input))["openai_route"] == "/v1/chat/completions"


# ---- the pure mappings ---------------------------------------------------------------------

def enc(value: object) -> bytes:
    return msgspec.json.encode(value)


@pytest.mark.parametrize(("chunk", "sse"), [
    ('data: {"a": 1}\n\n', b'data: {"a": 1}\n\n'),  # worker-vllm's raw SSE string: as it is
    ('data: {"a": 1}', b'data: {"a": 1}\n\n'),  # ... ending with a blank line
    ('data: {"a": 1}\n', b'data: {"a": 1}\n\n'),
    ('data: {"a":1}\n\ndata: {"a":2}\n\n', b'data: {"a":1}\n\ndata: {"a":2}\n\n'),  # a batch
    ("data: [DONE]\n\n", b"data: [DONE]\n\n"),
    ({"a": 1}, b'data: {"a":1}\n\n'),  # a dict: data: <json>
    ([{"a": 1}, {"a": 2}], b'data: {"a":1}\n\ndata: {"a":2}\n\n'),  # RAW_OPENAI_OUTPUT=0 batch
    ("plain text", b'data: "plain text"\n\n'),
    ({"object": "error", "message": "bad", "type": "BadRequestError", "code": 400},
     b'data: {"error":{"message":"bad","type":"BadRequestError","param":null,"code":400}}\n\n'),
])
def test_sse_of_chunk(chunk: object, sse: bytes) -> None:
    assert sse_of_chunk(enc(chunk)) == sse


@pytest.mark.parametrize(("sent", "ended"), [
    (DONE, True), (b'data: {"a":1}\n\ndata: [DONE]\n\n', True), (b'data: {"a":1}\n\n', False),
])
def test_ends_stream(sent: bytes, ended: bool) -> None:
    assert ends_stream(sent) is ended


@pytest.mark.parametrize(("output", "status", "body"), [
    ([{"id": "x"}], 200, {"id": "x"}),  # a generator's aggregate of one: unwrapped
    ({"id": "x"}, 200, {"id": "x"}),  # a returned object
    ('{"id": "x"}', 200, {"id": "x"}),  # a string holding JSON: sent as it is
    ([{"a": 1}, {"a": 2}], 200, [{"a": 1}, {"a": 2}]),  # several chunks: the list
    ("just text", 200, "just text"),
    ([{"object": "error", "message": "no model", "type": "NotFoundError", "code": 404}], 404,
     {"error": {"message": "no model", "type": "NotFoundError", "param": None, "code": 404}}),
    # newer vLLM: the error object nested
    ({"error": {"message": "no", "type": "BadRequestError", "param": None, "code": 400}}, 400,
     {"error": {"message": "no", "type": "BadRequestError", "param": None, "code": 400}}),
    ({"error": "a string"}, 200, {"error": "a string"}),  # not vLLM's: the handler's own output
    ({"object": "error", "message": "odd", "code": "x"}, 500,
     {"error": {"message": "odd", "type": "server_error", "param": None, "code": "x"}}),
    (None, 500, None),
])
def test_reply_of(output: object, status: int, body: object) -> None:
    got_status, got_body = reply_of(None if output is None else enc(output))
    assert got_status == status
    decoded = msgspec.json.decode(got_body)
    if body is None:
        assert decoded["error"]["type"] == "server_error"
    else:
        assert decoded == body
