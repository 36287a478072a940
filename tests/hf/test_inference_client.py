"""POST /v2/{endpoint}/hf, driven by the real `huggingface_hub.InferenceClient`.

A real gateway (ThreadedGateway: its own loop, since the client is synchronous) over the real
redis-server, and real `podq worker` processes running examples/hf/handler.py, one per task
(HF_TASK). The pure parts of hf_routes.py (the non-stream body, the error event) have tables
at the end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import msgspec
import pytest
from huggingface_hub import AsyncInferenceClient, InferenceClient
from huggingface_hub.errors import GenerationError, HfHubHTTPError

from serverless.gateway.hf_routes import JOB_HEADER, body_of, error_event
from serverless.model import Status
from serverless.redis_server import RedisProcess
from tests.example_workers import EXAMPLES, ExampleWorker, client_gateway, serving, wait_cancelled
from tests.gateway.conftest import ThreadedGateway

HANDLER = EXAMPLES / "hf" / "handler.py"
CLIENT_KEY = "hf-client-key"
GEN, CLS = "hf-gen", "hf-cls"
PROMPT = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def gateway(redis_server: RedisProcess) -> Iterator[ThreadedGateway]:
    with client_gateway(redis_server.url, CLIENT_KEY) as gateway:
        yield gateway


def _worker(endpoint: str, task: str) -> ExampleWorker:
    env = {"HF_TASK": task, "HF_MODEL_ID": "podq/echo-model", "PODQ_ECHO_DELAY_S": "0.02"}
    return ExampleWorker(endpoint, f"{endpoint}-w0", env)


@pytest.fixture(scope="module")
def workers(gateway: ThreadedGateway) -> Iterator[None]:
    with serving(gateway, HANDLER, _worker(GEN, "text-generation"), _worker(CLS, "text-classification")):
        yield


@pytest.fixture
def client(gateway: ThreadedGateway, workers: None) -> InferenceClient:
    return InferenceClient(base_url=f"{gateway.url}/v2/{GEN}/hf", token=CLIENT_KEY, timeout=30)


def test_text_generation_answers_the_generated_text(client: InferenceClient) -> None:
    assert client.text_generation(PROMPT) == PROMPT
    assert client.text_generation(PROMPT, max_new_tokens=3) == "the quick brown"


def test_text_generation_streams_tokens_as_they_come(client: InferenceClient) -> None:
    tokens = list(client.text_generation(PROMPT, stream=True))
    assert tokens == ["the", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog"]
    details = list(client.text_generation(PROMPT, stream=True, details=True, max_new_tokens=4))
    assert [d.token.text for d in details] == ["the", " quick", " brown", " fox"]
    assert details[-1].generated_text == "the quick brown fox"
    assert details[-1].details is not None and details[-1].details.finish_reason == "length"


def test_text_classification(gateway: ThreadedGateway, workers: None) -> None:
    classify = InferenceClient(base_url=f"{gateway.url}/v2/{CLS}/hf", token=CLIENT_KEY, timeout=30)
    labels = classify.text_classification("I love this great movie")
    assert [x.label for x in labels] == ["POSITIVE", "NEGATIVE"] and labels[0].score == 0.75


def test_chat_completion_takes_the_openai_path_under_hf(client: InferenceClient) -> None:
    reply = client.chat_completion([{"role": "user", "content": "hello there"}])
    assert reply.choices[0].message.content == "hello there"
    assert reply.model == "podq/echo-model"  # HF_MODEL_ID reached the worker
    streamed = client.chat_completion([{"role": "user", "content": PROMPT}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == PROMPT


def test_the_async_client_generates_and_streams(gateway: ThreadedGateway, workers: None) -> None:
    async def main() -> tuple[str, list[str]]:
        aclient = AsyncInferenceClient(base_url=f"{gateway.url}/v2/{GEN}/hf", token=CLIENT_KEY)
        whole = await aclient.text_generation("hello async world")
        parts = [t async for t in await aclient.text_generation("a b c", stream=True)]
        await aclient.close()
        return whole, parts

    assert asyncio.run(main()) == ("hello async world", ["a", " b", " c"])


def test_a_handler_error_is_an_http_error_or_tgis_error_event(client: InferenceClient) -> None:
    with pytest.raises(HfHubHTTPError, match="the GPU melted") as caught:
        client.text_generation("!fail the GPU melted")
    assert caught.value.response.status_code == 500
    with pytest.raises(HfHubHTTPError, match="the GPU melted"):  # nothing streamed yet
        list(client.text_generation("!fail the GPU melted", stream=True))
    got: list[str] = []
    with pytest.raises(GenerationError, match="!boom at token 2"):
        for token in client.text_generation("one two !boom three", stream=True):
            got.append(token)
    assert got == ["one", " two"]


def test_a_wrong_key_is_refused(gateway: ThreadedGateway, workers: None) -> None:
    bad = InferenceClient(base_url=f"{gateway.url}/v2/{GEN}/hf", token="wrong")
    with pytest.raises(HfHubHTTPError) as caught:
        bad.text_generation(PROMPT)
    assert caught.value.response.status_code == 401


def _post(gateway: ThreadedGateway, path: str, content: bytes) -> httpx.Response:
    return httpx.post(f"{gateway.url}{path}", content=content, timeout=10,
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"})


@pytest.mark.parametrize("body,message", [
    (b"{not json", "invalid JSON in the request body"),
    (b'"just text"', "the request body must be a JSON object with `inputs`, not str"),
    (b'{"parameters": {}}', "Object missing required field `inputs`"),
    (b'{"inputs": "x", "stream": "yes"}', "Expected `bool | null`, got `str` - at `$.stream`"),
    (b'{"inputs": "x", "parameters": [1]}', "Expected `object | null`, got `array`"),
])
def test_a_bad_body_is_a_400_naming_the_fix(gateway: ThreadedGateway, workers: None, body, message) -> None:
    reply = _post(gateway, f"/v2/{GEN}/hf", body)
    assert reply.status_code == 400 and message in reply.json()["error"]


def test_an_unknown_endpoint_is_a_404(gateway: ThreadedGateway) -> None:
    reply = _post(gateway, "/v2/nobody-serves-this/hf", b'{"inputs": "x"}')
    assert reply.status_code == 404 and "nobody-serves-this" in reply.json()["error"]


def test_every_answer_names_its_job_and_its_input_is_the_body(gateway: ThreadedGateway, workers: None) -> None:
    body = b'{"inputs": "hi there", "parameters": {"max_new_tokens": 1}, "extra": [1]}'
    reply = _post(gateway, f"/v2/{GEN}/hf", body)
    assert reply.json() == [{"generated_text": "hi"}]
    record = gateway.run(gateway.store.get(reply.headers[JOB_HEADER]))
    assert record.status is Status.COMPLETED and bytes(record.input) == body  # byte for byte


def test_a_stream_the_client_closes_early_cancels_its_job(gateway: ThreadedGateway, workers: None) -> None:
    long = " ".join(f"w{i}" for i in range(2_000))  # 40 s at 20 ms a word
    body = msgspec.json.encode({"inputs": long, "parameters": {"max_new_tokens": 2_000}, "stream": True})
    with httpx.stream("POST", f"{gateway.url}/v2/{GEN}/hf", content=body, timeout=10,
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as response:
        job_id = response.headers[JOB_HEADER]
        for i, _ in enumerate(response.iter_lines()):
            if i == 6:
                break
    wait_cancelled(gateway, job_id)


# ---- the pure parts ------------------------------------------------------------------------


@pytest.mark.parametrize("output,chunks,body", [
    (b'[{"generated_text":"x"}]', [], b'[{"generated_text":"x"}]'),  # returned: as it is
    (b'[[{"generated_text":"x"}]]', [b'[{"generated_text":"x"}]'], b'[{"generated_text":"x"}]'),
    (b"[]", [b'[{"generated_text":"x"}]'], b'[{"generated_text":"x"}]'),  # no aggregate kept
    (b"[]", [b'{"a":1}', b'{"a":2}'], b'[{"a":1},{"a":2}]'),  # several yields: the list
    (b'"text"', [], b'"text"'),
    (None, [], b"null"),
])
def test_the_body_is_what_the_handler_returned_or_yielded(output, chunks, body) -> None:
    assert body_of(output, chunks) == body


def test_the_error_event_is_tgis() -> None:
    assert error_event('bad "input"') == b'data: {"error":"bad \\"input\\"","error_type":"generation"}\n\n'
