"""Gateway fixtures: a real gateway on a real TCP port over the real redis-server, and in-test
workers that take jobs through the real JobStore worker API (take -> append_chunks -> finish)."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import msgspec
import pytest
from aiohttp import web

from serverless import periodic
from serverless.gateway import GatewayOptions, create_app, start_gateway
from serverless.gateway.hot_path import HotSite
from serverless.gateway.webhooks import WebhookPolicy
from serverless.model import Status, TakenJob, WorkerBeat, WorkerState
from serverless.settings import Settings
from serverless.store import JobStore, now_ms
from tests.conftest import register

T = TypeVar("T")

ADMIN_KEY = "admin-test-key"
# the test receivers listen on 127.0.0.1, a private address refused by default
FAST_WEBHOOKS = WebhookPolicy(timeout_s=1.0, retries=2, retry_delay_s=0.05, allow_private=True)


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


class Gateway:
    """A started gateway and an authorized aiohttp session to call it."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url, self.session = url, session

    async def call(
        self, method: str, path: str, *, json: Any = None, data: bytes | None = None,
        headers: dict[str, str] | None = None, auth: bool = True,
    ) -> Answer:
        hdrs = {"Authorization": f"Bearer {ADMIN_KEY}"} if auth else {}
        hdrs.update(headers or {})
        body = msgspec.json.encode(json) if json is not None else data
        payload = io.BytesIO(body) if body is not None else None  # big bodies without a warning
        async with self.session.request(method, self.url + path, data=payload, headers=hdrs) as r:
            raw = await r.read()
            decoded = msgspec.json.decode(raw) if r.content_type == "application/json" else raw
            return Answer(r.status, decoded, dict(r.headers))


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_gateway(store: JobStore, settings: Settings) -> AsyncIterator[GatewayFactory]:
    """Start gateways with GatewayOptions overrides; all are stopped at the end."""
    runners: list[web.AppRunner] = []
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def make(**overrides: Any) -> Gateway:
        fields = {"admin_key": ADMIN_KEY, "webhooks": FAST_WEBHOOKS, "reap_interval_s": 0.1}
        options = GatewayOptions(**{**fields, **overrides})
        runner = web.AppRunner(create_app(store, settings, options))
        await runner.setup()
        await HotSite(runner, "127.0.0.1", 0, backlog=2048).start()  # as start_gateway does
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return Gateway(f"http://{host}:{port}", session)

    yield make
    for runner in runners:
        await runner.cleanup()
    await session.close()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway()


@pytest.fixture
async def registered(store: JobStore, endpoint: str) -> str:
    """The `endpoint` under test, in the registry: the gateway takes its jobs with no worker
    serving it (an endpoint nobody can serve is a 404, serverless/gateway/known_endpoints)."""
    await register(store, endpoint)
    return endpoint


# ---- in-test workers ---------------------------------------------------------------------

Result = tuple[Status, bytes | None, str | None]
Handler = Callable[[JobStore, TakenJob], Awaitable[Result]]


async def scripted(store: JobStore, job: TakenJob) -> Result:
    """Answer `{"echo": input}`, following directions an input dict may carry:
    `fail` (end FAILED with that error), `chunks` (stream them, `gap_s` apart), `sleep_s`."""
    value = msgspec.json.decode(job.input)
    script = value if isinstance(value, dict) else {}
    for chunk in script.get("chunks", []):
        await store.append_chunks(job.id, job.attempt, [msgspec.json.encode(chunk)])
        await asyncio.sleep(script.get("gap_s", 0))
    await asyncio.sleep(script.get("sleep_s", 0))
    if "fail" in script:
        return Status.FAILED, None, str(script["fail"])
    return Status.COMPLETED, msgspec.json.encode({"echo": value}), None


async def beat(store: JobStore, endpoint: str, worker_id: str) -> None:
    """Register an in-test worker as idle, seen now: the gateway knows its endpoint from here
    on (known_endpoints), as it knows one a podq worker serves."""
    await store.beat(WorkerBeat(id=worker_id, endpoint=endpoint, state=WorkerState.IDLE, seen_at=now_ms()))


async def work(store: JobStore, endpoint: str, worker_id: str, handler: Handler = scripted) -> None:
    """Take and finish jobs of `endpoint`, one at a time, until cancelled; it beats every
    heartbeat period, as a podq worker does."""
    beating = asyncio.create_task(
        periodic.every(store.settings.heartbeat_ms / 1000, lambda: beat(store, endpoint, worker_id)))
    try:
        while True:
            taken = await store.take(endpoint, worker_id)
            if taken is None:
                await asyncio.sleep(0.005)
                continue
            status, output, error = await handler(store, taken)
            await store.finish(taken.id, taken.attempt, status, output=output, error=error)
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)


StartWorkers = Callable[..., Awaitable[None]]


@pytest.fixture
async def workers(store: JobStore) -> AsyncIterator[StartWorkers]:
    """Start in-test workers: `await workers(endpoint, n=1, handler=scripted)`, registered
    (beat) before it returns; cancelled at the end."""
    tasks: list[asyncio.Task[None]] = []

    async def start(endpoint: str, n: int = 1, handler: Handler = scripted) -> None:
        for i in range(n):
            await beat(store, endpoint, f"w{i}")
            tasks.append(asyncio.create_task(work(store, endpoint, f"w{i}", handler)))

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# ---- a gateway for synchronous clients -----------------------------------------------------

Beside = Callable[[JobStore], Awaitable[None]]


class ThreadedGateway:
    """A real gateway (start_gateway, its own Redis connections) on its own event loop in a
    thread, for synchronous clients: httpx, the `runpod` package, schemathesis, the admin
    functions. `beside` coroutines (in-test workers, given the gateway's store) run on that loop
    while it serves; `run(coro)` runs a coroutine there. Use `start()`/`stop()` or `with`."""

    def __init__(self, settings: Settings, options: GatewayOptions, beside: tuple[Beside, ...] = ()) -> None:
        self.settings, self.options, self.beside = settings, options, beside
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> ThreadedGateway:
        self._thread.start()
        assert self._ready.wait(10), "gateway thread did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def __enter__(self) -> ThreadedGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        gateway = await start_gateway(self.settings, "127.0.0.1", 0, self.options)
        await gateway.store.redis.flushdb()  # our own redis-server, never a shared one
        self.store = gateway.store
        tasks = [asyncio.create_task(b(gateway.store)) for b in self.beside]
        self.url = gateway.url
        self._ready.set()
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await gateway.close()
