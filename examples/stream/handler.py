"""Token streaming: an async generator; each yielded item is one chunk at the client."""

import asyncio

import serverless


async def handler(job):
    prompt = job["input"].get("prompt", "hello from podq")
    delay = float(job["input"].get("delay", 0.05))
    for i, word in enumerate(prompt.split()):
        serverless.progress_update(job, {"tokens": i + 1})
        yield {"token": word}
        await asyncio.sleep(delay)


if __name__ == "__main__":
    serverless.start({"handler": handler, "return_aggregate_stream": True})
