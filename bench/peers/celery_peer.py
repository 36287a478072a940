"""Celery 5.5 with a Redis broker and the Redis result backend (pub/sub for `get()`): one worker
process (`celery worker -P prefork -c N`, N pool processes, prefetch multiplier 16, JSON,
--without-gossip/mingle/heartbeat). The client is a fresh Celery app on this peer's Redis that
sends by task name (`send_task`) and waits with `AsyncResult.get()`; Celery's client is
synchronous, so concurrent clients are threads (its result backend is per thread)."""

from __future__ import annotations

import gc
import signal
from typing import Any

from bench.peers.base import PY, Peer

TASK = "bench.handlers.celery_noop.noop"


class CeleryPeer(Peer):
    name = "Celery"
    sync = True
    stop_signal = signal.SIGQUIT  # Celery's cold shutdown: its warm one takes ~2 s

    async def start(self) -> None:
        from celery import Celery

        self.procs.spawn([PY, "-m", "celery", "-A", "bench.handlers.celery_noop", "worker",
                          "-P", "prefork", "-c", str(self.workers), "--loglevel", "ERROR",
                          "--without-gossip", "--without-mingle", "--without-heartbeat"],
                         {"BENCH_REDIS_URL": self.url})
        self.app = Celery("bench-client", broker=self.url, backend=self.url)
        self.app.conf.update(task_serializer="json", result_serializer="json",
                             accept_content=["json"], broker_connection_retry_on_startup=True)

    async def close_clients(self) -> None:
        app = getattr(self, "app", None)
        if app is not None:
            gc.collect()  # AsyncResults talk to Redis when collected: while it still runs
            app.close()

    def submit_sync(self) -> Any:
        return self.app.send_task(TASK)

    def result_sync(self, handle: Any) -> None:
        handle.get(timeout=self.result_timeout)
