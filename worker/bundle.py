"""The bundle runner: a podq worker that serves a Scale Launch model bundle.

Started like any handler file (`python -m worker /path/to/worker/bundle.py`, what a bundle's
template says for the process backend) or as `python -m worker.bundle` (a container image's
command). On start it makes the bundle importable (worker/bundle_setup.py: fetch, unpack,
requirements venv), calls `load_model_fn()` once and `load_predict_fn(model)` once (with
`app_config=` when the bundle has one), then serves jobs: each job's input is a Launch request
(worker/bundle_calls.py), `{"args": ...}` or `{"url": ...}` (the URL's bytes, fetched here, at
most URL_MAX_BYTES), and the predict function's return value is the job's JSON output. A
predict function that yields streams each item as a chunk (Launch's streaming endpoints).
Concurrency is PODQ_BUNDLE_CONCURRENCY (Launch's `per_worker`). An exception fails the job with
its traceback; a bundle that cannot load exits the worker with the reason in its log.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from serverless.errors import ConfigError
from serverless.settings import load_settings
from worker.bundle_calls import (
    ArgsRequest, UrlRequest, call_args, import_function, is_generator, parse_request,
)
from worker.bundle_setup import BundleSpec, prepare

URL_MAX_BYTES = 100 * 1024 * 1024
URL_TIMEOUT_S = 60.0


def fetch_url(url: str, cap: int = URL_MAX_BYTES) -> bytes:
    """The bytes at an http(s) URL (redirects followed), at most `cap`."""
    parts: list[bytes] = []
    size = 0
    with httpx.stream("GET", url, follow_redirects=True, timeout=URL_TIMEOUT_S) as response:
        if response.status_code != 200:
            raise ValueError(f"fetching {url} answered HTTP {response.status_code}; the URL must be "
                             "readable by the worker (public or signed)")
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > cap:
                raise ValueError(f"{url} is over {cap} bytes; pass a smaller file")
            parts.append(chunk)
    return b"".join(parts)


def load_predict(spec: BundleSpec) -> Callable[..., Any]:
    """load_model_fn() once, then load_predict_fn(model) once: the predict function."""
    model = import_function(spec.load_model_fn)()
    load_predict_fn = import_function(spec.load_predict_fn)
    if spec.app_config:
        return load_predict_fn(model, app_config=json.loads(spec.app_config))
    return load_predict_fn(model)


def _arguments(job_input: Any, predict: Callable[..., Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    match parse_request(job_input):
        case UrlRequest(url):
            return (fetch_url(url),), {}
        case ArgsRequest(args):
            return call_args(predict, args)


def make_handler(predict: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
    """A podq handler around `predict`: a generator handler when `predict` yields."""
    if is_generator(predict):
        def stream(job: dict[str, Any]) -> Iterator[Any]:
            args, kwargs = _arguments(job["input"], predict)
            yield from predict(*args, **kwargs)

        return stream

    def handle(job: dict[str, Any]) -> Any:
        args, kwargs = _arguments(job["input"], predict)
        return predict(*args, **kwargs)

    return handle


def serve() -> None:
    """Load the bundle named by the env and serve it."""
    from worker import start

    here = str(Path(__file__).resolve().parent)
    if sys.path and sys.path[0] == here:  # `python -m worker <this file>` put worker/ first
        sys.path.pop(0)
    try:
        spec = BundleSpec.from_env(os.environ)
        prepare(spec, load_settings())
        predict = load_predict(spec)
    except ConfigError as e:
        sys.exit(f"podq bundle: {e}")
    print(f"podq bundle: {spec.bundle_id} loaded; serving with concurrency {spec.concurrency}",
          file=sys.stderr, flush=True)
    start({
        "handler": make_handler(predict),
        "return_aggregate_stream": is_generator(predict),
        "concurrency_modifier": lambda _current: spec.concurrency,
    })


if __name__ == "__main__":
    if __spec__ is not None:  # `python -m worker.bundle`: set up as `python -m worker` does
        from worker.files import main

        main([__file__, *sys.argv[1:]])
    else:
        serve()
