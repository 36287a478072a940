"""bench/handlers/stream_chunks.py on RunPod's own SDK, for its dev server:
`python bench/handlers/runpod_stream.py --rp_serve_api --rp_api_port P`."""

import asyncio
import time

import runpod


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


runpod.serverless.start({"handler": handler})
