"""A sync (def) handler that misbehaves on request: input.mode = ok | crash | spin | hog."""

import os
import uuid

import serverless

BOOT = uuid.uuid4().hex  # new in every process, and after every re-exec


def handler(job):
    mode = job["input"].get("mode", "ok")
    if mode == "crash":
        os._exit(1)  # a segfault, an abort() in a C extension: no cleanup, no result
    if mode == "spin":
        while True:  # Python cannot interrupt this thread
            pass
    if mode == "hog":
        hoard = []
        while True:  # allocates without bound, 32 MB at a time
            hoard.append(bytearray(32 << 20))
    return {"boot": BOOT, "pid": os.getpid(), "worker": os.environ.get("PODQ_WORKER_ID")}


if __name__ == "__main__":
    serverless.start({"handler": handler})
