"""`podq dev handler.py`: Redis, the gateway and N workers in one process tree.

Redis comes from PODQ_REDIS_URL, else an embedded redis-server on a free port. The gateway runs
in this process; each worker is a `python -m worker` child, restarted (with backoff) if it dies.
Ctrl-C (or SIGTERM) drains the workers, stops the gateway and the embedded Redis, in that order.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from serverless import eventloop, logs
from serverless.errors import PodqError, redact_url
from serverless.gateway import GatewayOptions, start_gateway
from serverless.gateway.known_endpoints import KnownEndpoints
from serverless.redis_server import RedisProcess
from serverless.settings import load_settings
from serverless.store import JobStore, now_ms

MAX_BACKOFF_S = 30.0
# how long the banner waits for the first worker to register (its endpoint is a 404 until then)
READY_WAIT_S = 60.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="podq dev", description="Run gateway, Redis and workers locally.")
    p.add_argument("handler", help="handler file, e.g. examples/stream/handler.py")
    p.add_argument("--endpoint", help="endpoint id (default: the handler's folder name)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    return p


def default_endpoint(handler: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(handler).resolve().parent.name).strip("-")
    return name or "dev"


class WorkerSupervisor:
    """Keeps N worker processes alive; a worker that exits is started again after a backoff."""

    def __init__(self, handler: str, endpoint: str, redis_url: str, count: int) -> None:
        # the URL goes in the environment, not argv: argv (and a password in it) shows in `ps`
        self.cmd = [sys.executable, "-m", "worker", handler, "--endpoint", endpoint]
        self.env = {**os.environ, "PODQ_REDIS_URL": redis_url}
        self.count = count
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._stopping = False

    async def run(self) -> None:
        await asyncio.gather(*(self._keep(i) for i in range(self.count)))

    async def _keep(self, index: int) -> None:
        backoff = 0.5
        while not self._stopping:
            proc = subprocess.Popen([*self.cmd, "--worker-id", f"dev-{index}"], env=self.env)
            self.procs[index] = proc
            code = await asyncio.to_thread(proc.wait)
            if self._stopping:
                return
            print(f"podq dev: worker dev-{index} exited with {code}; restarting in {backoff:.1f}s",
                  file=sys.stderr)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def stop(self, grace_s: float) -> None:
        self._stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.to_thread(proc.wait, grace_s + 5)
            except subprocess.TimeoutExpired:
                proc.kill()


async def wait_for_workers(store: JobStore, endpoint: str, stop: asyncio.Event, timeout_s: float) -> bool:
    """Wait until the gateway knows `endpoint`: the dev endpoint is in no registry, so it exists
    while a worker of it lives (serverless/gateway/known_endpoints), and a call made before the
    first worker registers would be a 404. False when none registered within `timeout_s`."""
    known = KnownEndpoints(store.redis, store.stale_after_ms)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await known.is_known(endpoint, now_ms()):
        if stop.is_set() or loop.time() >= deadline:
            return False
        await asyncio.sleep(0.1)
    return True


def banner(url: str, endpoint: str, key: str, workers: int, redis_url: str) -> str:
    base = f"{url}/v2/{endpoint}"
    return f"""
podq dev is up: endpoint '{endpoint}', {workers} worker(s), Redis at {redis_url}
  API:     {base}/run | runsync | status/ID | stream/ID | cancel/ID | health
  API key: {key}
  try:     curl -s -X POST {base}/runsync -H 'Authorization: Bearer {key}' \\
             -H 'Content-Type: application/json' -d '{{"input": {{"prompt": "hello from podq"}}}}'
  Ctrl-C stops everything.
"""


async def run_dev(args: argparse.Namespace) -> None:
    # local development: webhooks to a receiver on this machine are the common case
    settings = load_settings().with_overrides(webhook_allow_private=True)
    embedded = None
    if not os.environ.get("PODQ_REDIS_URL"):
        embedded = RedisProcess().start()
        settings = settings.with_overrides(redis_url=embedded.url)
    key = os.environ.get("PODQ_API_KEY") or f"podq-dev-{secrets.token_urlsafe(12)}"
    endpoint = args.endpoint or default_endpoint(args.handler)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gateway = await start_gateway(settings, args.host, args.port, GatewayOptions(admin_key=key))
    workers = WorkerSupervisor(args.handler, endpoint, settings.redis_dsn, args.workers)
    supervising = asyncio.create_task(workers.run())
    try:
        if not await wait_for_workers(gateway.store, endpoint, stop, READY_WAIT_S) and not stop.is_set():
            print(f"podq dev: no worker of endpoint '{endpoint}' registered within {READY_WAIT_S:.0f} s; "
                  "calls to it answer 404 until one does (see the worker output above)",
                  file=sys.stderr, flush=True)
        print(banner(gateway.url, endpoint, key, args.workers, redact_url(settings.redis_url)), flush=True)
        await stop.wait()
    finally:
        print("podq dev: stopping workers, gateway and Redis", file=sys.stderr, flush=True)
        await workers.stop(settings.grace_period_s)
        supervising.cancel()
        await asyncio.gather(supervising, return_exceptions=True)
        await gateway.close()
        if embedded is not None:
            embedded.stop()


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    if not Path(args.handler).is_file():
        sys.exit(f"podq dev: handler file {args.handler!r} not found")
    logs.configure()
    try:
        eventloop.run(run_dev(args))
    except PodqError as e:
        sys.exit(f"podq dev: {e}")
    except OSError as e:
        sys.exit(f"podq dev: {e} (is port {args.port} taken? pass --port)")
