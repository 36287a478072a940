"""The same no-op handler on RunPod's own SDK: `python bench/handlers/runpod_noop.py --rp_serve_api`."""

import runpod


async def handler(job):
    return None


runpod.serverless.start({"handler": handler})
