"""/stream: RunPod's draining JSON polls, and live Server-Sent Events with Last-Event-ID resume."""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec
import pytest

from serverless.client.events import SSEDecoder, SSEEvent
from serverless.gateway.sse import format_event
from serverless.model import Status
from serverless.store import JobStore
from tests.gateway.conftest import ADMIN_KEY, Gateway

SSE = {"Accept": "text/event-stream", "Authorization": f"Bearer {ADMIN_KEY}"}


async def started_job(gateway: Gateway, store: JobStore, endpoint: str) -> tuple[str, int]:
    job_id = (await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1})).body["id"]
    taken = await store.take(endpoint, "w")
    return job_id, taken.attempt


async def next_events(response: aiohttp.ClientResponse, decoder: SSEDecoder, n: int) -> list[SSEEvent]:
    """Read until `n` events arrived (at most 3 s: a live push must not wait for the job)."""
    events: list[SSEEvent] = []

    async def read() -> None:
        while len(events) < n:
            data = await response.content.readany()
            assert data, f"stream ended after {events}"
            events.extend(decoder.feed(data))

    await asyncio.wait_for(read(), timeout=3)
    return events


def output_of(event: SSEEvent) -> object:
    return msgspec.json.decode(event.data)["output"]


@pytest.mark.usefixtures("registered")
async def test_polling_returns_each_chunk_once_then_empty_when_done(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    job_id, attempt = await started_job(gateway, store, endpoint)
    path = f"/v2/{endpoint}/stream/{job_id}"
    await store.append_chunks(job_id, attempt, [b'"a"', b'{"b": 2}'])
    first = await gateway.call("GET", path)
    assert first.body == {"status": "IN_PROGRESS", "stream": [{"output": "a"}, {"output": {"b": 2}}]}
    assert (await gateway.call("POST", path)).body == {"status": "IN_PROGRESS", "stream": []}
    await store.append_chunks(job_id, attempt, [b"3"])
    await store.finish(job_id, attempt, Status.COMPLETED, output=b"[]")
    last = await gateway.call("GET", path)
    assert last.body == {"status": "COMPLETED", "stream": [{"output": 3}]}
    # terminal and nothing left: RunPod's client ends its loop on this answer
    assert (await gateway.call("GET", path)).body == {"status": "COMPLETED", "stream": []}


@pytest.mark.usefixtures("registered")
async def test_sse_pushes_each_chunk_live_then_the_final_status(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    job_id, attempt = await started_job(gateway, store, endpoint)
    url = f"{gateway.url}/v2/{endpoint}/stream/{job_id}"
    async with gateway.session.get(url, headers=SSE) as response:
        assert response.status == 200 and response.content_type == "text/event-stream"
        decoder = SSEDecoder()
        await store.append_chunks(job_id, attempt, [b'"first"'])
        [first] = await next_events(response, decoder, 1)  # pushed while the job still runs
        assert output_of(first) == "first" and first.event == "message" and first.id
        await store.append_chunks(job_id, attempt, [b'"second"'])
        [second] = await next_events(response, decoder, 1)
        assert output_of(second) == "second"
        await store.finish(job_id, attempt, Status.COMPLETED, output=b'"done"')
        [final] = await next_events(response, decoder, 1)
        assert final.event == "status"
        body = msgspec.json.decode(final.data)
        assert body["status"] == "COMPLETED" and body["output"] == "done" and body["id"] == job_id
        assert await response.content.read() == b""  # and the response ends


@pytest.mark.usefixtures("registered")
async def test_sse_final_status_is_pushed_when_the_job_ends_not_when_a_wait_times_out(
    make_gateway, store: JobStore, endpoint: str
) -> None:
    gateway = await make_gateway(sse_block_ms=60_000)  # a wait for chunks lasts a minute
    job_id, attempt = await started_job(gateway, store, endpoint)
    url = f"{gateway.url}/v2/{endpoint}/stream/{job_id}"
    async with gateway.session.get(url, headers=SSE) as response:
        decoder = SSEDecoder()
        await store.append_chunks(job_id, attempt, [b'"only"'])
        [chunk] = await next_events(response, decoder, 1)
        assert output_of(chunk) == "only"
        await store.finish(job_id, attempt, Status.COMPLETED, output=b'"done"')
        [final] = await next_events(response, decoder, 1)  # within 3 s, not 60
        assert final.event == "status" and msgspec.json.decode(final.data)["status"] == "COMPLETED"


@pytest.mark.usefixtures("registered")
async def test_sse_resumes_after_last_event_id(gateway: Gateway, store: JobStore, endpoint: str) -> None:
    job_id, attempt = await started_job(gateway, store, endpoint)
    await store.append_chunks(job_id, attempt, [b"1", b"2", b"3"])
    await store.finish(job_id, attempt, Status.COMPLETED, output=b"null")
    url = f"{gateway.url}/v2/{endpoint}/stream/{job_id}"
    async with gateway.session.get(url, headers=SSE) as response:
        events = SSEDecoder().feed(await response.read())
    assert [output_of(e) for e in events[:3]] == [1, 2, 3] and events[3].event == "status"
    resume = {**SSE, "Last-Event-ID": events[0].id}
    async with gateway.session.get(url, headers=resume) as response:
        again = SSEDecoder().feed(await response.read())
    assert [output_of(e) for e in again[:2]] == [2, 3] and [e.event for e in again] == [
        "message", "message", "status",
    ]


@pytest.mark.usefixtures("registered")
async def test_sse_does_not_move_the_polling_cursor(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    job_id, attempt = await started_job(gateway, store, endpoint)
    await store.append_chunks(job_id, attempt, [b"1"])
    await store.finish(job_id, attempt, Status.COMPLETED, output=b"null")
    async with gateway.session.get(f"{gateway.url}/v2/{endpoint}/stream/{job_id}", headers=SSE) as r:
        await r.read()
    polled = await gateway.call("GET", f"/v2/{endpoint}/stream/{job_id}")
    assert polled.body == {"status": "COMPLETED", "stream": [{"output": 1}]}


@pytest.mark.usefixtures("registered")
async def test_sse_ends_with_cancelled(gateway: Gateway, store: JobStore, endpoint: str) -> None:
    job_id, attempt = await started_job(gateway, store, endpoint)
    url = f"{gateway.url}/v2/{endpoint}/stream/{job_id}"
    async with gateway.session.get(url, headers=SSE) as response:
        decoder = SSEDecoder()
        await store.append_chunks(job_id, attempt, [b"1"])
        await next_events(response, decoder, 1)
        await gateway.call("POST", f"/v2/{endpoint}/cancel/{job_id}")
        [final] = await next_events(response, decoder, 1)
    assert final.event == "status" and msgspec.json.decode(final.data)["status"] == "CANCELLED"


async def test_sse_of_unknown_job_is_404_json(gateway: Gateway, endpoint: str) -> None:
    answer = await gateway.call("GET", f"/v2/{endpoint}/stream/nope", headers={"Accept": "text/event-stream"})
    assert answer.status == 404 and "not found" in answer.body["error"]


@pytest.mark.parametrize(
    "data,kw,expected",
    [
        (b'{"output":1}', {"event_id": "5-0"}, b'id: 5-0\ndata: {"output":1}\n\n'),
        (b"{}", {"event": "status"}, b"event: status\ndata: {}\n\n"),
        (b'{\n"a":\r\n1}', {}, b'data: {\ndata: "a":\ndata: 1}\n\n'),  # a JSON line break
    ],
)
def test_format_event(data: bytes, kw: dict[str, str], expected: bytes) -> None:
    assert format_event(data, **kw) == expected
    [event] = SSEDecoder().feed(expected)
    assert msgspec.json.decode(event.data) == msgspec.json.decode(data)
