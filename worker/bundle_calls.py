"""Pure parts of the bundle runner (worker/bundle.py): what a Launch request asks for, and how
a bundle's predict function is called with it.

A job's input is a Launch `EndpointRequest` as serverless/launch sends it: `{"args": ...}` or
`{"url": "https://..."}` (exactly one), `return_pickled` false or absent. Launch documents `args`
two ways: as keyword arguments (`predict_fn(foo, bar)` gets `{"foo": .., "bar": ..}`) and as the
one REQUEST argument (`predict_fn(REQUEST)`). `call_args` does the first when the dict's keys
bind to the function's parameters, else the second; the bytes of a `url` are always the one
positional argument (Launch: "opened as a sequence of bytes and passed to the predict function").
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

URL_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class ArgsRequest:
    args: Any


@dataclass(frozen=True)
class UrlRequest:
    url: str


LaunchRequest = ArgsRequest | UrlRequest


def parse_request(value: Any) -> LaunchRequest:
    """A job input -> the request it holds; ValueError (a FAILED job) naming the fix."""
    if not isinstance(value, dict):
        raise ValueError(f"a Launch request is a JSON object with `args` or `url`, got {type(value).__name__}")
    if value.get("return_pickled"):
        raise ValueError("return_pickled=True is not supported: podq never pickles; results come back as JSON")
    unknown = sorted(set(value) - {"args", "url", "return_pickled", "request_id"})
    if unknown:
        raise ValueError(f"unknown request field(s) {', '.join(unknown)}; send `args` or `url`")
    has_args, has_url = value.get("args") is not None, value.get("url") is not None
    if has_args == has_url:
        raise ValueError("exactly one of `url` and `args` must be given")
    if has_url:
        return UrlRequest(check_url(value["url"]))
    return ArgsRequest(value["args"])


def check_url(url: Any) -> str:
    """An absolute http(s) URL with a host, else ValueError."""
    if not isinstance(url, str):
        raise ValueError(f"url must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in URL_SCHEMES or not parts.hostname:
        raise ValueError(f"url {url!r} is not an http(s) URL with a host; the worker fetches only http and https")
    return url


def call_args(fn: Callable[..., Any], args: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """How to call `fn` with a request's `args`: as keywords when a dict binds to its
    parameters by name, else as its one positional argument."""
    if isinstance(args, dict) and all(isinstance(k, str) for k in args):
        try:
            inspect.signature(fn).bind(**args)
            return (), dict(args)
        except TypeError:
            pass
        except ValueError:  # no signature (a builtin): only the one-argument form is safe
            return (args,), {}
    return (args,), {}


def split_path(path: str) -> tuple[str, str]:
    """`pkg.module.fn` or `pkg.module:fn` -> (module, function)."""
    module, sep, name = path.rpartition(":") if ":" in path else path.rpartition(".")
    if not module or not name or not sep:
        raise ValueError(f"{path!r} is not a function path; use package.module.function")
    return module, name


def import_function(path: str) -> Callable[..., Any]:
    """The function at a dotted path (the bundle's folder is on sys.path)."""
    module_name, name = split_path(path)
    module = importlib.import_module(module_name)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"{path!r}: module {module_name!r} has no function {name!r}")
    return fn


def is_generator(fn: Callable[..., Any]) -> bool:
    """A predict function that yields (a streaming bundle), or a callable object whose
    __call__ does."""
    return inspect.isgeneratorfunction(fn) or inspect.isgeneratorfunction(getattr(fn, "__call__", None))


def requirements_key(requirements: list[str]) -> str:
    """The cache key of a requirement set: the sha256 of its sorted, stripped lines."""
    text = "\n".join(sorted({r.strip() for r in requirements if r.strip()}))
    return hashlib.sha256(text.encode()).hexdigest()[:24]
