"""Streaming benchmark handler (bench/scenarios/streaming.py), on podq's SDK.

input {"n": N, "gap": s, "wait": s}: first sleeps `wait` s (so the client is connected before
the first chunk); then with gap > 0, N chunks {"i", "t"} stamped with time.time() when yielded,
`gap` seconds apart (yield -> client latency); with gap 0, N small chunks (the int i) as fast as
the generator runs (chunks/s of one job).
"""

import asyncio
import time

import serverless


async def handler(job):
    n, gap = int(job["input"].get("n", 100)), float(job["input"].get("gap", 0))
    await asyncio.sleep(float(job["input"].get("wait", 0)))  # lets the client connect first
    if gap:
        for i in range(n):
            yield {"i": i, "t": time.time()}
            await asyncio.sleep(gap)
    else:
        for i in range(n):
            yield i


if __name__ == "__main__":
    serverless.start({"handler": handler})
