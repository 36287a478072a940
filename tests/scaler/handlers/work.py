"""Sleeps input.seconds, one job at a time; reports the worker that ran it."""

import asyncio
import os

import serverless


async def handler(job):
    await asyncio.sleep(float(job["input"].get("seconds", 0)))
    return {"worker": os.environ.get("PODQ_WORKER_ID"), "version": os.environ.get("PODQ_WORKER_VERSION")}


if __name__ == "__main__":
    serverless.start({"handler": handler})
