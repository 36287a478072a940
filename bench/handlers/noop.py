"""No-op handler for benchmarks: returns at once; 10 jobs at a time (arq's default max_jobs)."""

import serverless


async def handler(job):
    return None


if __name__ == "__main__":
    serverless.start({"handler": handler, "concurrency_modifier": lambda current: 10})
