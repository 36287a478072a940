"""Admin fixtures: the gateway fixtures of tests/gateway (a real gateway on a real port), a
Registry on the same Redis, and a gateway on a loop in a background thread for the blocking
admin functions and the CLI."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from serverless.gateway import GatewayOptions, start_gateway
from serverless.registry import Registry
from serverless.settings import Settings
from serverless.store import JobStore
from tests.gateway.conftest import ADMIN_KEY, gateway, make_gateway  # noqa: F401 (fixtures)

T = TypeVar("T")


@pytest.fixture
def registry(store: JobStore) -> Registry:
    return Registry(store.redis)


class ThreadedGateway:
    """A gateway on its own loop in a thread; `run(coro)` runs a coroutine on that loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> ThreadedGateway:
        self._thread.start()
        assert self._ready.wait(10), "gateway thread did not start"
        return self

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        options = GatewayOptions(admin_key=ADMIN_KEY, api_keys=("user-key",))
        gateway = await start_gateway(self.settings, "127.0.0.1", 0, options)
        await gateway.store.redis.flushdb()  # our own redis-server, never a shared one
        self.registry = Registry(gateway.store.redis)
        self.url = gateway.url
        self._ready.set()
        await self._stop.wait()
        await gateway.close()


@pytest.fixture
def live(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedGateway]:
    """A threaded gateway; the admin functions are pointed at it through the environment."""
    server = ThreadedGateway(settings).start()
    monkeypatch.setenv("PODQ_ENDPOINT_BASE_URL", f"{server.url}/v2")
    monkeypatch.setenv("PODQ_API_KEY", ADMIN_KEY)
    yield server
    server.stop()
