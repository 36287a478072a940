"""The blocking client (Endpoint, Job) against a live gateway running in a background thread
with its own event loop, real Redis and in-test workers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from serverless.client import Endpoint, Job
from serverless.errors import JobFailed, NotFound, Unauthorized
from serverless.gateway import GatewayOptions
from serverless.settings import Settings
from tests.gateway.conftest import ADMIN_KEY, ThreadedGateway, beat, work


@pytest.fixture
def live(settings: Settings, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Endpoint]:
    workers = tuple(lambda store, i=i: work(store, endpoint, f"w{i}") for i in range(2))
    server = ThreadedGateway(settings, GatewayOptions(admin_key=ADMIN_KEY), beside=workers).start()
    server.run(beat(server.store, endpoint, "w0"))  # registered before the first call
    monkeypatch.setenv("PODQ_ENDPOINT_BASE_URL", f"{server.url}/v2")
    monkeypatch.setenv("PODQ_API_KEY", ADMIN_KEY)
    with Endpoint(endpoint) as client:
        yield client
    server.stop()


def test_run_sync_returns_the_output(live: Endpoint) -> None:
    assert live.run_sync({"prompt": "hi"}) == {"echo": {"prompt": "hi"}}


def test_envelopes_are_sent_as_they_are_even_with_empty_input(live: Endpoint) -> None:
    assert live.run_sync({"input": {}}) == {"echo": {}}
    assert live.run_sync({"input": {"a": 1}, "policy": {"ttl": 60000}}) == {"echo": {"a": 1}}
    assert live.run_sync("plain") == {"echo": "plain"}


def test_run_sync_of_a_failed_job_raises_job_failed(live: Endpoint) -> None:
    with pytest.raises(JobFailed, match=r"job sync-.*-e1 ended FAILED: boom") as info:
        live.run_sync({"fail": "boom"})
    assert info.value.status == "FAILED" and info.value.error == "boom"


def test_run_sync_past_its_timeout_raises_timeout_error(live: Endpoint) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"job sync-.* is still IN_PROGRESS after"):
        live.run_sync({"sleep_s": 3}, timeout=1.5)
    assert time.monotonic() - started < 2.9


def test_run_then_status_and_output(live: Endpoint) -> None:
    job = live.run({"sleep_s": 0.5, "v": 1})
    assert isinstance(job, Job) and job.job_id.endswith("-u1")
    assert job.status() in ("IN_QUEUE", "IN_PROGRESS")
    assert job.output() is None  # RunPod's default timeout=0 fetches once
    assert job.output(timeout=10) == {"echo": {"sleep_s": 0.5, "v": 1}}
    assert job.status() == "COMPLETED"


def test_output_with_a_short_timeout_raises(live: Endpoint) -> None:
    job = live.run({"sleep_s": 2})
    with pytest.raises(TimeoutError, match="keeps running"):
        job.output(timeout=0.3)


def test_stream_yields_chunks_as_they_are_produced(live: Endpoint) -> None:
    job = live.run({"chunks": ["a", {"b": 1}, 3], "gap_s": 0.4})
    arrivals = []
    for chunk in job.stream():
        arrivals.append((chunk, time.monotonic()))
    assert [c for c, _ in arrivals] == ["a", {"b": 1}, 3]
    assert arrivals[1][1] - arrivals[0][1] > 0.2  # pushed one by one, not all at the end
    assert job.status() == "COMPLETED"


def test_stream_ends_when_the_job_is_cancelled(live: Endpoint) -> None:
    job = live.run({"chunks": ["first"], "sleep_s": 30})
    seen = []
    for chunk in job.stream():
        seen.append(chunk)
        assert job.cancel() == {"id": job.job_id, "status": "CANCELLED"}
    assert seen == ["first"]
    with pytest.raises(JobFailed, match="CANCELLED"):
        job.output()


def test_health_and_purge_queue(live: Endpoint) -> None:
    health = live.health()
    assert set(health) == {"jobs", "workers"} and "inQueue" in health["jobs"]
    assert live.purge_queue() == {"removed": 0, "status": "completed"}


def test_unknown_job_raises_not_found(live: Endpoint) -> None:
    job = Job(live.endpoint_id, "missing-job")
    with pytest.raises(NotFound, match=r"HTTP 404 from GET .*/status/missing-job: job 'missing-job'"):
        job.status()
    job.close()


def test_wrong_key_says_how_to_set_one(live: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    with Endpoint(live.endpoint_id, api_key="wrong") as wrong, pytest.raises(Unauthorized) as info:
        wrong.health()
    assert str(info.value).startswith("401 Unauthorized from GET ")
    assert str(info.value).endswith(
        "invalid API key: check PODQ_API_KEY or api_key=, or ask an admin for a valid key; "
        "pass api_key=..., set serverless.api_key, or export PODQ_API_KEY"
    )
    monkeypatch.delenv("PODQ_API_KEY")
    with Endpoint(live.endpoint_id) as keyless, pytest.raises(Unauthorized, match="missing API key"):
        keyless.health()
