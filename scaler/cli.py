"""`podq scaler [--backends process,docker,swarm] [--tick 1.0]`: run the autoscaler (one leader at a time)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from scaler.backends.base import Backend, BackendError
from scaler.backends.process import ProcessBackend
from scaler.loop import Scaler
from serverless import eventloop, logs
from serverless.errors import PodqError
from serverless.queue import connect
from serverless.registry import Registry
from serverless.settings import Settings, load_settings
from serverless.store import JobStore


def make_backends(names: list[str], settings: Settings) -> dict[str, Backend]:
    backends: dict[str, Backend] = {}
    for name in names:
        if name == "process":
            backends[name] = ProcessBackend(settings.redis_url)
        elif name == "docker":
            from scaler.backends.docker import DockerBackend

            backends[name] = DockerBackend()
        elif name == "swarm":
            from scaler.backends.swarm import SwarmBackend

            # PODQ_DOCKER_* (a swarm manager's engine) and PODQ_SWARM_*; the services' stop grace
            backends[name] = SwarmBackend(grace_s=settings.grace_period_s)
        else:
            raise PodqError(f"unknown backend {name!r}; use process, docker or swarm")
    return backends


async def run_scaler(settings: Settings, backend_names: list[str], tick_s: float) -> None:
    store = JobStore(await connect(settings.redis_dsn), settings)
    backends = make_backends(backend_names, settings)
    scaler = Scaler(Registry(store.redis), store, backends, settings, tick_s=tick_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await scaler.run(stop)
    finally:
        await scaler.close()
        for backend in backends.values():
            await backend.close()
        await store.close()


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="podq scaler", description="Run podq's autoscaler.")
    p.add_argument("--backends", default="process", help="comma-separated: process, docker, swarm (docs/scaling.md)")
    p.add_argument("--tick", type=float, default=1.0, help="seconds between reconciliations")
    args = p.parse_args(argv)
    logs.configure()
    try:
        eventloop.run(run_scaler(load_settings(), args.backends.split(","), args.tick))
    except (PodqError, BackendError) as e:
        sys.exit(f"podq scaler: {e}")
