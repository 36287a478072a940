"""Streams `n` chunks, each carrying the time it was yielded (for yield -> SSE client latency)."""

import asyncio
import time

import serverless


async def handler(job):
    n, gap = int(job["input"].get("n", 100)), float(job["input"].get("gap", 0.005))
    for i in range(n):
        yield {"i": i, "t": time.time()}
        if gap:
            await asyncio.sleep(gap)


if __name__ == "__main__":
    serverless.start({"handler": handler, "concurrency_modifier": lambda current: 10})
