"""The hot path (serverless/gateway/hot_path.py): which request heads it serves, and what only it
does on a connection: split reads, pipelining, the hand-over to aiohttp, Connection: close,
keep-alive expiry, shutdown. That its answers are the middlewares' and routes' own is shown by
the rest of tests/gateway, whose gateways (conftest.make_gateway) all run with it; here the
same requests are also sent once through aiohttp (a chunked body is always aiohttp's) and the
two answers compared."""

from __future__ import annotations

import asyncio
import re

import msgspec
import pytest
from aiohttp import web

from serverless.gateway import GatewayOptions, create_app, hot_path
from serverless.gateway.hot_path import HAND_OVER, NEED_MORE, HotRequest, HotSite, parse_head
from serverless.settings import Settings
from serverless.store import JobStore
from tests.gateway.conftest import ADMIN_KEY, Gateway, GatewayFactory, StartWorkers

CAPS = {"run": 1000, "runsync": 2000, "status": hot_path.STATUS_BODY_CAP}
AUTH = f"Authorization: Bearer {ADMIN_KEY}"


def head(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def post(path: str, body: bytes = b'{"input": {}}', *extra: str, auth: bool = True) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *extra]
    return head(*lines, *([AUTH] if auth else []), body=body)


# ---- parse_head: a table -------------------------------------------------------------------


def test_a_run_request_is_parsed() -> None:
    raw = head("POST /v2/ep-1/run HTTP/1.1", "Host: x", "content-length: 13",
               "Authorization: Bearer k", "Authorization: Bearer other")
    parsed = parse_head(raw + b"{}", CAPS)
    assert parsed == HotRequest(route="run", method="POST", endpoint="ep-1", job_id="",
                                path="/v2/ep-1/run", query={},
                                authorization="Bearer k", head_size=len(raw), body_size=13,
                                close=False)


@pytest.mark.parametrize(("method", "length"), [("GET", None), ("POST", "0"), ("POST", "5")])
def test_a_status_request_is_parsed(method: str, length: str | None) -> None:
    lines = [f"{method} /v2/e/status/sync-1 HTTP/1.1", "Host: x"]
    raw = head(*lines, *([f"Content-Length: {length}"] if length else []))
    parsed = parse_head(raw, {**CAPS, "status": 64})
    assert isinstance(parsed, HotRequest)
    assert (parsed.route, parsed.method, parsed.endpoint, parsed.job_id, parsed.body_size) == \
        ("status", method, "e", "sync-1", int(length or 0))


def test_a_runsync_query_keeps_each_names_first_value_and_connection_close_is_read() -> None:
    raw = head("POST /v2/e/runsync?wait=5000&wait=1&x&y= HTTP/1.1", "Content-Length: 0",
               "Connection: keep-alive, Close")
    parsed = parse_head(raw, CAPS)
    assert isinstance(parsed, HotRequest)
    assert parsed.route == "runsync" and parsed.query == {"wait": "5000", "x": "", "y": ""}
    assert parsed.close and parsed.authorization is None


@pytest.mark.parametrize("raw", [
    b"POST /v2/e/run HTTP/1.1\r\nContent-Length: 2\r\n",  # the head is not ended yet
    b"POST /v2/e/ru",
    b"",
])
def test_an_unfinished_head_waits_for_more(raw: bytes) -> None:
    assert parse_head(raw, CAPS) is NEED_MORE


@pytest.mark.parametrize("raw", [
    head("GET /v2/e/run HTTP/1.1", "Content-Length: 0"),  # another method: aiohttp's 405
    head("POST /v2/e/stream/j HTTP/1.1", "Content-Length: 0"),  # another route
    head("GET /v2/e/health HTTP/1.1"),
    head("GET /v2/e/status/ HTTP/1.1"),
    head("GET /v2/e/status/j/x HTTP/1.1"),
    head("DELETE /v2/e/status/j HTTP/1.1"),
    head("GET /v2/e/status/j%2D HTTP/1.1"),
    head("GET /v2/e/status/j HTTP/1.1", "Content-Length: 65537"),  # a big body nobody reads
    head("GET /v2/e/status/j HTTP/1.1", "Transfer-Encoding: chunked"),
    head("POST /v2/e/run/ HTTP/1.1", "Content-Length: 0"),
    head("POST /v1/e/run HTTP/1.1", "Content-Length: 0"),
    head("POST v2/e/run HTTP/1.1", "Content-Length: 0"),
    head("POST /v2/e/run HTTP/1.0", "Content-Length: 0"),  # HTTP/1.0: keep-alive rules differ
    head("POST /v2/e/run  HTTP/1.1", "Content-Length: 0"),  # two spaces
    head("POST /v2/e/run HTTP/1.1", "Transfer-Encoding: chunked"),
    head("POST /v2/e/run HTTP/1.1", "Content-Length: 2", "Transfer-Encoding: chunked"),
    head("POST /v2/e/run HTTP/1.1"),  # no body length
    head("POST /v2/e/run HTTP/1.1", "Content-Length: 2", "Content-Length: 2"),
    head("POST /v2/e/run HTTP/1.1", "Content-Length: +2"),
    head("POST /v2/e/run HTTP/1.1", "Content-Length: 1001"),  # over the route's cap: aiohttp's 413
    head("POST /v2/e/run HTTP/1.1", "Content-Length: 2", "Expect: 100-continue"),
    head("POST /v2/e/run HTTP/1.1", "Content-Length: 2", "Upgrade: h2c"),
    head("POST /v2/e%2Dx/run HTTP/1.1", "Content-Length: 0"),  # an escape: aiohttp decodes it
    head("POST /v2/e/runsync?wait=1%30 HTTP/1.1", "Content-Length: 0"),
    head("POST /v2/e/runsync?wait=1+0 HTTP/1.1", "Content-Length: 0"),
    head("POST /v2/e/run HTTP/1.1", "Content-Length: 0", " folded"),  # obs-fold
    head("POST /v2/e/run HTTP/1.1", "Content-Length: 0", "Bad Name: x"),
    head("POST /v2/e/run HTTP/1.1", "Content-Length: 0", "NoColon"),
    head("POST /v2/e/run HTTP/1.1", "Content-Length: 0", "X: a\x00b"),
    head("POST /v2/e/run HTTP/1.1", "Content-Length: 0", "X: a\nb"),
    head("POST /v2/e/run HTTP/1.1", "Content-Length: 0", "X: a\rb"),
    head("POST /v2/e/run HTTP/1.1", "Content-Length : 0"),  # whitespace before the colon
    head("POST /v2/e\x01/run HTTP/1.1", "Content-Length: 0"),
    head("POST /v2/\u00e9/run HTTP/1.1", "Content-Length: 0"),
    b"\r\n" + head("POST /v2/e/run HTTP/1.1", "Content-Length: 0"),  # a stray empty line first
    b"POST /v2/e/run HTTP/1.1\nContent-Length: 0\n\n",  # bare LF line ends: not a wait for CR LF
    b"POST /v2/e/run HTTP/1.1\nHost: x",
    b"POST /v2/e/run HTTP/1.1\nContent-Length: 2\n\n{}\r\n\r\n",
    b"POST /v2/e/run HTTP/1.1\r\nX: " + b"a" * hot_path.MAX_HEAD,  # a head too long to be ours
    head("POST /v2/e/run HTTP/1.1", "Content-Length: 0", "X: " + "a" * hot_path.MAX_LINE),
    head("POST /v2/e/runsync?wait=" + "1" * hot_path.MAX_LINE + " HTTP/1.1", "Content-Length: 0"),
])
def test_anything_else_goes_to_aiohttp(raw: bytes) -> None:
    assert parse_head(raw, CAPS) is HAND_OVER


# ---- on the socket -------------------------------------------------------------------------


class Conn:
    """One raw keep-alive connection to a gateway."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, gateway: Gateway) -> Conn:
        host, port = re.match(r"http://(.+):(\d+)", gateway.url).groups()  # type: ignore[union-attr]
        return cls(*await asyncio.open_connection(host, int(port)))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        """The next answer: status, headers (lower-case names), body (Content-Length bodies)."""
        status_line = await asyncio.wait_for(self.reader.readline(), 10)
        assert status_line, "the connection closed"
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", 0)))
        return status, headers, body

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 10) == b""

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def conn(gateway: Gateway) -> Conn:
    c = await Conn.open(gateway)
    yield c
    c.close()


def job(body: bytes) -> dict[str, object]:
    return msgspec.json.decode(body)


async def test_a_request_sent_a_byte_at_a_time_is_answered(conn: Conn, registered: str) -> None:
    for byte in post(f"/v2/{registered}/run"):
        await conn.send(bytes([byte]))
    status, headers, body = await conn.answer()
    assert status == 200 and job(body)["status"] == "IN_QUEUE"
    assert headers["content-type"] == "application/json" and "connection" not in headers


async def test_pipelined_requests_are_answered_in_order(
    conn: Conn, registered: str, workers: StartWorkers,
) -> None:
    await workers(registered)
    await conn.send(post(f"/v2/{registered}/runsync", b'{"input": {"n": 1, "sleep_s": 0.2}}')
                    + post(f"/v2/{registered}/runsync", b'{"input": {"n": 2}}')
                    + post(f"/v2/{registered}/run"))
    first, second, third = [job((await conn.answer())[2]) for _ in range(3)]
    assert first["output"] == {"echo": {"n": 1, "sleep_s": 0.2}}
    assert second["output"] == {"echo": {"n": 2}}
    assert third["status"] == "IN_QUEUE"


async def test_another_route_is_aiohttps_answer_then_the_connection_closes(
    gateway: Gateway, conn: Conn, registered: str,
) -> None:
    """/run here, then /healthz pipelined behind another /run: aiohttp takes the connection with
    the bytes not consumed here, answers /healthz with Connection: close and closes, so the
    client's next connection starts here again."""
    await conn.send(post(f"/v2/{registered}/run"))
    assert (await conn.answer())[0] == 200
    await conn.send(post(f"/v2/{registered}/run")
                    + head("GET /healthz HTTP/1.1", "Host: x", "Connection: keep-alive"))
    ran, health = await conn.answer(), await conn.answer()
    assert ran[0] == 200 and "connection" not in ran[1]
    assert job(health[2]) == {"status": "ok"} and health[1]["connection"] == "close"
    assert await conn.closed()
    again = await Conn.open(gateway)
    await again.send(post(f"/v2/{registered}/run"))
    assert (await again.answer())[0] == 200
    again.close()


async def test_a_chunked_run_is_aiohttps_and_queues_the_job(conn: Conn, registered: str) -> None:
    chunked = head(f"POST /v2/{registered}/run HTTP/1.1", "Host: x", AUTH,
                   "Transfer-Encoding: chunked", body=b"d\r\n{\"input\": {}}\r\n0\r\n\r\n")
    await conn.send(chunked)
    status, headers, body = await conn.answer()
    assert status == 200 and job(body)["status"] == "IN_QUEUE" and headers["connection"] == "close"


async def test_a_head_that_cannot_be_rewritten_stays_with_aiohttp(conn: Conn, registered: str) -> None:
    """HTTP/1.0 with keep-alive: aiohttp answers as it would have, keep-alive included."""
    await conn.send(head(f"POST /v2/{registered}/run HTTP/1.0", "Connection: keep-alive",
                         "Content-Length: 13", AUTH, body=b'{"input": {}}'))
    status, _, body = await conn.answer()
    assert status == 200 and job(body)["status"] == "IN_QUEUE"
    await conn.send(head("GET /healthz HTTP/1.0", "Connection: keep-alive"))
    assert job((await conn.answer())[2]) == {"status": "ok"}


@pytest.mark.parametrize(("raw", "expected"), [
    (head("GET /healthz HTTP/1.1", "Host: x"),
     head("GET /healthz HTTP/1.1", "Host: x", "Connection: close")),
    (head("POST /v2/e/stream/j HTTP/1.1", "connection: keep-alive", "Content-Length: 2",
          "CONNECTION: x", body=b"{}") + b"GET /next",
     head("POST /v2/e/stream/j HTTP/1.1", "Content-Length: 2", "Connection: close", body=b"{}")
     + b"GET /next"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", None),  # the head is not complete
    (head("GET /healthz HTTP/1.0"), None),
    (head("GET /ws HTTP/1.1", "Connection: Upgrade", "Upgrade: websocket"), None),
    (head("GET /healthz HTTP/1.1", " folded"), None),
])
def test_closing_after(raw: bytes, expected: bytes | None) -> None:
    assert hot_path.closing_after(raw) == expected


@pytest.mark.parametrize("case", ["missing key", "bad body", "unknown endpoint", "bad wait",
                                  "wrong key", "unknown job"])
async def test_hot_and_aiohttp_answers_are_the_same(
    gateway: Gateway, registered: str, case: str,
) -> None:
    """The same refused request, once here and once through aiohttp (chunked): same status,
    same header names, same body."""
    path, body, extra, auth = {
        "missing key": (f"/v2/{registered}/run", b'{"input": 1}', [], False),
        "bad body": (f"/v2/{registered}/run", b'{"input": 1, "policy": 3}', [], True),
        "unknown endpoint": ("/v2/nobody/runsync", b'{"input": 1}', [], True),
        "bad wait": (f"/v2/{registered}/runsync?wait=soon", b'{"input": 1}', [], True),
        "wrong key": (f"/v2/{registered}/run", b'{"input": 1}', ["Authorization: Bearer nope"], False),
        "unknown job": (f"/v2/{registered}/status/nojob", b"{}", [], True),
    }[case]
    hot = await Conn.open(gateway)
    await hot.send(post(path, body, *extra, auth=auth))
    ours = await hot.answer()
    theirs_conn = await Conn.open(gateway)
    chunk = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    await theirs_conn.send(head(f"POST {path} HTTP/1.1", "Host: x", *extra, *([AUTH] if auth else []),
                                "Transfer-Encoding: chunked", body=chunk))
    theirs = await theirs_conn.answer()
    hot.close()
    theirs_conn.close()
    assert ours[0] == theirs[0] >= 400
    assert ours[2] == theirs[2]
    assert theirs[1].pop("connection") == "close"  # a request aiohttp answers closes after it
    assert sorted(ours[1]) == sorted(theirs[1])
    assert {k: v for k, v in ours[1].items() if k != "date"} == \
        {k: v for k, v in theirs[1].items() if k != "date"}


async def test_status_polls_are_answered_on_the_same_connection(
    conn: Conn, registered: str, workers: StartWorkers,
) -> None:
    await conn.send(post(f"/v2/{registered}/run", b'{"input": {"sleep_s": 0.2}}'))
    job_id = job((await conn.answer())[2])["id"]
    await workers(registered)
    for _ in range(100):
        await conn.send(head(f"GET /v2/{registered}/status/{job_id} HTTP/1.1", "Host: x", AUTH))
        status, _, body = await conn.answer()
        assert status == 200
        if job(body)["status"] == "COMPLETED":
            break
        await asyncio.sleep(0.05)
    assert job(body)["output"] == {"echo": {"sleep_s": 0.2}}
    await conn.send(post(f"/v2/nobody/status/{job_id}", b""))  # POST, on another endpoint
    assert (await conn.answer())[0] == 404


async def test_bare_lf_line_ends_are_aiohttps_to_judge(conn: Conn, registered: str) -> None:
    """A head whose lines end in LF alone is not held waiting for CR LF CR LF: aiohttp answers."""
    await conn.send(f"GET /v2/{registered}/status/nojob HTTP/1.1\n{AUTH}\n\n".encode())
    status, _, _ = await conn.answer()
    assert status == 400  # llhttp: "Expected CRLF after version"


async def test_connection_close_is_honoured(conn: Conn, registered: str) -> None:
    await conn.send(post(f"/v2/{registered}/run", b'{"input": {}}', "Connection: close"))
    status, headers, _ = await conn.answer()
    assert status == 200 and headers["connection"] == "close"
    assert await conn.closed()


@pytest.mark.parametrize("request_bytes", [
    head("POST /v2/{ep}/run HTTP/1.0", "Content-Length: 13", AUTH, body=b'{"input": {}}'),
    head("POST /v2/{ep}/run HTTP/1.1", "Host: x", "Content-Length: 13", AUTH,
         "Expect: 100-continue", body=b'{"input": {}}'),
])
async def test_requests_only_aiohttp_serves_still_queue_jobs(
    gateway: Gateway, registered: str, request_bytes: bytes,
) -> None:
    c = await Conn.open(gateway)
    await c.send(request_bytes.replace(b"{ep}", registered.encode()))
    status, _, body = await c.answer()
    if status == 100:  # aiohttp's interim answer has no body; the job's answer follows
        status, _, body = await c.answer()
    c.close()
    assert status == 200 and job(body)["status"] == "IN_QUEUE"


async def test_a_body_over_the_limit_is_aiohttps_413(
    make_gateway: GatewayFactory, registered: str,
) -> None:
    from serverless.gateway.limits import Limits
    gateway = await make_gateway(limits=Limits(run_max_bytes=100))
    c = await Conn.open(gateway)
    await c.send(post(f"/v2/{registered}/run", b'{"input": "' + b"x" * 200 + b'"}'))
    status, _, body = await c.answer()
    c.close()
    assert status == 413 and "over the 100 bytes limit of /run" in job(body)["error"]


async def test_a_client_gone_mid_runsync_loses_nothing(
    gateway: Gateway, registered: str, workers: StartWorkers, store: JobStore,
) -> None:
    await workers(registered)
    c = await Conn.open(gateway)
    await c.send(post(f"/v2/{registered}/runsync", b'{"input": {"sleep_s": 0.3}}'))
    await asyncio.sleep(0.1)
    c.close()
    await asyncio.sleep(0.5)  # the job ends meanwhile; its answer has nowhere to go
    counts = (await store.health(registered)).jobs
    assert counts.completed == 1
    again = await Conn.open(gateway)  # and the gateway serves on
    await again.send(post(f"/v2/{registered}/run"))
    assert (await again.answer())[0] == 200
    again.close()


async def test_stop_answers_requests_being_served_and_closes_idle_connections(
    store: JobStore, settings: Settings, registered: str, workers: StartWorkers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hot_path, "KEEPALIVE_S", 0.2)
    monkeypatch.setattr(hot_path, "SWEEP_S", 0.05)
    await workers(registered)
    runner = web.AppRunner(create_app(store, settings, GatewayOptions(admin_key=ADMIN_KEY)))
    await runner.setup()
    await HotSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    idle = Conn(*await asyncio.open_connection(host, port))
    swept = Conn(*await asyncio.open_connection(host, port))
    await swept.send(post(f"/v2/{registered}/run"))
    assert (await swept.answer())[0] == 200
    assert await swept.closed()  # idle past KEEPALIVE_S: the sweeper closed it
    busy = Conn(*await asyncio.open_connection(host, port))
    await busy.send(post(f"/v2/{registered}/runsync", b'{"input": {"sleep_s": 0.5}}'))
    await asyncio.sleep(0.1)
    cleanup = asyncio.create_task(runner.cleanup())
    assert await idle.closed()
    status, _, body = await busy.answer()
    assert status == 200 and job(body)["status"] == "COMPLETED"
    assert await busy.closed()
    await asyncio.wait_for(cleanup, 10)
