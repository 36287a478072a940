"""Dramatiq 2 with its Redis broker and the Results middleware (Redis backend): `dramatiq
--processes N --threads 10`, and `dramatiq_worker_timeout=5` (ms): the consumer's idle poll backs
off to at most 5 ms instead of its default 1,000 ms. The client is a broker of its own on this
peer's Redis; it enqueues a message for the `noop` actor and blocks on
`backend.get_result(block=True)` (BRPOPLPUSH, no polling). Synchronous: clients are threads."""

from __future__ import annotations

from typing import Any

from bench.peers.base import PY, Peer

WORKER_TIMEOUT_MS = 5


class DramatiqPeer(Peer):
    name = "Dramatiq"
    sync = True

    async def start(self) -> None:
        from dramatiq.brokers.redis import RedisBroker
        from dramatiq.results import Results
        from dramatiq.results.backends import RedisBackend

        self.procs.spawn([PY, "-m", "dramatiq", "bench.handlers.dramatiq_noop",
                          "--processes", str(self.workers), "--threads", "10"],
                         {"BENCH_REDIS_URL": self.url,
                          "dramatiq_worker_timeout": str(WORKER_TIMEOUT_MS)})
        self.backend = RedisBackend(url=self.url)
        self.broker = RedisBroker(url=self.url)
        self.broker.add_middleware(Results(backend=self.backend))

    async def close_clients(self) -> None:
        broker = getattr(self, "broker", None)
        if broker is not None:
            broker.close()
            self.backend.client.close()

    def submit_sync(self) -> Any:
        from dramatiq import Message

        return self.broker.enqueue(Message(queue_name="default", actor_name="noop", args=(),
                                           kwargs={}, options={}))

    def result_sync(self, message: Any) -> None:
        self.backend.get_result(message, block=True, timeout=int(self.result_timeout * 1000))
