"""The one way podq's processes (gateway, worker, scaler, `podq dev`) run their main coroutine:
on uvloop (a dependency) when it imports, else on asyncio's own loop.

The garbage collector is tuned first, once per process: what importing podq made is frozen
(`gc.freeze`: full collections no longer walk the modules, classes and functions that live as
long as the process), and a young-generation collection runs every GC_YOUNG allocations instead of
every 700. A gateway answering thousands of requests a second (or holding thousands of SSE
streams) allocates 700 objects in well under a millisecond, almost none of them in cycles, so
CPython's defaults run collections that free nothing hundreds of times a second. Cycles are
still collected, in fewer, larger passes.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


GC_YOUNG = 20_000  # allocations between young-generation collections (CPython: 700)


def tune_gc() -> None:
    """Freeze what exists now and collect the young generation less often (module docstring)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, older, oldest)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion in a new event loop (uvloop's when available) and return its result."""
    tune_gc()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
