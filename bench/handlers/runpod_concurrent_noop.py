"""The no-op handler on RunPod's SDK with a concurrency_modifier: up to 8 jobs at a time per
worker process (the SDK then takes jobs with job-take-batch). Nothing podq-specific: the
gateway's URLs reach it through the RUNPOD_* environment (bench/peers/podq_runpod_worker.py)."""

import runpod


async def handler(job):
    return None


runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda current: 8})
