"""The clients' pure core: request building, reply parsing, flows and SSE decoding (no I/O)."""

from __future__ import annotations

import msgspec
import pytest

import serverless
import serverless.client
import serverless.gateway
from serverless import errors
from serverless.client import protocol
from serverless.client.events import SSEDecoder, SSEEvent
from serverless.client.protocol import EndpointRef, JobRef, Reply, Request, Sleep


@pytest.mark.parametrize(
    "given,sent",
    [
        ({"prompt": "x"}, {"input": {"prompt": "x"}}),  # RunPod wraps a bare input
        ({"input": {"a": 1}}, {"input": {"a": 1}}),
        ({"input": {}}, {"input": {}}),  # RunPod would double-wrap this falsy input
        ({"input": None, "webhook": "https://h/x"}, {"input": None, "webhook": "https://h/x"}),
        ({"input": 1, "policy": {"ttl": 9}}, {"input": 1, "policy": {"ttl": 9}}),
        ("text", {"input": "text"}),
        ([1, 2], {"input": [1, 2]}),
        ({}, {"input": {}}),
    ],
)
def test_wrap_input(given: object, sent: object) -> None:
    assert protocol.wrap_input(given) == sent


@pytest.mark.parametrize("timeout,wait", [(86400, 300_000), (30, 30_000), (0.2, 1_000), (1.5, 1_500)])
def test_runsync_asks_the_server_to_wait_within_its_range(timeout: float, wait: int) -> None:
    assert protocol.runsync_wait_ms(timeout) == wait


def test_base_url_and_key_resolve_lazily_package_then_env_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PODQ_ENDPOINT_BASE_URL", raising=False)
    monkeypatch.delenv("PODQ_API_KEY", raising=False)
    monkeypatch.setattr(serverless, "endpoint_url_base", None, raising=False)
    monkeypatch.setattr(serverless, "api_key", None, raising=False)
    assert protocol.resolve_base_url() == "http://127.0.0.1:8000/v2"
    assert protocol.resolve_api_key() is None
    monkeypatch.setenv("PODQ_ENDPOINT_BASE_URL", "http://env:1/v2/")
    monkeypatch.setenv("PODQ_API_KEY", "env-key")
    assert (protocol.resolve_base_url(), protocol.resolve_api_key()) == ("http://env:1/v2", "env-key")
    monkeypatch.setattr(serverless, "endpoint_url_base", "http://pkg:2/v2")
    monkeypatch.setattr(serverless, "api_key", "pkg-key")
    assert (protocol.resolve_base_url(), protocol.resolve_api_key()) == ("http://pkg:2/v2", "pkg-key")
    assert protocol.resolve_api_key("explicit") == "explicit"


def test_requests_carry_runpods_urls_and_headers() -> None:
    ep = EndpointRef("http://gw/v2", "ep1", protocol.auth_headers("k"))
    run = protocol.run_request(ep, {"a": 1})
    assert (run.method, run.url, run.body) == ("POST", "http://gw/v2/ep1/run", b'{"input":{"a":1}}')
    assert run.headers["Authorization"] == "Bearer k"
    sync = protocol.runsync_request(ep, 1, timeout_s=86400)
    assert sync.url == "http://gw/v2/ep1/runsync?wait=300000" and sync.timeout == 330
    job = JobRef(ep, "j1")
    assert protocol.job_request(job, "cancel", "POST", 3).url == "http://gw/v2/ep1/cancel/j1"
    stream = protocol.events_request(job, "5-0")
    assert stream.headers["Accept"] == "text/event-stream" and stream.headers["Last-Event-ID"] == "5-0"
    assert "Authorization" not in protocol.auth_headers(None)


def test_input_that_is_not_json_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="request_input is not JSON serializable"):
        protocol.encode_input({"x": object()})


@pytest.mark.parametrize(
    "status,error",
    [
        (400, errors.BadRequest), (404, errors.NotFound), (409, errors.Conflict),
        (413, errors.PayloadTooLarge), (429, errors.RateLimited), (503, errors.PodqError),
    ],
)
def test_error_replies_become_podq_errors_quoting_the_gateway(status: int, error: type) -> None:
    request = Request("GET", "http://gw/v2/ep/status/j?x=1", {})
    with pytest.raises(error) as info:
        protocol.decode_reply(request, Reply(status, b'{"error": "what happened"}'))
    assert str(info.value) == f"HTTP {status} from GET http://gw/v2/ep/status/j: what happened"


def test_non_json_success_names_the_base_url_setting() -> None:
    with pytest.raises(errors.PodqError, match="Check PODQ_ENDPOINT_BASE_URL"):
        protocol.decode_reply(Request("GET", "http://x", {}), Reply(200, b"<html>"))


@pytest.mark.parametrize(
    "body,outcome",
    [
        ({"id": "j", "status": "COMPLETED", "output": [1]}, [1]),
        ({"id": "j", "status": "COMPLETED"}, None),
        ({"id": "j", "status": "FAILED", "error": "boom"}, errors.JobFailed("j", "FAILED", "boom")),
        ({"id": "j", "status": "TIMED_OUT"}, errors.JobFailed("j", "TIMED_OUT", "the job ended TIMED_OUT")),
        ({"id": "j", "status": "CANCELLED"}, errors.JobFailed("j", "CANCELLED", "the job ended CANCELLED")),
    ],
)
def test_result_of(body: dict, outcome: object) -> None:
    if isinstance(outcome, errors.JobFailed):
        with pytest.raises(errors.JobFailed) as info:
            protocol.result_of(body)
        assert str(info.value) == str(outcome) and info.value.error == outcome.error
    else:
        assert protocol.result_of(body) == outcome


def drive(flow, replies: list[Reply]) -> tuple[object, list[object]]:
    """Run a flow against canned replies (no I/O); returns its result and the steps it took."""
    steps: list[object] = []
    answer = None
    try:
        while True:
            step = flow.send(answer)
            steps.append(step)
            answer = replies.pop(0) if isinstance(step, Request) else None
    except StopIteration as stop:
        return stop.value, steps


def test_429_is_retried_after_retry_after_then_given_up() -> None:
    ep = EndpointRef("http://gw/v2", "ep", {})
    limited = Reply(429, b'{"error": "slow down"}', "2")
    ok = Reply(200, b'{"id": "j", "status": "IN_QUEUE"}')
    result, steps = drive(protocol.run_flow(ep, 1), [limited, ok])
    assert result == "j" and steps[1] == Sleep(2.0)
    with pytest.raises(errors.RateLimited, match="slow down"):
        drive(protocol.run_flow(ep, 1), [limited] * 4)


def test_run_sync_polls_status_until_done_with_growing_delays() -> None:
    ep = EndpointRef("http://gw/v2", "ep", {})
    clock = iter(range(100)).__next__
    replies = [
        Reply(200, b'{"id": "j", "status": "IN_QUEUE"}'),
        Reply(200, b'{"id": "j", "status": "IN_PROGRESS"}'),
        Reply(200, b'{"id": "j", "status": "IN_PROGRESS"}'),
        Reply(200, b'{"id": "j", "status": "COMPLETED", "output": 42}'),
    ]
    result, steps = drive(protocol.run_sync_flow(ep, {}, 1000, clock), replies)
    assert result == 42
    assert [s.seconds for s in steps if isinstance(s, Sleep)] == [0.05, 0.1]
    assert [s.url for s in steps if isinstance(s, Request)][1:] == ["http://gw/v2/ep/status/j"] * 3


def test_a_terminal_job_is_cached_and_not_fetched_again() -> None:
    job = JobRef(EndpointRef("http://gw/v2", "ep", {}), "j")
    done = Reply(200, b'{"id": "j", "status": "COMPLETED", "output": 1}')
    assert drive(protocol.status_flow(job), [done])[0]["status"] == "COMPLETED"
    assert drive(protocol.status_flow(job), []) == ({"id": "j", "status": "COMPLETED", "output": 1}, [])


def feed_all(pieces: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    return [event for piece in pieces for event in decoder.feed(piece)]


@pytest.mark.parametrize(
    "pieces,events",
    [
        ([b"data: a\n\n"], [SSEEvent("message", b"a", None)]),
        ([b"id: 1-0\ndata: x\r\n\r\n"], [SSEEvent("message", b"x", "1-0")]),
        ([b"data: x\r", b"\n\r\n"], [SSEEvent("message", b"x", None)]),  # CRLF split across reads
        ([b"data: x\r\r: next"], [SSEEvent("message", b"x", None)]),  # CR alone ends lines too
        ([b"da", b"ta: {\"a\"", b": 1}\n", b"\n"], [SSEEvent("message", b'{"a": 1}', None)]),
        ([b": keep-alive\n\n"], []),
        ([b"event: status\ndata: 1\ndata: 2\n\n"], [SSEEvent("status", b"1\n2", None)]),
        ([b"data:no-space\n\n"], [SSEEvent("message", b"no-space", None)]),
        (["data: \"é\"\n\n".encode()[:8], "data: \"é\"\n\n".encode()[8:]],
         [SSEEvent("message", '"é"'.encode(), None)]),  # UTF-8 split mid-character
        ([b"data: unfinished\n"], []),
    ],
)
def test_sse_decoder(pieces: list[bytes], events: list[SSEEvent]) -> None:
    assert feed_all(pieces) == events


def test_stream_state_collects_outputs_remembers_cursor_and_final() -> None:
    job = JobRef(EndpointRef("http://gw/v2", "ep", {}), "j")
    state = protocol.StreamState(job)
    state.request()
    assert state.feed(b'id: 1-0\ndata: {"output": "a"}\n\nid: 2-0\ndata: {"output"') == ["a"]
    assert state.last_id == "1-0"
    assert state.feed(b': 3}\n\n') == [3] and state.last_id == "2-0"
    assert protocol.events_request(job, state.last_id).headers["Last-Event-ID"] == "2-0"
    final = msgspec.json.encode({"id": "j", "status": "CANCELLED"})
    assert state.feed(b"event: status\ndata: " + final + b"\n\n") == [] and state.done
    assert job.final == {"id": "j", "status": "CANCELLED"}


def test_stream_gives_up_after_repeated_closes_without_progress() -> None:
    state = protocol.StreamState(JobRef(EndpointRef("http://gw/v2", "ep", {}), "j"))
    for _ in range(protocol.STREAM_RECONNECTS):
        state.ended()
    with pytest.raises(errors.PodqError, match="closed 4 times without its final event"):
        state.ended()


@pytest.mark.parametrize("module", [serverless.client, serverless.gateway])
def test_public_names_sorted_and_importable(module: object) -> None:
    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None
