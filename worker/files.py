"""`podq worker path/to/handler.py --endpoint ID`: run a handler file as a worker.

The file runs as `__main__` (so its `if __name__ == "__main__": serverless.start(...)` block
runs), with PODQ_ENDPOINT_ID / PODQ_REDIS_URL / PODQ_WORKER_ID set from the flags and
`import runpod` routed to podq (worker/compat.py).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path

from redis.exceptions import RedisError

from serverless import keys, nvml
from serverless.codec import encode_json
from serverless.errors import ConfigError, PodqError
from serverless.model import WorkerBeat, WorkerState
from serverless.queue import connect_sync
from serverless.settings import load_settings
from serverless.store import now_ms
from worker import compat, log_shipper, process
from worker.config import apply_memory_cap


def build_parser(prog: str = "podq worker") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Run a handler file as a podq worker.")
    p.add_argument("handler", help="path to the handler file (calls serverless.start)")
    p.add_argument("--endpoint", help="endpoint id (default: $PODQ_ENDPOINT_ID)")
    p.add_argument("--redis", help="Redis URL (default: $PODQ_REDIS_URL)")
    p.add_argument("--worker-id", help="worker id (default: $PODQ_WORKER_ID or host-pid-random)")
    return p


def run_file(handler: str, endpoint: str | None, redis: str | None, worker_id: str | None,
             rest: list[str]) -> None:
    path = Path(handler)
    if not path.is_file():
        sys.exit(f"podq worker: handler file {handler!r} not found")
    for var, value in (("PODQ_ENDPOINT_ID", endpoint), ("PODQ_REDIS_URL", redis),
                       ("PODQ_WORKER_ID", worker_id)):
        if value:
            os.environ[var] = value
    if not os.environ.get("PODQ_ENDPOINT_ID"):
        sys.exit("podq worker: no endpoint: pass --endpoint ID or set PODQ_ENDPOINT_ID")
    if compat.uses_runpod(path.read_text(errors="replace")):
        compat.install()
    nvml.adopt_swarm_gpus()  # before the handler file loads CUDA
    try:  # before the handler file loads its model: the cap covers that too
        settings = load_settings()
        apply_memory_cap(settings.worker_memory_mb)
    except ConfigError as e:
        sys.exit(f"podq worker: {e}")
    log_shipper.capture(settings)  # the handler file's own output (a model loading) is shipped too
    announce_initializing()
    sys.argv = [str(path), *rest]
    sys.path.insert(0, str(path.resolve().parent))
    runpy.run_path(str(path), run_name="__main__")
    if not process.was_started():
        sys.exit(f"podq worker: {handler} ran without calling serverless.start({{'handler': fn}})")


def announce_initializing() -> None:
    """Register as `initializing` before the handler file loads its model (which can take
    minutes), so /health and the scaler see the worker at once. Best effort: the worker
    registers again when it starts serving."""
    try:
        settings = load_settings()
        endpoint = settings.endpoint_id or ""
        worker_id = settings.worker_id or ""
        if not worker_id:
            return  # the id is made up later; the serving worker registers itself
        beat = WorkerBeat(id=worker_id, endpoint=endpoint, state=WorkerState.INITIALIZING,
                          pid=os.getpid(), seen_at=now_ms(), started_at=now_ms(),
                          version=int(os.environ.get("PODQ_WORKER_VERSION", "0") or 0))
        client = connect_sync(settings.redis_dsn)
        client.hset(keys.workers(endpoint), worker_id, encode_json(beat))
        client.close()
    except (RedisError, OSError, PodqError) as e:
        print(f"podq worker: could not register as initializing ({e}); continuing", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    args, rest = build_parser().parse_known_args(argv)
    run_file(args.handler, args.endpoint, args.redis, args.worker_id, rest)
