"""Sleeps input.seconds (async), reporting which worker ran it."""

import asyncio
import os

import serverless


async def handler(job):
    await asyncio.sleep(float(job["input"].get("seconds", 0)))
    return {"worker": os.environ.get("PODQ_WORKER_ID"), "pid": os.getpid()}


if __name__ == "__main__":
    serverless.start({"handler": handler, "concurrency_modifier": lambda c: 4})
