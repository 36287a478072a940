"""A long async job, for trying cancel and execution timeouts."""

import asyncio

import serverless


async def handler(job):
    seconds = float(job["input"].get("seconds", 30))
    steps = max(1, int(seconds * 10))
    for step in range(steps):
        serverless.progress_update(job, {"done": round(step / steps, 2)})
        await asyncio.sleep(seconds / steps)
    return {"slept": seconds}


if __name__ == "__main__":
    serverless.start({"handler": handler, "concurrency_modifier": lambda current: 8})
