"""The hot path: /v2/{endpoint_id}/run, /runsync and /status/{job_id} answered straight off
the socket.

Every request used to go through aiohttp's whole server: its request handler, a web.Request,
the router, five middlewares, a web.Response and its writer. On the bench machine that
machinery alone took 86-99 µs of CPU per request, against 15-20 µs for a bare protocol that
parses the same request and writes the same answer, while the gateway spent about 190 µs per
/runsync in all (docs/benchmarks.md, "The hot path"). Submitting, waiting and polling are what
every client does for every job, so those three routes are served here, by a small protocol;
everything else still goes to aiohttp, unchanged.

How a connection is shared: each accepted connection starts with a `HotConnection`. When a
request head arrives it is checked against a strict subset of HTTP/1.1 (`parse_head`): POST
/run or /runsync, GET or POST /status, HTTP/1.1, a Content-Length body within the route's
limit (or no body, for /status), no Transfer-Encoding, Expect or Upgrade, a path and a query
without escapes, plain header lines. Such a request is served here. Anything else (another
route, HTTP/1.0, a chunked body, a malformed head, a body over the limit, whose 413 aiohttp
words) goes to aiohttp with the connection, from the first byte of that request: aiohttp
parses it as if it had owned the connection from the start (`transport.set_protocol`), so no
request is parsed twice and anything odd meets aiohttp's own parser. Taking a connection back
from aiohttp would mean reaching into its request handler, so the request goes with its
Connection header made `close` (`closing_after`): aiohttp answers it and closes, and the
client's next request opens a connection that starts here again. Without that, a client whose
pool serves /run and, now and then, /health or /metrics would see its connections move to
aiohttp one by one (bench/scenarios/metrics_cost.py, whose client scrapes /metrics on its
pooled connections now and then, measured the gateway's CPU per /run 25 % higher with metrics
on while aiohttp kept them). The price is one reconnect per request of another route.
Requests are served one at a time per connection, as HTTP/1.1 wants; pipelined ones wait in
the buffer (reading pauses once it holds more than a head's worth).

Same answers: the checks are the middlewares' own functions, called in the middlewares' order
(timing, errors, key, rate limits): auth.check_key, limits.rate_refusal,
error_responses.answer_for, ProcessMetrics.request_done; and the route bodies are
routes.queue_job, routes.queue_and_wait and routes.job_status, which the aiohttp handlers call
too. Answers carry the headers aiohttp writes (Content-Type, Content-Length, Date, Server, and
Connection: close when the connection closes after it). The gateway test suite runs through
this path (tests/gateway/conftest.py starts its gateways with `HotSite`, as start_gateway
does), and tests/gateway/test_hot_path.py covers what only this module does: which heads it
takes, split reads, pipelining, the hand-over, Connection: close, keep-alive expiry, shutdown,
and the same refusals answered here and by aiohttp byte for byte.

Why not a faster general server (granian, socketify): it would replace aiohttp for every route
(SSE, the console, GraphQL, the worker long-polls, websockets of its own kind) to speed up
three, and podq's handlers and tests are written against aiohttp.
"""

from __future__ import annotations

import asyncio
import re
import time
from email.utils import formatdate
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import msgspec
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from serverless.gateway import routes, state
from serverless.gateway.auth import check_key
from serverless.gateway.error_responses import answer_for
from serverless.gateway.limits import rate_refusal
from serverless.gateway.metrics import METRICS
from serverless.gateway.replies import encode

# a /status body is read by nobody; a bigger one goes to aiohttp, which skips it as it arrives
# (here the whole body is buffered before the request is served)
STATUS_BODY_CAP = 64 * 1024
MAX_HEAD = 16 * 1024  # a head not ended by then goes to aiohttp (its limits answer it)
MAX_LINE = 4096  # a longer line goes to aiohttp, whose limit (8190 bytes) and 400 then apply
KEEPALIVE_S = 75.0  # aiohttp's keep-alive timeout: an idle connection is closed after it
SWEEP_S = 15.0  # how often idle connections are looked for

_ROUTES = {b"run": "run", b"runsync": "runsync"}  # POST /v2/{endpoint_id}/<name>
_STATUS = b"status"  # GET or POST /v2/{endpoint_id}/status/{job_id}
# header lines as this module takes them, every one checked by one match: `token:value CR LF`,
# no control byte in the value but tab, no line over MAX_LINE
_HEADER_BLOCK = re.compile(
    rb"(?:[!#$%%&'*+.^_`|~0-9A-Za-z-]{1,256}:[^\x00-\x08\x0a-\x1f\x7f]{0,%d}\r\n)*\Z" % MAX_LINE)
# the headers the hot path reads; optional whitespace around the value is not part of it
_WANTED = re.compile(rb"^(content-length|authorization|connection|transfer-encoding|expect|upgrade)"
                     rb":[ \t]*(.*?)[ \t]*\r$", re.IGNORECASE | re.MULTILINE)
_PLAIN_PATH = re.compile(rb"[A-Za-z0-9._:~/-]*\Z")  # what ids are made of (keys.valid_id)
_PLAIN_QUERY = re.compile(rb"[A-Za-z0-9._~=&-]*\Z")
_DIGITS = re.compile(rb"[0-9]{1,15}\Z")


class HotRequest(NamedTuple):
    """A request head this module serves (parse_head); the body follows it."""

    route: str  # "run" | "runsync" | "status"
    method: str
    endpoint: str
    job_id: str  # status: the job in the path; "" for the others
    path: str
    query: dict[str, str]  # the first value of each name, as aiohttp's request.query.get
    authorization: str | None
    head_size: int  # bytes up to and including the blank line
    body_size: int
    close: bool  # Connection: close


NEED_MORE = "need more"  # the head is not complete yet
HAND_OVER = "hand over"  # not ours: aiohttp takes the connection from this request on


def parse_head(buffer: bytes | bytearray, caps: dict[str, int]) -> HotRequest | str:
    """The request head at the start of `buffer`, if this module serves it.

    Args:
        buffer: the connection's unread bytes, starting at a request's first byte.
        caps: the body limit of each route, in bytes (routes over it go to aiohttp).

    Returns:
        A HotRequest, NEED_MORE (the head is not complete), or HAND_OVER.
    """
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
    if end < 0:
        # a line ended by a bare LF: aiohttp's to judge now (waiting for CR LF CR LF would
        # hold a client that ends its lines so)
        if len(buffer) >= MAX_HEAD or buffer.count(b"\n") != buffer.count(b"\r\n"):
            return HAND_OVER
        return NEED_MORE
    line_end = buffer.find(b"\r\n")
    request_line = bytes(buffer[:line_end]).split(b" ")
    if len(request_line) != 3 or request_line[2] != b"HTTP/1.1" or line_end > MAX_LINE:
        return HAND_OVER
    method, target, _ = request_line
    raw_path, _, raw_query = target.partition(b"?")
    if not _PLAIN_PATH.match(raw_path) or not _PLAIN_QUERY.match(raw_query):
        return HAND_OVER  # escapes (aiohttp decodes them), or bytes no id has
    parts = raw_path.split(b"/")
    if len(parts) == 4 and parts[1] == b"v2" and method == b"POST" and parts[3] in _ROUTES:
        route, job_id = _ROUTES[parts[3]], b""
    elif (len(parts) == 5 and parts[1] == b"v2" and parts[3] == _STATUS and parts[4]
          and method in (b"GET", b"POST")):
        route, job_id = "status", parts[4]
    else:
        return HAND_OVER
    headers = _headers(bytes(buffer[line_end + 2:end + 2]))
    if headers is None or b"transfer-encoding" in headers or b"expect" in headers \
            or b"upgrade" in headers:
        return HAND_OVER
    length = headers.get(b"content-length")
    if length is None:
        if route != "status":  # a body the routes read has a length here
            return HAND_OVER
        length = b"0"
    if not _DIGITS.match(length) or int(length) > caps[route]:
        return HAND_OVER
    connection = headers.get(b"connection")
    authorization = headers.get(b"authorization")
    return HotRequest(
        route=route,
        method=method.decode(),
        endpoint=parts[2].decode(),
        job_id=job_id.decode(),
        path=raw_path.decode(),
        query=_query(raw_query),
        authorization=None if authorization is None else authorization.decode("utf-8", "surrogateescape"),
        head_size=end + 4,
        body_size=int(length),
        close=connection is not None and b"close" in [
            token.strip() for token in connection.lower().split(b",")],
    )


def _headers(block: bytes) -> dict[bytes, bytes] | None:
    """The headers the hot path reads (_WANTED; names in lower case) with their first value,
    from the head's header lines (each ending in CR LF); None for a head aiohttp should judge:
    a line that is not `token: value` (obs-fold included), a control byte, a line over
    MAX_LINE, or a Content-Length sent twice."""
    if not _HEADER_BLOCK.match(block):
        return None
    headers: dict[bytes, bytes] = {}
    for name, value in _WANTED.findall(block):
        name = name.lower()
        if name in headers:
            if name == b"content-length":
                return None
            continue
        headers[name] = value
    return headers


def _query(raw: bytes) -> dict[str, str]:
    """The first value of each name (aiohttp's `request.query.get`); `raw` has no escapes."""
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw.decode(), keep_blank_values=True):
        query.setdefault(name, value)
    return query


_CONNECTION_LINE = re.compile(rb"^connection:[^\r]*\r\n", re.IGNORECASE | re.MULTILINE)


def closing_after(buffer: bytes) -> bytes | None:
    """`buffer` (a request, then whatever follows it) with the request's Connection header
    made `close`, so aiohttp answers it and closes the connection; None when the head is not
    one to rewrite (not complete, not HTTP/1.1, header lines this module would not take, or an
    Upgrade, which needs its own Connection header)."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
    line_end = buffer.find(b"\r\n")
    if end < 0 or not buffer[:line_end].endswith(b" HTTP/1.1"):
        return None
    block = buffer[line_end + 2:end + 2]
    headers = _headers(block)
    if headers is None or b"upgrade" in headers:
        return None
    block = _CONNECTION_LINE.sub(b"", block)
    return buffer[:line_end + 2] + block + b"Connection: close\r\n\r\n" + buffer[end + 4:]


# ---- answers -------------------------------------------------------------------------------

_date = (0, b"")


def _http_date() -> bytes:
    """The Date header's value, formatted once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True).encode())
    return _date[1]


_SERVER = SERVER_SOFTWARE.encode()
_OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nDate: %s\r\nServer: %s\r\n%s\r\n"
_CLOSE = b"Connection: close\r\n"


def ok_bytes(body: bytes, close: bool) -> bytes:
    """A 200 JSON answer, as aiohttp writes one."""
    return _OK_HEAD % (len(body), _http_date(), _SERVER, _CLOSE if close else b"") + body


def response_bytes(response: web.Response, close: bool) -> bytes:
    """`response` (an error or refusal, built by the shared functions) as bytes on the wire."""
    body = response.body if isinstance(response.body, bytes) else b""
    head = [b"HTTP/1.1 %d %s\r\n" % (response.status, response.reason.encode())]
    head += [f"{name}: {value}\r\n".encode() for name, value in response.headers.items()]
    head.append(b"Content-Length: %d\r\nDate: %s\r\nServer: %s\r\n" % (len(body), _http_date(), _SERVER))
    if close:
        head.append(_CLOSE)
    return b"".join(head) + b"\r\n" + body


class HotRoutes:
    """What the hot path needs of the gateway application, looked up once."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        limits = app[state.LIMITS]
        self.caps = {"run": limits.run_max_bytes, "runsync": limits.runsync_max_bytes,
                     "status": STATUS_BODY_CAP}
        self.metrics = app.get(METRICS)

    async def answer(self, request: HotRequest, body: bytes) -> bytes:
        """The whole answer to `request`, as the middlewares and the route would give it."""
        started = time.perf_counter() if self.metrics is not None else 0.0  # as the middleware
        try:
            reply: Any = await self._checked(request, body)
        except Exception as e:  # noqa: BLE001 - answer_for sorts them, as the error middleware
            reply = answer_for(e, request.method, request.path)
            if reply is None:
                raise
        if isinstance(reply, web.Response):
            status, data = reply.status, response_bytes(reply, request.close)
        else:
            status, data = 200, ok_bytes(encode(reply), request.close)
        if self.metrics is not None:
            self.metrics.request_done(request.route, request.method, status,
                                      time.perf_counter() - started)
        return data

    async def _checked(self, request: HotRequest, body: bytes) -> msgspec.Struct | web.Response:
        app, route, endpoint = self.app, request.route, request.endpoint
        verdict = await check_key(app, route, endpoint, request.authorization, None,
                                  f"{request.method} {request.path}")
        if verdict.refusal is not None:
            return verdict.refusal
        if (refusal := await rate_refusal(app, route, endpoint, verdict.digest)) is not None:
            return refusal
        if route == "status":
            return await routes.job_status(app, endpoint, request.job_id)
        endpoint = await routes.known_endpoint(app, endpoint)
        if route == "run":
            return await routes.queue_job(app, endpoint, body)
        wait_ms = routes.parse_wait(request.query.get("wait"))
        return await routes.queue_and_wait(app, endpoint, wait_ms, body)


# ---- connections ---------------------------------------------------------------------------


class HotConnection(asyncio.Protocol):
    """One client connection while the hot path holds it (module docstring)."""

    def __init__(self, site: HotSite) -> None:
        self._site = site
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._head: HotRequest | None = None  # parsed, its body still arriving
        self._serving: asyncio.Task[None] | None = None
        self._paused = False
        self.idle_since = 0.0  # loop time the last answer went out (or the connection came)

    # ---- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.idle_since = self._site.loop.time()
        self._site.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        # a request being served goes on (its job is queued either way); its answer is dropped
        self._transport = None
        self._site.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._serving is None:
            self._next()
        elif len(self._buffer) > MAX_HEAD and not self._paused and self._transport is not None:
            self._paused = True  # pipelined requests wait; the buffer stays bounded
            self._transport.pause_reading()

    # ---- requests ------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """A request is being served (an unfinished head or body is not)."""
        return self._serving is not None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _next(self) -> None:
        """Serve the request at the start of the buffer once it is whole, or hand over."""
        if self._transport is None:
            return
        head = self._head
        if head is None:
            parsed = parse_head(self._buffer, self._site.routes.caps)
            if parsed is NEED_MORE:
                return
            if parsed is HAND_OVER:
                self._hand_over()
                return
            head = self._head = parsed  # type: ignore[assignment]
        end = head.head_size + head.body_size
        if len(self._buffer) < end:
            return
        body = bytes(self._buffer[head.head_size:end])
        del self._buffer[:end]
        self._head = None
        self._serving = self._site.loop.create_task(self._serve(head, body))

    async def _serve(self, request: HotRequest, body: bytes) -> None:
        try:
            data = await self._site.routes.answer(request, body)
        except Exception:  # noqa: BLE001 - answer() lets only a dropped connection through
            data = None
        finally:
            self._serving = None
        transport = self._transport
        if transport is None:
            return
        if data is None:
            transport.close()
            return
        transport.write(data)
        self.idle_since = self._site.loop.time()
        if request.close or self._site.closing:
            transport.close()
            return
        if self._paused:
            self._paused = False
            transport.resume_reading()
        if self._buffer:
            self._next()

    def _hand_over(self) -> None:
        """aiohttp takes the connection for the request at the start of the buffer, and closes
        it after answering: the request's Connection header is made `close` (closing_after),
        so the client's next request comes on a fresh connection, which starts here again.
        Kept with aiohttp, every later /run on that connection would pay aiohttp's price, and a
        client that scrapes /metrics or checks /health now and then would move its pool there
        one connection at a time. The price is one reconnect per request of another route. A
        head that cannot be rewritten (HTTP/1.0, an Upgrade, lines this module would not take)
        goes as it came, and aiohttp keeps that connection."""
        transport, self._transport = self._transport, None
        self._site.connections.discard(self)
        assert transport is not None
        data = bytes(self._buffer)
        self._buffer.clear()
        data = closing_after(data) or data
        handler = self._site.fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if data:
            handler.data_received(data)


class HotSite(web.BaseSite):
    """aiohttp's TCPSite with the hot path in front: the gateway's listening socket."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, backlog: int = 1024) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port = host, port
        self.connections: set[HotConnection] = set()
        self.closing = False
        self.loop: asyncio.AbstractEventLoop  # these three are set by start()
        self.routes: HotRoutes
        self.fallback: Callable[[], asyncio.Protocol]  # aiohttp's protocol for a connection
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        self.loop = asyncio.get_running_loop()
        runner = self._runner
        assert isinstance(runner, web.AppRunner) and runner.server is not None
        self.routes = HotRoutes(runner.app)
        self.fallback = runner.server
        self._server = await self.loop.create_server(
            lambda: HotConnection(self), self._host, self._port, backlog=self._backlog,
            reuse_address=True)
        self._sweeper = self.loop.create_task(self._sweep(), name="podq-hot-path-sweep")

    async def stop(self) -> None:
        """Stop listening, close idle connections, let requests being served answer (within
        the runner's shutdown timeout, as aiohttp does), then close the rest."""
        self.closing = True
        await super().stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        for connection in list(self.connections):
            if not connection.busy:
                connection.close()
        deadline = self.loop.time() + self._runner._shutdown_timeout
        while any(c.busy for c in self.connections) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.close()

    async def _sweep(self) -> None:
        """Close connections idle for KEEPALIVE_S, as aiohttp closes its own."""
        while True:
            await asyncio.sleep(SWEEP_S)
            cutoff = self.loop.time() - KEEPALIVE_S
            for connection in list(self.connections):
                if not connection.busy and connection.idle_since < cutoff:
                    connection.close()
