"""A RunPod worker written only against the public `runpod` package (modelled on RunPod's own
mock-worker). It runs unchanged under runpod 1.6.2, 1.7.13 and 1.12 in their own venvs.

MOCK_KIND: sync | async | gen | agen (the handler's kind); MOCK_AGGREGATE=1 sets
return_aggregate_stream; MOCK_CONCURRENCY=N sets concurrency_modifier; MOCK_REFRESH=1 sets
refresh_worker. A job's input directs it:
  sleep (s), output (return this), error (return {"error": ...} plus extra keys in `extra`),
  raise (raise ValueError), chunks (yield them; generators), yield_error (yield {"error": ...}),
  big (return a string of that many bytes), progress (progress_update each, 0.2 s apart), crash (os._exit(1)), refresh (refresh_worker).
"""

import asyncio
import os
import time

import runpod

KIND = os.environ.get("MOCK_KIND", "sync")


def _pre(job):
    data = job["input"] if isinstance(job["input"], dict) else {}
    for p in data.get("progress", []):
        runpod.serverless.progress_update(job, p)
        time.sleep(0.2)
    if data.get("crash"):
        os._exit(1)
    return data


def _result(data):
    if "raise" in data:
        raise ValueError(data["raise"])
    if "error" in data:
        return {"error": data["error"], **data.get("extra", {})}
    if "big" in data:
        return "x" * data["big"]
    out = data.get("output", {"echo": data})
    if data.get("refresh"):
        return {**out, "refresh_worker": True}
    return out


def sync_handler(job):
    data = _pre(job)
    time.sleep(data.get("sleep", 0))
    return _result(data)


async def async_handler(job):
    data = _pre(job)
    await asyncio.sleep(data.get("sleep", 0))
    return _result(data)


def gen_handler(job):
    data = _pre(job)
    for c in data.get("chunks", []):
        time.sleep(data.get("gap", 0))
        yield c
    if "yield_error" in data:
        yield {"error": data["yield_error"]}
    if "raise" in data:
        raise ValueError(data["raise"])


async def agen_handler(job):
    data = _pre(job)
    for c in data.get("chunks", []):
        await asyncio.sleep(data.get("gap", 0))
        yield c
    await asyncio.sleep(data.get("sleep", 0))
    if "yield_error" in data:
        yield {"error": data["yield_error"]}
    if "raise" in data:
        raise ValueError(data["raise"])


config = {"handler": {"sync": sync_handler, "async": async_handler, "gen": gen_handler,
                      "agen": agen_handler}[KIND]}
if os.environ.get("MOCK_AGGREGATE") == "1":
    config["return_aggregate_stream"] = True
if os.environ.get("MOCK_CONCURRENCY"):
    n = int(os.environ["MOCK_CONCURRENCY"])
    config["concurrency_modifier"] = lambda current: n
if os.environ.get("MOCK_REFRESH") == "1":
    config["refresh_worker"] = True

runpod.serverless.start(config)
