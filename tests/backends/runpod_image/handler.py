"""A RunPod worker as RunPod's docs write one: only the public `runpod` package, started by the
image's own CMD (`python -u /app/handler.py`). podq must run it unchanged."""

import os

import runpod


def handler(job):
    return {"echo": job["input"], "pod": os.environ.get("RUNPOD_POD_ID"), "sdk": runpod.__version__}


runpod.serverless.start({"handler": handler})
