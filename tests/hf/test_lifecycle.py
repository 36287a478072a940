"""serverless.hf end to end: a real gateway and a real scaler (process backend, real worker
processes running examples/hf/handler.py) over the real redis-server, driven only through
huggingface_hub's names: create -> wait -> client -> pause -> resume -> scale_to_zero -> wait
-> update -> delete, and the failures wait() raises."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scaler.backends.process import ProcessBackend
from scaler.loop import Scaler
from serverless.errors import Conflict, NotFound
from serverless.gateway import GatewayOptions
from serverless.hf import (
    InferenceEndpoint, InferenceEndpointError, InferenceEndpointTimeoutError,
    create_inference_endpoint, get_inference_endpoint, list_inference_endpoints,
)
from serverless.redis_server import RedisProcess
from serverless.registry import Registry
from serverless.settings import Settings
from serverless.store import JobStore
from tests.gateway.conftest import ADMIN_KEY, ThreadedGateway
from tests.scaler_running import running

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
HANDLER = str(ROOT / "examples" / "hf" / "handler.py")
CRASH = str(ROOT / "tests" / "scaler" / "handlers" / "crash.py")
FAST = 0.1  # s between reads in wait(); the scaler ticks every 0.1 s


def run_scaler(settings: Settings, log_dir: Path) -> Callable[[JobStore], Any]:
    """A scaler with the process backend on the gateway's loop, until the gateway stops; its
    workers are stopped then."""

    async def run(store: JobStore) -> None:
        backend = ProcessBackend(settings.redis_url, log_dir=str(log_dir))
        async with running(Scaler(Registry(store.redis), store, {"process": backend}, settings, tick_s=0.1),
                           backend):
            await asyncio.Event().wait()

    return run


@pytest.fixture
def live(redis_server: RedisProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ThreadedGateway]:
    settings = Settings(redis_url=redis_server.url, lease_ms=2_000, heartbeat_ms=200, grace_period_s=2)
    for name, value in {"PODQ_HEARTBEAT_MS": "200", "PODQ_LEASE_MS": "2000"}.items():
        monkeypatch.setenv(name, value)  # the worker processes inherit them
    options = GatewayOptions(admin_key=ADMIN_KEY)
    with ThreadedGateway(settings, options, beside=(run_scaler(settings, tmp_path),)) as gateway:
        monkeypatch.setenv("PODQ_ENDPOINT_BASE_URL", f"{gateway.url}/v2")
        monkeypatch.setenv("PODQ_API_KEY", ADMIN_KEY)
        yield gateway


def create(name: str, handler: str = HANDLER, **kw: Any) -> InferenceEndpoint:
    fields = dict(repository="gpt2", framework="pytorch", task="text-generation",
                  accelerator="cpu", vendor="podq", region="local", instance_size="x1",
                  instance_type="intel-icl", revision="r1", handler=handler)
    return create_inference_endpoint(name, **{**fields, **kw})


def until_status(endpoint: InferenceEndpoint, status: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while endpoint.fetch().status != status:
        assert time.monotonic() < deadline, f"{endpoint.name} still {endpoint.status}, not {status}"
        time.sleep(FAST)


def test_the_lifecycle_through_huggingface_hubs_names(live: ThreadedGateway) -> None:
    endpoint = create("hf-life")
    # the scaler beside it may already have reconciled it (it ticks every 0.1 s here)
    assert endpoint.status in ("pending", "initializing")
    assert (endpoint.url, endpoint.repository, endpoint.revision) == (None, "gpt2", "r1")
    with pytest.raises(InferenceEndpointError, match="not serving yet"):
        endpoint.client
    with pytest.raises(Conflict, match="an endpoint named 'hf-life' exists"):
        create("hf-life")

    assert endpoint.wait(timeout=30, refresh_every=FAST).status == "running"
    assert endpoint.url == f"{live.url}/v2/hf-life/hf"
    chat = endpoint.client.chat_completion([{"role": "user", "content": "hello"}])
    assert (chat.model, chat.system_fingerprint) == ("gpt2", "r1")  # repository, revision as env
    assert endpoint.client.text_generation("a b c") == "a b c"

    assert endpoint.pause().status == "paused" and endpoint.url is None
    with pytest.raises(InferenceEndpointTimeoutError, match="still paused after 0.3 s"):
        endpoint.wait(timeout=0.3, refresh_every=FAST)
    assert endpoint.resume().status in ("pending", "initializing")  # not paused any more
    assert endpoint.wait(timeout=30, refresh_every=FAST).status == "running"

    endpoint.scale_to_zero()
    until_status(endpoint, "scaledToZero")
    started = time.monotonic()
    endpoint.wait(timeout=5, refresh_every=FAST)  # ready: the first request wakes it
    assert time.monotonic() - started < 1
    assert endpoint.client.text_generation("wake up") == "wake up"
    until_status(endpoint, "running")  # the scaler reports the woken worker on its next tick

    assert endpoint.update(repository="gpt2-large", revision="r2").status in ("updating", "running")
    endpoint.wait(timeout=30, refresh_every=FAST)
    chat = endpoint.client.chat_completion([{"role": "user", "content": "hello"}])
    assert (chat.model, chat.system_fingerprint) == ("gpt2-large", "r2")
    assert endpoint.update(min_replica=0, max_replica=2, scale_to_zero_timeout=1).raw["compute"]["scaling"] == {
        "minReplica": 0, "maxReplica": 2, "scaleToZeroTimeout": 1}

    assert get_inference_endpoint("hf-life", namespace="me").raw == endpoint.fetch().raw
    assert [e.name for e in list_inference_endpoints("*")] == ["hf-life"]
    endpoint.delete()
    with pytest.raises(NotFound):
        get_inference_endpoint("hf-life")
    assert list_inference_endpoints() == []
    assert live.run(Registry(live.store.redis).get_template("hf-hf-life")) is None


def test_wait_raises_when_the_endpoint_cannot_start_or_update(live: ThreadedGateway) -> None:
    broken = create("hf-broken", handler=CRASH)
    with pytest.raises(InferenceEndpointError, match="Inference Endpoint hf-broken failed to deploy: "
                                                     "workers keep failing right after start"):
        broken.wait(timeout=30, refresh_every=FAST)
    good = create("hf-good").wait(timeout=30, refresh_every=FAST)
    good.update(handler=CRASH)
    with pytest.raises(InferenceEndpointError, match="Inference Endpoint hf-good failed to update"):
        good.wait(timeout=30, refresh_every=FAST)
    assert good.status == "updateFailed"
    assert good.client.text_generation("still served") == "still served"  # by the old version
