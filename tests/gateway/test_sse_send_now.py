"""sse.immediate_sender: the shared chunk reader writes a waiting stream's chunks itself, framed
as aiohttp frames them; it declines (None, or False per write) where that framing or the
socket's room is not given. Real aiohttp server, real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from serverless.gateway import sse

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> int:
        app = web.Application()
        app.router.add_get("/s", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_bytes_sent_now_and_by_write_reach_the_client_in_order(serve) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = await sse.prepare(request)
        send = sse.immediate_sender(response)
        assert send is not None
        assert send(b"data: 1\n\n") and send(b"data: 2\n\n")
        await response.write(b"data: 3\n\n")
        assert send(b"data: 4\n\n")
        await response.write_eof()
        return response

    port = await serve(handler)
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/s") as r:
        assert r.headers["Transfer-Encoding"] == "chunked"
        assert await r.read() == b"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n"


async def test_an_unframed_or_compressed_response_gets_no_sender(serve) -> None:
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers=sse.HEADERS)
        if request.query.get("gzip"):
            response.enable_compression(web.ContentCoding.gzip)
        await response.prepare(request)
        seen[request.query.get("gzip") or f"http/{request.version.major}.{request.version.minor}"] = \
            sse.immediate_sender(response)
        await response.write(b"data: x\n\n")
        await response.write_eof()
        return response

    port = await serve(handler)
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/s?gzip=1") as r:
        assert await r.read() == b"data: x\n\n"
    # HTTP/1.0: no chunked framing, the body ends with the connection
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /s HTTP/1.0\r\nHost: x\r\n\r\n")
    raw = await reader.read()
    writer.close()
    assert raw.endswith(b"\r\n\r\ndata: x\n\n")
    assert seen == {"1": None, "http/1.0": None}


async def test_a_client_that_does_not_read_is_refused_once_its_socket_is_backed_up(serve) -> None:
    """Bytes beyond SEND_NOW_LIMIT in the socket's own buffer wait in the subscription's bounded
    buffer (and then in aiohttp's drain), never in an unbounded transport buffer."""
    outcome: dict[str, int] = {}
    done = asyncio.Event()
    payload = b"data: " + b"x" * 16_384 + b"\n\n"

    async def handler(request: web.Request) -> web.StreamResponse:
        response = await sse.prepare(request)
        send = sse.immediate_sender(response)
        assert send is not None
        writes = 0
        while writes < 100_000 and send(payload):
            writes += 1
            if writes % 16 == 0:
                await asyncio.sleep(0)  # let the kernel take what it takes
        assert request.transport is not None
        outcome.update(writes=writes, buffered=request.transport.get_write_buffer_size())
        done.set()
        return response

    port = await serve(handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read the answer
    await asyncio.wait_for(done.wait(), 30)
    writer.close()
    assert 0 < outcome["writes"] < 100_000
    assert outcome["buffered"] < sse.SEND_NOW_LIMIT + len(payload) + 16


async def test_a_closed_connection_is_refused(serve) -> None:
    result: list[bool] = []
    closed = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = await sse.prepare(request)
        send = sse.immediate_sender(response)
        assert send is not None
        await closed.wait()
        for _ in range(50):  # until the event loop has seen the peer go
            if not send(b"data: late\n\n"):
                break
            await asyncio.sleep(0.01)
        result.append(send(b"data: late\n\n"))
        return response

    port = await serve(handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    writer.close()
    await writer.wait_closed()
    closed.set()
    for _ in range(100):
        if result:
            break
        await asyncio.sleep(0.02)
    assert result == [False]
