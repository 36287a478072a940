"""Local test mode: `python handler.py --test_input '{"input": ...}'` or a test_input.json.

Runs one job through the same handler adapter and result shaping as the real worker (so a
generator is iterated and its chunks printed, unlike RunPod's local mode), prints the result
as JSON and exits 0, or 1 when the job did not complete.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from serverless.model import Status
from worker import handlers, results
from worker.config import HandlerConfig

LOCAL_JOB_ID = "local_test"


def parse_test_input(argv: list[str]) -> tuple[dict[str, Any] | None, str | None]:
    """The job given by --test_input or ./test_input.json, or an error message."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--test_input", default=None)
    args, _ = parser.parse_known_args(argv)
    source = "--test_input"
    text = args.test_input
    if text is None:
        path = Path("test_input.json")
        if not path.exists():
            return None, ("no job to run: pass --test_input '{\"input\": {...}}', add a "
                          "test_input.json, or run it as a worker with `podq worker <file> --endpoint ID`")
        source, text = "test_input.json", path.read_text()
    try:
        job = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"{source} is not valid JSON ({e})"
    if not isinstance(job, dict) or "input" not in job:
        return None, f'{source} must be an object with an "input" key, e.g. {{"input": {{"prompt": "hi"}}}}'
    job.setdefault("id", LOCAL_JOB_ID)
    return job, None


async def run_once(config: HandlerConfig, job: dict[str, Any]) -> dict[str, Any]:
    """Run one job locally; returns RunPod's result envelope."""
    streaming = handlers.is_streaming(config.handler)
    chunks: list[Any] = []
    try:
        async for item in handlers.run(config.handler, job, None):
            if isinstance(item, handlers.Return):
                outcome = results.from_stream(None) if streaming else results.from_return(item.value)
                break
            error = results.chunk_error(item.value)
            if error is not None:
                outcome = results.Outcome(Status.FAILED, error=error)
                break
            print(json.dumps({"stream": item.value}, default=str), flush=True)
            chunks.append(item.value)
    except Exception as e:
        outcome = results.from_exception(e, "local")
    envelope: dict[str, Any] = {"id": job["id"], "status": outcome.status.value}
    if streaming and outcome.status is Status.COMPLETED:
        envelope["output"] = chunks
    elif outcome.output is not None:
        envelope["output"] = msgspec.json.decode(outcome.output)
    if outcome.error is not None:
        envelope["error"] = outcome.error
    return envelope


def main(config: HandlerConfig, argv: list[str]) -> None:
    job, problem = parse_test_input(argv)
    if job is None:
        print(f"podq: {problem}", file=sys.stderr)
        sys.exit(1)
    envelope = asyncio.run(run_once(config, job))
    print(json.dumps(envelope, indent=2, default=str))
    sys.exit(0 if envelope["status"] == Status.COMPLETED.value else 1)
