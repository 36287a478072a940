"""A handler file written for RunPod, unchanged: it imports runpod, not podq."""

import runpod


def handler(job):
    runpod.serverless.progress_update(job, "halfway")
    return f"hello {job['input']['name']}"


runpod.serverless.start({"handler": handler})
