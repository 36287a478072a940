"""An async handler that blocks the event loop on request: input.mode = ok | block."""

import os
import time
import uuid

import serverless

BOOT = uuid.uuid4().hex  # new in every process, and after every re-exec


async def handler(job):
    if job["input"].get("mode") == "block":
        while True:  # blocking code in an async def: the event loop never runs again
            time.sleep(0.01)
    return {"boot": BOOT, "pid": os.getpid(), "worker": os.environ.get("PODQ_WORKER_ID")}


if __name__ == "__main__":
    serverless.start({"handler": handler, "concurrency_modifier": lambda c: 2})
