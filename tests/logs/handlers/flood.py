"""Prints `lines` lines as fast as it can; returns how long that took inside the handler
(tests/logs/test_flood.py, bench/scenarios/log_shipping.py). Input `{"lines": int}`."""

import time

import serverless


def handler(job):
    lines = job["input"]["lines"]
    started = time.perf_counter()
    for i in range(lines):
        print(f"flood line {i} of {lines}: some text as a handler would print it")
    return {"seconds": time.perf_counter() - started, "lines": lines}


if __name__ == "__main__":
    serverless.start({"handler": handler})
