"""Admin fixtures: the gateway fixtures of tests/gateway (a real gateway on a real port), a
Registry on the same Redis, and a gateway on a loop in a background thread for the blocking
admin functions and the CLI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serverless.gateway import GatewayOptions
from serverless.registry import Registry
from serverless.settings import Settings
from serverless.store import JobStore
from tests.gateway.conftest import ADMIN_KEY, ThreadedGateway, gateway, make_gateway  # noqa: F401 (fixtures)


@pytest.fixture
def registry(store: JobStore) -> Registry:
    return Registry(store.redis)


class LiveGateway(ThreadedGateway):
    """The threaded gateway of tests/gateway with the admin key, a user key, and its Registry
    (use it on the gateway's loop: `live.run(live.registry.set_status(...))`)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, GatewayOptions(admin_key=ADMIN_KEY, api_keys=("user-key",)))

    @property
    def registry(self) -> Registry:
        return Registry(self.store.redis)


@pytest.fixture
def live(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveGateway]:
    """A threaded gateway; the admin functions are pointed at it through the environment."""
    server = LiveGateway(settings).start()
    monkeypatch.setenv("PODQ_ENDPOINT_BASE_URL", f"{server.url}/v2")
    monkeypatch.setenv("PODQ_API_KEY", ADMIN_KEY)
    yield server
    server.stop()
