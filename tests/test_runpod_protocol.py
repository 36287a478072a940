"""serverless/runpod_protocol.py: RunPod worker-protocol bodies -> podq events, as tables."""

from __future__ import annotations

import msgspec
import pytest

from serverless.errors import BadRequest
from serverless.model import Status, TakenJob, WorkerBeat, WorkerProtocol, WorkerState
from serverless.runpod_protocol import (
    Final,
    Progress,
    done_event,
    next_beat,
    parse_batch_size,
    parse_ping,
    stream_chunk,
    take_body,
    worker_env,
)

# every body shape of shared/reference/runpod-worker-protocol.md section 5
DONE = [
    (b'{"output": {"a": 1}}', Final(Status.COMPLETED, output=b'{"a": 1}')),
    (b"{}", Final(Status.COMPLETED)),
    (b'{"output": null}', Final(Status.COMPLETED, output=b"null")),
    (b'{"output": "t\xc3\xa9"}', Final(Status.COMPLETED, output='"té"'.encode())),
    (b'{"error": "x"}', Final(Status.FAILED, error="x")),
    (b'{"output": {"detail": 1}, "error": "bad seed"}',
     Final(Status.FAILED, output=b'{"detail": 1}', error="bad seed")),
    (b'{"error": {"code": 3}}', Final(Status.FAILED, error='{"code": 3}')),  # runpod-python#299
    (b'{"error": null, "output": 1}', Final(Status.COMPLETED, output=b"1")),
    (b'{"error": "", "output": 1}', Final(Status.COMPLETED, output=b"1")),
    (b'{"error": "{\\"error_type\\": \\"ValueError\\"}"}',
     Final(Status.FAILED, error='{"error_type": "ValueError"}')),  # an exception report
    (b'{"output": {"a": 1}, "stopPod": true}', Final(Status.COMPLETED, output=b'{"a": 1}', stop_pod=True)),
    (b'{"output": []}', Final(Status.COMPLETED, output=b"[]")),  # generator, no aggregate
    (b'{"output": [1, 2]}', Final(Status.COMPLETED, output=b"[1, 2]")),  # generator, aggregate
    (b'{"error": "handler: boom \\ntraceback: ..."}', Final(Status.FAILED, error="handler: boom \ntraceback: ...")),
    (b'{"status": "IN_PROGRESS", "output": {"p": 1}}', Progress(b'{"p": 1}')),
    (b'{"status": "IN_PROGRESS"}', Progress(b"null")),
    # a user's output that happens to say IN_PROGRESS is nested: a result, not progress
    (b'{"output": {"status": "IN_PROGRESS"}}', Final(Status.COMPLETED, output=b'{"status": "IN_PROGRESS"}')),
]


@pytest.mark.parametrize(("body", "event"), DONE)
def test_job_done_bodies_map_to_runpods_final_status(body: bytes, event: object) -> None:
    assert done_event(body) == event


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'{"stopPod": "yes"}', b'{"output": 1'])
def test_malformed_job_done_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest, match="job-done"):
        done_event(body)


def test_stream_chunk_is_the_raw_output() -> None:
    assert stream_chunk(b'{"output": "data: {\\"x\\": 1}\\n\\n"}') == b'"data: {\\"x\\": 1}\\n\\n"'
    assert stream_chunk(b"{}") == b"null"
    with pytest.raises(BadRequest, match="job-stream"):
        stream_chunk(b"[]")


def _job(i: int, **kw: object) -> TakenJob:
    return TakenJob(id=f"j{i}", endpoint="ep", input=msgspec.Raw(b'{"n": %d}' % i), attempt=1, **kw)


def test_take_body_is_an_object_for_one_and_an_array_for_a_batch() -> None:
    assert msgspec.json.decode(take_body([_job(1)], batch=False)) == {"id": "j1", "input": {"n": 1}}
    extra = _job(2, webhook="https://x", s3_config=msgspec.Raw(b'{"b": 1}'))
    assert msgspec.json.decode(take_body([_job(1), extra], batch=True)) == [
        {"id": "j1", "input": {"n": 1}},
        {"id": "j2", "input": {"n": 2}, "webhook": "https://x", "s3Config": {"b": 1}},
    ]


@pytest.mark.parametrize(("raw", "size"), [(None, 1), ("1", 1), ("30", 30), ("1000", 1000)])
def test_batch_size(raw: str | None, size: int) -> None:
    assert parse_batch_size(raw) == size


@pytest.mark.parametrize("raw", ["0", "-1", "1001", "x", "1.5"])
def test_bad_batch_size(raw: str) -> None:
    with pytest.raises(BadRequest, match="batch_size"):
        parse_batch_size(raw)


PINGS = [
    ({"gpu": "x", "runpod_version": "1.12.0"}, [], "1.12.0", None),
    ({"job_id": "d-3,d-1,d-2", "runpod_version": "1.7.13"}, ["d-3", "d-1", "d-2"], "1.7.13", None),
    ({"status": "unhealthy", "check": "memory_check", "reason": "MemoryError: low"}, [], "",
     "memory_check: MemoryError: low"),
    ({"status": "unhealthy", "reason": "r" * 400}, [], "", "r" * 256),
    ({"status": "unhealthy"}, [], "", "reported unhealthy"),
]


@pytest.mark.parametrize(("query", "ids", "version", "unhealthy"), PINGS)
def test_ping_query(query: dict, ids: list, version: str, unhealthy: str | None) -> None:
    ping = parse_ping(query)
    assert (ping.job_ids, ping.runpod_version, ping.unhealthy) == (ids, version, unhealthy)


def test_next_beat_keeps_start_idle_and_stuck_times_and_the_recycle_flag() -> None:
    idle = parse_ping({"runpod_version": "1.12.0"})
    first = next_beat(None, idle, endpoint="ep", worker_id="w", now=1000, interval_ms=10_000, stuck=[])
    assert (first.state, first.started_at, first.idle_since, first.protocol) == (
        WorkerState.IDLE, 1000, 1000, WorkerProtocol.RUNPOD)
    assert first.interval_ms == 10_000 and first.runpod_version == "1.12.0"
    later = next_beat(first, idle, endpoint="ep", worker_id="w", now=5000, interval_ms=10_000, stuck=[])
    assert (later.started_at, later.idle_since, later.seen_at) == (1000, 1000, 5000)
    busy = next_beat(later, parse_ping({"job_id": "a"}), endpoint="ep", worker_id="w", now=6000,
                     interval_ms=10_000, stuck=["a"])
    assert (busy.state, busy.idle_since, busy.stuck_since, busy.jobs) == (WorkerState.RUNNING, 0, 6000, ["a"])
    assert busy.runpod_version == "1.12.0"  # kept when a ping leaves it out
    still = next_beat(msgspec.structs.replace(busy, recycle=True), parse_ping({"job_id": "a"}),
                      endpoint="ep", worker_id="w", now=7000, interval_ms=10_000, stuck=["a"])
    assert still.stuck_since == 6000 and still.recycle
    sick = next_beat(still, parse_ping({"status": "unhealthy", "check": "c", "reason": "r"}),
                     endpoint="ep", worker_id="w", now=8000, interval_ms=10_000, stuck=[])
    assert sick.state is WorkerState.UNHEALTHY and sick.reason == "c: r" and sick.stuck_since == 0


def test_worker_env_is_runpods_shape_and_the_template_cannot_override_identity() -> None:
    env = worker_env("http://gw:8000/", "ep", "ep-w1", "k", ping_ms=10_000, gpu_label="NVIDIA RTX A5000",
                     template_env={"RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "false", "RUNPOD_POD_ID": "evil",
                                   "RUNPOD_REALTIME_PORT": "8080", "HF_MODEL_ID": "m"})
    assert env["RUNPOD_WEBHOOK_GET_JOB"] == "http://gw:8000/v2/ep/job-take/$ID?gpu=NVIDIA+RTX+A5000"
    assert env["RUNPOD_WEBHOOK_POST_OUTPUT"] == "http://gw:8000/v2/ep/job-done/$RUNPOD_POD_ID/$ID?gpu=NVIDIA+RTX+A5000"
    assert env["RUNPOD_WEBHOOK_POST_STREAM"] == "http://gw:8000/v2/ep/job-stream/$RUNPOD_POD_ID/$ID?gpu=NVIDIA+RTX+A5000"
    assert env["RUNPOD_WEBHOOK_PING"] == "http://gw:8000/v2/ep/ping/$RUNPOD_POD_ID?gpu=NVIDIA+RTX+A5000"
    assert (env["RUNPOD_AI_API_KEY"], env["RUNPOD_POD_ID"], env["RUNPOD_ENDPOINT_ID"]) == ("k", "ep-w1", "ep")
    assert env["RUNPOD_PING_INTERVAL"] == "10000"
    assert env["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] == "false"  # the template may turn checks back on
    assert "RUNPOD_REALTIME_PORT" not in env and env["HF_MODEL_ID"] == "m"
    assert worker_env("http://gw", "ep", "w", "k", ping_ms=1000)["RUNPOD_WEBHOOK_GET_JOB"].endswith("?gpu=")


def test_beat_defaults_keep_old_records_decodable() -> None:
    old = b'{"id": "w", "endpoint": "ep", "state": "idle"}'
    beat = msgspec.json.decode(old, type=WorkerBeat)
    assert beat.protocol is WorkerProtocol.PODQ and beat.interval_ms == 0 and not beat.recycle
