"""The worker process: connect, serve until stopped, re-exec on refresh_worker.

`start(config)` decides the mode the way RunPod's SDK does: with PODQ_ENDPOINT_ID set (as
`podq worker`, `podq dev` and the scaler set it) it serves jobs from Redis; otherwise it runs
one local test job (--test_input or test_input.json).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from typing import Any

from serverless import eventloop, logs, nvml
from serverless.errors import ConfigError, PodqError
from serverless.queue import connect
from serverless.settings import Settings, load_settings
from serverless.store import JobStore
from worker import local, log_shipper
from worker.config import HandlerConfig, apply_memory_cap, parse_config
from worker.runtime import Worker
from worker.watchdog import Watchdog

log = logging.getLogger("podq.worker")


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


_started = False


def was_started() -> bool:
    """Whether this process called start() (a handler file that never does is a mistake)."""
    return _started


def start(config: dict[str, Any]) -> None:
    """Entry point of a handler file: `serverless.start({"handler": fn, ...})`."""
    global _started
    _started = True
    nvml.adopt_swarm_gpus()  # (a worker run as `python handler.py`: before any job runs)
    handler_config = parse_config(config)
    logs.configure()
    argv = sys.argv[1:]
    if "--rp_serve_api" in argv:
        print("podq: --rp_serve_api is RunPod's dev server; run `podq dev <handler.py>` for "
              "podq's gateway, queue and workers in one command", file=sys.stderr)
        sys.exit(2)
    if any(a.startswith("--test_input") for a in argv) or not os.environ.get("PODQ_ENDPOINT_ID"):
        log_shipper.release()  # (`podq worker` began capturing): a local run ships nothing
        local.main(handler_config, argv)
        return
    try:
        settings = load_settings()
    except ConfigError as e:
        print(f"podq: {e}", file=sys.stderr)
        sys.exit(2)
    run_worker(handler_config, settings)


def run_worker(config: HandlerConfig, settings: Settings) -> None:
    """Serve jobs until SIGTERM/SIGINT; on refresh_worker, replace this process with a fresh one."""
    if not settings.endpoint_id:
        raise ConfigError("PODQ_ENDPOINT_ID is not set: pass --endpoint ID or set the variable")
    worker_id = settings.worker_id or default_worker_id()
    try:
        apply_memory_cap(settings.worker_memory_mb)
        refresh = eventloop.run(serve(config, settings, worker_id))
    except PodqError as e:
        print(f"podq worker: {e}", file=sys.stderr)
        sys.exit(1)
    if refresh:
        log.info("refresh_worker: restarting worker %s", worker_id)
        reexec(worker_id)


def reexec(worker_id: str) -> None:
    """Replace this process with a fresh one running the same command (same pid, same worker
    id, so the registry and the scaler see the same worker). Safe from any thread."""
    os.environ["PODQ_WORKER_ID"] = worker_id
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


async def serve(config: HandlerConfig, settings: Settings, worker_id: str) -> bool:
    """Run one Worker to completion; returns True when it asked to be refreshed."""
    assert settings.endpoint_id is not None
    store = JobStore(await connect(settings.redis_dsn), settings)
    worker = Worker(config, store, settings, settings.endpoint_id, worker_id)
    worker.install_signal_handlers()
    watchdog = Watchdog(worker, settings, on_blocked=lambda: reexec(worker_id))
    watchdog.start()
    try:
        async with log_shipper.shipping(settings, store.redis, worker_id, lambda: worker.active):
            await worker.run()
    finally:
        await watchdog.stop()
        await store.close()
    return worker.refresh_requested

