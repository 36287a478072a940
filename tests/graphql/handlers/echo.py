"""A RunPod worker written only against the public `runpod` package: echoes its input and the
GREETING its template's env gave it."""

import os

import runpod


def handler(job):
    return {"echo": job["input"], "greeting": os.environ.get("GREETING")}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
