"""What every peer adapter shares: its own redis-server, worker processes in their own process
group (so nothing is left behind, even when a worker forks children), and the two measurements.

A peer is used as `async with Peer(workers=N) as p:` then `await p.latency(count, warmup)` (ms per
sequential round trip) and `await p.throughput(total, clients)` (jobs/s, submit -> every result).
Async peers implement `submit()` / `result(handle)`; sync peers (Celery, Dramatiq) implement
`submit_sync()` / `result_sync(handle)` and run in threads, one thread per client.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import ROOT, sequential, start_redis

PY = sys.executable


class Procs:
    """Processes started in their own sessions; stop() ends each whole process group."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logdir = Path(tempfile.mkdtemp(prefix="podq-bench-"))

    def spawn(self, cmd: Sequence[str], env: dict[str, str] | None = None,
              cwd: str | Path | None = None) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(list(cmd), cwd=cwd or ROOT, env={**os.environ, **(env or {})},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def check_alive(self) -> None:
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                raise RuntimeError(f"{' '.join(map(str, p.args))} exited with {p.returncode}:\n"
                                   + self.log_tail(i))

    def log_tail(self, i: int, chars: int = 1500) -> str:
        try:
            return (self.logdir / f"{i}.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace: float = 10, sig: int = signal.SIGTERM) -> None:
        for p in self.procs:
            _killpg(p.pid, sig)
        deadline = time.monotonic() + grace
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:  # whatever is left in each group (forked children included)
            _killpg(p.pid, signal.SIGKILL)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        shutil.rmtree(self.logdir, ignore_errors=True)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def sync_sequential(call: Callable[[], Any], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


class Peer:
    """One system under test on its own redis-server with `workers` worker processes."""

    name = ""
    sync = False  # True: submit_sync/result_sync, run from threads
    stop_signal = signal.SIGTERM  # sent to each worker's process group when done
    result_timeout = 120.0  # seconds a client waits for one result (2 while starting up)

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self.procs = Procs()
        self.redis = None

    @property
    def url(self) -> str:
        return self.redis.url

    # ---- to implement -------------------------------------------------------------------
    async def start(self) -> None:  # spawn workers (self.procs.spawn) and open clients
        raise NotImplementedError

    async def close_clients(self) -> None:
        pass

    async def submit(self) -> Any:
        raise NotImplementedError

    async def result(self, handle: Any) -> None:
        raise NotImplementedError

    def submit_sync(self) -> Any:
        raise NotImplementedError

    def result_sync(self, handle: Any) -> None:
        raise NotImplementedError

    # ---- lifecycle ----------------------------------------------------------------------
    async def __aenter__(self) -> Peer:
        self.redis = start_redis()
        try:
            await self.start()
            await self.ready()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            await self.close_clients()
        finally:
            self.procs.stop(sig=self.stop_signal)
            if self.redis is not None:
                self.redis.stop()

    async def ready(self, timeout: float = 60) -> None:
        """Until one round trip succeeds (the workers are up), then a short batch per worker."""
        deadline = time.monotonic() + timeout
        self.result_timeout = 2.0
        try:
            while True:
                self.procs.check_alive()
                try:
                    await asyncio.wait_for(self.roundtrip(), timeout=3)
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    if time.monotonic() > deadline:
                        raise
        finally:
            self.result_timeout = type(self).result_timeout
        await asyncio.sleep(0.3)  # let the other worker processes finish starting
        await self.throughput(20 * self.workers, min(16, 20 * self.workers))

    # ---- measurements -------------------------------------------------------------------
    async def roundtrip(self) -> None:
        if self.sync:
            await asyncio.to_thread(lambda: self.result_sync(self.submit_sync()))
        else:
            await self.result(await self.submit())

    async def latency(self, count: int, warmup: int = 20) -> list[float]:
        """`count` sequential submit -> result round trips (ms), after `warmup` unmeasured ones."""
        if self.sync:
            def call() -> None:
                self.result_sync(self.submit_sync())

            await asyncio.to_thread(sync_sequential, call, warmup)
            return await asyncio.to_thread(sync_sequential, call, count)
        await sequential(self.roundtrip, warmup)
        return await sequential(self.roundtrip, count)

    async def throughput(self, total: int, clients: int) -> float:
        """`clients` concurrent clients share `total` submits; each then waits for the results of
        its own jobs. Jobs/s from the first submit to the last result."""
        if self.sync:
            return await asyncio.to_thread(self._throughput_threads, total, clients)
        counter = iter(range(total))

        async def client() -> None:
            mine = [await self.submit() for _ in counter]
            for handle in mine:
                await self.result(handle)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return total / (time.perf_counter() - t0)

    def _throughput_threads(self, total: int, clients: int) -> float:
        counter = iter(range(total))
        lock = threading.Lock()
        errors: list[BaseException] = []

        def client() -> None:
            try:
                mine = []
                while True:
                    with lock:
                        if next(counter, None) is None:
                            break
                    mine.append(self.submit_sync())
                for handle in mine:
                    self.result_sync(handle)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        if errors:
            raise errors[0]
        return total / elapsed
