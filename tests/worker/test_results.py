"""Pure result shaping and handler classification."""

from __future__ import annotations

import json

import pytest

from serverless.model import Status
from worker import handlers, results
from worker.config import parse_config
from serverless.errors import ConfigError


@pytest.mark.parametrize(
    "value,status,output,error,refresh",
    [
        ("text", Status.COMPLETED, b'"text"', None, False),
        ({"a": 1}, Status.COMPLETED, b'{"a":1}', None, False),
        ({}, Status.COMPLETED, b"{}", None, False),
        ({"refresh_worker": True}, Status.COMPLETED, None, None, True),
        ({"error": "bad"}, Status.FAILED, None, "bad", False),
        ({"error": ""}, Status.COMPLETED, None, None, False),  # falsy error: RunPod completes
        ({"error": ["a"]}, Status.FAILED, None, '["a"]', False),
        ({"error": "x", "keep": 2, "refresh_worker": 1}, Status.FAILED, b'{"keep":2}', "x", True),
        (object(), Status.FAILED, None, None, False),
    ],
)
def test_from_return(value, status, output, error, refresh) -> None:
    got = results.from_return(value)
    assert got.status is status and got.output == output and got.refresh is refresh
    if error is not None or status is Status.COMPLETED:
        assert got.error == error
    else:
        assert "not JSON serializable" in got.error


def test_from_exception_shape() -> None:
    try:
        raise KeyError("k")
    except KeyError as e:
        got = results.from_exception(e, "w9")
    shape = json.loads(got.error)
    assert got.status is Status.FAILED
    assert set(shape) == {"error_type", "error_message", "error_traceback", "hostname", "worker_id"}
    assert shape["error_type"] == "<class 'KeyError'>" and shape["worker_id"] == "w9"


def test_stream_outcomes() -> None:
    assert results.from_stream([b"1", b'"a"']).output == b'[1,"a"]'
    assert results.from_stream(None).output == b"[]"
    assert results.chunk_error({"error": "oom"}) == "oom"
    assert results.chunk_error({"error": None, "x": 1}) is None


def test_handler_kinds() -> None:
    async def a(job): ...
    def g(job):
        yield 1
    async def ag(job):
        yield 1

    class Obj:
        async def __call__(self, job): ...

    assert [handlers.kind_of(f) for f in (lambda j: 1, a, g, ag, Obj())] == [
        handlers.Kind.FUNCTION, handlers.Kind.COROUTINE, handlers.Kind.GENERATOR,
        handlers.Kind.ASYNC_GENERATOR, handlers.Kind.COROUTINE,
    ]


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="needs a callable 'handler'"):
        parse_config({"handler": "nope"})
    with pytest.raises(ConfigError, match="'concurrency_modifier' must be callable"):
        parse_config({"handler": print, "concurrency_modifier": 3})
    cfg = parse_config({"handler": print, "concurrency_modifier": lambda c: c * 2})
    assert cfg.next_concurrency(2) == 4
    assert parse_config({"handler": print, "concurrency_modifier": lambda c: 0}).next_concurrency(3) == 3
