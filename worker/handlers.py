"""The four handler kinds (def, async def, generator, async generator) as one async iterator.

`run(handler, job, pool)` yields `Yield(item)` for each streamed item and finally one
`Return(value)`. Sync code never runs on the event loop: a plain function runs in the worker's
thread pool, a sync generator is iterated by a thread that hands items over one by one, so
heartbeats and concurrent jobs keep running while a handler computes.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextvars import ContextVar, copy_context
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    FUNCTION = "function"
    COROUTINE = "coroutine"
    GENERATOR = "generator"
    ASYNC_GENERATOR = "async generator"


class Yield:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Return:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


# The job whose handler code is being submitted to the pool (set by the job's task).
current_job: ContextVar[str | None] = ContextVar("podq_current_job", default=None)


class JobThreads(ThreadPoolExecutor):
    """The handler thread pool, which knows which job's code each busy thread runs.

    Python cannot stop a thread: a sync handler that ran past its timeout keeps its thread
    (and a share of the GIL) until it returns, maybe never. `busy(job_id)` tells the worker
    whether that happened, so it can replace its process once its other jobs are done.

    Each call runs in a copy of the submitting task's context, so sync handler code sees the
    job id its task set (`current_job`): the log shipper (worker/log_shipper.py) tags what it
    prints with its own job, whatever the concurrency.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str = "") -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._busy: Counter[str] = Counter()
        self._busy_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(copy_context().run, fn, *args, **kwargs)
        job_id = current_job.get()
        if job_id is not None:
            with self._busy_lock:
                self._busy[job_id] += 1
            future.add_done_callback(lambda _: self._release(job_id))  # returned or cancelled
        return future

    def _release(self, job_id: str) -> None:
        with self._busy_lock:
            self._busy[job_id] -= 1
            if self._busy[job_id] <= 0:
                del self._busy[job_id]

    def busy(self, job_id: str) -> bool:
        """Whether code submitted for `job_id` is still running (or waiting) in a thread."""
        with self._busy_lock:
            return self._busy.get(job_id, 0) > 0


def kind_of(handler: Callable[..., Any]) -> Kind:
    """Classify a handler; callable objects are judged by their __call__ (RunPod misses those)."""
    target = handler if inspect.isroutine(handler) else getattr(handler, "__call__", handler)
    if inspect.isasyncgenfunction(target):
        return Kind.ASYNC_GENERATOR
    if inspect.isgeneratorfunction(target):
        return Kind.GENERATOR
    if inspect.iscoroutinefunction(target):
        return Kind.COROUTINE
    return Kind.FUNCTION


def is_streaming(handler: Callable[..., Any], kind: Kind | None = None) -> bool:
    return (kind or kind_of(handler)) in (Kind.GENERATOR, Kind.ASYNC_GENERATOR)


async def run(handler: Callable[..., Any], job: dict[str, Any], pool: Executor | None,
              kind: Kind | None = None) -> AsyncIterator[Yield | Return]:
    """Run `handler(job)` and yield its stream items, then its return value. `kind`: the
    handler's kind_of, when the caller keeps it (a worker classifies its handler once)."""
    kind = kind or kind_of(handler)
    if kind is Kind.ASYNC_GENERATOR:
        agen = handler(job)
        try:
            async for item in agen:
                yield Yield(item)
        finally:
            await agen.aclose()
        yield Return(None)
    elif kind is Kind.GENERATOR:
        async for item in _iterate_in_thread(handler(job), pool):
            yield Yield(item)
        yield Return(None)
    elif kind is Kind.COROUTINE:
        yield Return(await handler(job))
    else:
        value = await asyncio.get_running_loop().run_in_executor(pool, handler, job)
        if inspect.isawaitable(value):  # a def that returns a coroutine
            value = await value
        yield Return(value)


_DONE = object()


async def _iterate_in_thread(gen: Any, pool: Executor | None) -> AsyncIterator[Any]:
    """Drive a sync generator from a pool thread; items arrive through an asyncio queue.

    The thread checks `stop` between items, so a cancelled job closes its generator at the
    next yield (code inside one step cannot be interrupted from Python).
    """
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in gen:
                loop.call_soon_threadsafe(items.put_nowait, (True, item))
                if stop.is_set():
                    break
            loop.call_soon_threadsafe(items.put_nowait, (True, _DONE))
        except BaseException as e:  # handed to the event loop, re-raised there
            loop.call_soon_threadsafe(items.put_nowait, (False, e))
        finally:
            gen.close()

    producer = loop.run_in_executor(pool, produce)
    try:
        while True:
            ok, item = await items.get()
            if not ok:
                raise item
            if item is _DONE:
                break
            yield item
    finally:
        stop.set()
        if producer.done():
            producer.result()
