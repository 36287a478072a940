"""Many SSE streams on one gateway through its shared chunk reader: every client gets every
chunk in order and its final status; a stalled client delays nobody and still gets all; resume
with Last-Event-ID; the reader's Redis connection killed mid-stream loses no chunk."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import msgspec
import pytest

from serverless.client.events import SSEDecoder, SSEEvent
from serverless.model import Status
from serverless.settings import Settings
from serverless.store import JobStore
from tests.gateway.conftest import ADMIN_KEY, Gateway

SSE = {"Accept": "text/event-stream", "Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def settings(redis_url: str) -> Settings:
    # the tests hold jobs as an in-test worker that does not renew leases: keep them long
    return Settings(redis_url=redis_url, lease_ms=120_000, heartbeat_ms=300)


async def running_jobs(gateway: Gateway, store: JobStore, endpoint: str, n: int) -> list[tuple[str, int]]:
    ids = [(await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": i})).body["id"]
           for i in range(n)]
    taken = {t.id: t.attempt for t in await store.take_many(endpoint, "w", n)}
    return [(job_id, taken[job_id]) for job_id in ids]


def outputs(events: list[SSEEvent]) -> list[object]:
    return [msgspec.json.decode(e.data)["output"] for e in events if e.event == "message"]


def final_status(events: list[SSEEvent]) -> str:
    assert events[-1].event == "status", events[-1]
    return msgspec.json.decode(events[-1].data)["status"]


class Client:
    """One open SSE stream, read into `events` until the server ends it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response, self.events, self.decoder = response, [], SSEDecoder()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> list[SSEEvent]:
        async for data in self.response.content.iter_any():
            self.events.extend(self.decoder.feed(data))
        return self.events

    async def close(self) -> None:
        """Drop the connection, as a client that goes away does."""
        self.response.close()
        await asyncio.gather(self.task, return_exceptions=True)

    async def until(self, n: int, timeout: float = 5.0) -> list[SSEEvent]:
        async def wait() -> None:
            while len(self.events) < n and not self.task.done():
                await asyncio.sleep(0.005)

        await asyncio.wait_for(wait(), timeout)
        return self.events


async def open_stream(gateway: Gateway, endpoint: str, job_id: str, **headers: str) -> Client:
    url = f"{gateway.url}/v2/{endpoint}/stream/{job_id}"
    response = await gateway.session.get(url, headers={**SSE, **headers})
    assert response.status == 200, await response.text()
    return Client(response)


@pytest.mark.usefixtures("registered")
async def test_200_streams_each_get_every_chunk_in_order_and_the_final_status(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    jobs = await running_jobs(gateway, store, endpoint, 200)
    clients = await asyncio.gather(*(open_stream(gateway, endpoint, j) for j, _ in jobs))
    for n in range(3):
        for i, (job_id, attempt) in enumerate(jobs):
            await store.append_chunks(job_id, attempt, [b'{"job":%d,"n":%d}' % (i, n)])
        await asyncio.gather(*(c.until(n + 1) for c in clients))  # live, before the jobs end
    for job_id, attempt in jobs:
        await store.finish(job_id, attempt, Status.COMPLETED, output=b'"done"')
    results = await asyncio.wait_for(asyncio.gather(*(c.task for c in clients)), 30)
    for i, events in enumerate(results):
        assert outputs(events) == [{"job": i, "n": n} for n in range(3)]
        assert final_status(events) == "COMPLETED"


async def stalled_stream(gateway: Gateway, endpoint: str, job_id: str) -> socket.socket:
    """An SSE request on a socket nobody reads (a small receive buffer) until read_all."""
    host, port = gateway.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    request = (f"GET /v2/{endpoint}/stream/{job_id} HTTP/1.1\r\nHost: {host}\r\n"
               f"Accept: text/event-stream\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\n")
    await loop.sock_sendall(sock, request.encode())
    return sock


async def read_all(sock: socket.socket) -> list[SSEEvent]:
    """Read the stalled stream to its final event (HTTP/1.1 chunked transfer encoding)."""
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    decoder, events = SSEDecoder(), []
    while not (events and events[-1].event == "status"):
        size = int((await reader.readline()).strip(), 16)
        events += decoder.feed((await reader.readexactly(size + 2))[:-2])
    writer.close()
    return events


@pytest.mark.usefixtures("registered")
async def test_a_stalled_client_delays_no_other_and_still_gets_every_chunk(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    (slow_job, slow_attempt), *others = await running_jobs(gateway, store, endpoint, 11)
    stalled = await stalled_stream(gateway, endpoint, slow_job)
    clients = await asyncio.gather(*(open_stream(gateway, endpoint, j) for j, _ in others))
    big = b'"' + b"x" * 250_000 + b'"'
    for k in range(120):  # 30 MB: far past the socket buffers and the stream's own buffer
        await store.append_chunks(slow_job, slow_attempt, [b'{"k":%d,"pad":%s}' % (k, big)])
    await asyncio.sleep(0.3)  # the stalled stream's write is stuck by now
    started = time.monotonic()
    for job_id, attempt in others:
        await store.append_chunks(job_id, attempt, [b'"fast"'])
    await asyncio.gather(*(c.until(1, timeout=3) for c in clients))
    assert time.monotonic() - started < 1.0
    assert all(outputs(c.events) == ["fast"] for c in clients)
    await store.finish(slow_job, slow_attempt, Status.COMPLETED, output=b"null")
    events = await asyncio.wait_for(read_all(stalled), 30)
    assert [o["k"] for o in outputs(events)] == list(range(120))
    assert final_status(events) == "COMPLETED"
    for job_id, attempt in others:
        await store.finish(job_id, attempt, Status.COMPLETED, output=b"null")
    await asyncio.gather(*(c.task for c in clients))


@pytest.mark.usefixtures("registered")
async def test_resume_with_last_event_id_while_the_job_runs(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    [(job_id, attempt)] = await running_jobs(gateway, store, endpoint, 1)
    await store.append_chunks(job_id, attempt, [b"1", b"2", b"3"])
    first = await open_stream(gateway, endpoint, job_id)
    seen = await first.until(3)
    await first.close()  # the connection drops after chunk 3
    await store.append_chunks(job_id, attempt, [b"4"])
    again = await open_stream(gateway, endpoint, job_id, **{"Last-Event-ID": seen[1].id or ""})
    assert outputs(await again.until(2)) == [3, 4]
    # a second client of the same job, from the start: the shared feed is ahead of it
    late = await open_stream(gateway, endpoint, job_id, **{"Last-Event-ID": "0-0"})
    assert outputs(await late.until(4)) == [1, 2, 3, 4]
    await store.append_chunks(job_id, attempt, [b"5"])
    await store.finish(job_id, attempt, Status.COMPLETED, output=b"null")
    for client, expected in ((again, [3, 4, 5]), (late, [1, 2, 3, 4, 5])):
        events = await asyncio.wait_for(client.task, 5)
        assert outputs(events) == expected and final_status(events) == "COMPLETED"


@pytest.mark.usefixtures("registered")
async def test_streams_open_and_close_while_others_wait(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    jobs = await running_jobs(gateway, store, endpoint, 40)
    waiting = [await open_stream(gateway, endpoint, j) for j, _ in jobs[:20]]
    await asyncio.sleep(0.2)  # the shared read is blocked on their keys
    leaving = [await open_stream(gateway, endpoint, j) for j, _ in jobs[20:30]]
    await asyncio.gather(*(c.close() for c in leaving))
    started = time.monotonic()
    joining = await asyncio.gather(*(open_stream(gateway, endpoint, j) for j, _ in jobs[30:]))
    for i, (job_id, attempt) in enumerate(jobs[20:], 20):  # nothing for the waiting ones yet
        await store.append_chunks(job_id, attempt, [b"%d" % i])
    for i, c in enumerate(joining, 30):
        assert outputs(await c.until(1)) == [i]
    assert time.monotonic() - started < 1.0  # not once the blocked read timed out (2 s)
    for i, (job_id, attempt) in enumerate(jobs[:20]):
        await store.append_chunks(job_id, attempt, [b"%d" % i])
    for i, c in enumerate(waiting):
        assert outputs(await c.until(1)) == [i]
    for job_id, attempt in jobs:
        await store.finish(job_id, attempt, Status.COMPLETED, output=b"null")
    await asyncio.gather(*(c.task for c in waiting + joining))


@pytest.mark.usefixtures("registered")
async def test_the_shared_readers_connection_killed_mid_stream_loses_no_chunk(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    jobs = await running_jobs(gateway, store, endpoint, 5)
    clients = await asyncio.gather(*(open_stream(gateway, endpoint, j) for j, _ in jobs))
    for n in range(4):
        await asyncio.sleep(0.1)  # the reader is blocked again (or reconnecting)
        for c in await store.redis.client_list():
            if c["cmd"] == "xread":
                await store.redis.client_kill_filter(_id=c["id"])
        for job_id, attempt in jobs:
            await store.append_chunks(job_id, attempt, [b"%d" % (2 * n), b"%d" % (2 * n + 1)])
    for job_id, attempt in jobs:
        await store.finish(job_id, attempt, Status.COMPLETED, output=b"null")
    for events in await asyncio.wait_for(asyncio.gather(*(c.task for c in clients)), 10):
        assert outputs(events) == list(range(8)) and final_status(events) == "COMPLETED"
