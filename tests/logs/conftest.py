"""Fixtures of the log tests: the gateway fixtures (a real gateway over the real redis-server),
the session's Docker engine, and `ship`, which writes lines into an endpoint's log stream through
the real shipper (worker/log_shipper.py), as a worker does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import msgspec

from serverless.store import JobStore
from tests.backends.docker_engine import docker_engine  # noqa: F401  (fixture)
from tests.gateway.conftest import ADMIN_KEY, Gateway, gateway, make_gateway, registered  # noqa: F401  (fixtures)
from worker.handlers import current_job
from worker.log_shipper import LogShipper, Target

# (worker, job, text) -> a line as a worker wrote it
Written = tuple[str, str, str]


async def ship(store: JobStore, endpoint: str, lines: Iterable[Written], *,
               maxlen: int = 100_000) -> None:
    """Write `lines` to the endpoint's stream as their workers' shippers would: each line
    captured in its job's context, then flushed (one shipper per worker)."""
    by_worker: dict[str, LogShipper] = {}
    for worker, job, text in lines:
        shipper = by_worker.setdefault(worker, LogShipper(1_000_000))
        token = current_job.set(job or None)
        try:
            shipper.add("stdout", "", text)
        finally:
            current_job.reset(token)
    for worker, shipper in by_worker.items():
        await send_all(shipper, store, endpoint, worker, maxlen)


async def send_all(shipper: LogShipper, store: JobStore, endpoint: str, worker: str = "w-1",
                   maxlen: int = 100_000) -> None:
    """Flush everything `shipper` holds into the endpoint's stream, as `worker`."""
    target = Target(store.redis, endpoint, worker, maxlen)
    await shipper.drain(target)
    await target.close()


async def poll(check: Callable[[], object], timeout: float = 20, every: float = 0.05) -> object:
    """Call the coroutine function `check` until it returns something truthy; that value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()  # type: ignore[misc]
        if value or loop.time() > deadline:
            return value
        await asyncio.sleep(every)


async def logs_of(gw: Gateway, endpoint: str, query: str = "") -> dict:
    """GET /v1/endpoints/{endpoint}/logs?{query} with the admin key; the JSON body (asserts 200)."""
    answer = await gw.call("GET", f"/v1/endpoints/{endpoint}/logs?{query}")
    assert answer.status == 200, answer.body
    return msgspec.to_builtins(answer.body)

