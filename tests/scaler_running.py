"""A real Scaler running beside a test: its loop until the block ends, then closed, and the
workers its backends still run stopped (the tests that drive a scaler all end this way)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from scaler.backends.base import Backend
from scaler.loop import Scaler


@asynccontextmanager
async def running(scaler: Scaler, *backends: Backend, grace_s: float = 0.5) -> AsyncIterator[Scaler]:
    """Run `scaler` until the block ends; then stop its loop, close it, and stop every worker
    `backends` list (give none to leave them running)."""
    stop = asyncio.Event()
    task = asyncio.create_task(scaler.run(stop))
    try:
        yield scaler
    finally:
        stop.set()
        await task
        await scaler.close()
        for backend in backends:
            await asyncio.gather(*(backend.stop(h, grace_s) for h in await backend.list()))
