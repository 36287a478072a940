from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from serverless import clock
from serverless.model import EndpointConfig, Template
from serverless.queue import connect
from serverless.registry import Registry
from serverless.settings import Settings
from serverless.store import JobStore
from serverless.redis_server import RedisProcess
from tests.s3_server import SeaweedS3


@pytest.fixture(autouse=True)
def _clock_may_read_redis_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a process whose Redis user may run TIME: the record of a refusal is
    per process in production (serverless/clock.py), and a test that connected as an ACL user
    without +time must not switch the take behind the doorbell off for the tests after it."""
    monkeypatch.setattr(clock, "_refused", False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    server = RedisProcess().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    return redis_server.url


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, lease_ms=2_000, heartbeat_ms=300)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[JobStore]:
    redis = await connect(settings.redis_url)
    await redis.flushdb()  # our own server, never the shared one
    s = JobStore(redis, settings)
    yield s
    await s.close()


@pytest.fixture
def endpoint() -> str:
    return f"ep-{uuid.uuid4().hex[:8]}"


async def register(store: JobStore, endpoint: str) -> EndpointConfig:
    """Put `endpoint` in the registry, paused (a scaler would start no worker for it): the
    gateway then takes jobs for it with no worker serving it (serverless/gateway/known_endpoints)."""
    registry = Registry(store.redis)
    template = await registry.put_template(Template(id=f"t-{endpoint}", name=endpoint, handler="handler.py"))
    return await registry.put_endpoint(
        EndpointConfig(id=endpoint, name=endpoint, template_id=template.id, paused=True))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    """A real S3 server (SeaweedFS `weed mini`) for the session: .url, .bucket, .key, .secret
    (and .env, the AWS_* variables). Tests share the bucket: give each its own key prefix."""
    try:
        server = SeaweedS3().start()
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)
    yield server
    server.stop()
