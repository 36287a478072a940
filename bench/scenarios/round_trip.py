"""Redis round trips: podq's AutoPipeline against redis-py's asyncio client, the client podq's
round trips used to go through (serverless/autopipeline.py says why they no longer do).

One process, its own redis-server, `clients` concurrent tasks each sending GET one after another
(a short command: the client's own cost is what is measured, not Redis's). Figures: commands per
second, and this process's CPU per command (user + system, `time.process_time`), which counts
the client's Python, its event loop and its system calls. At 1 client every command is its own
round trip, as a worker's take or finish mostly is under load; at 16 and 64 the AutoPipeline
batches the commands of one loop turn, while redis-py sends each on a pool connection of its own.
The systems alternate, each measured `ROUNDS` times; each figure is the median.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from bench.common import start_redis
from bench.report import Row, Section
from serverless.autopipeline import AutoPipeline
from serverless.queue import connect

ROUNDS = 3


async def _measure(call: Callable[[], Awaitable[object]], clients: int, total: int) -> tuple[float, float]:
    """(commands/s, µs of this process's CPU per command) for `total` calls over `clients` tasks."""
    per_client = total // clients

    async def client() -> None:
        for _ in range(per_client):
            await call()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = per_client * clients
    return done / wall, 1e6 * cpu / done


async def run(opts) -> Section:
    total = 4_000 if opts.quick else 40_000
    levels = (1, 16) if opts.quick else (1, 16, 64)
    redis_server = start_redis()
    try:
        redis = await connect(redis_server.url)
        auto = AutoPipeline(redis)
        await redis.set("k", "v")
        systems: dict[str, Callable[[], Awaitable[object]]] = {
            "podq": lambda: auto.execute("GET", "k"),
            "redis-py": lambda: redis.execute_command("GET", "k"),
        }
        for call in systems.values():  # warm-up: connections open, code paths hot
            await _measure(call, 16, 2_000)
        figures: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for clients in levels:
            for _ in range(ROUNDS):
                for name, call in systems.items():
                    figures.setdefault((name, clients), []).append(
                        await _measure(call, clients, total))
        await auto.aclose()
        await redis.aclose()
    finally:
        redis_server.stop()

    def median(name: str, clients: int, index: int) -> float:
        return statistics.median(f[index] for f in figures[(name, clients)])

    rows = []
    for clients in levels:
        rows.append(Row(f"commands/s, {clients} client(s)", median("podq", clients, 0),
                        {"redis-py": median("redis-py", clients, 0)}, lower_is_better=False))
        rows.append(Row(f"client CPU per command, {clients} client(s) (µs)",
                        median("podq", clients, 1), {"redis-py": median("redis-py", clients, 1)}))
    return Section(
        title="Redis round trips (AutoPipeline vs redis-py)",
        description=(
            f"{total:,} GET commands per measurement from 1 process over `clients` concurrent "
            f"tasks, on its own redis-server; the systems alternate, {ROUNDS} rounds, medians.\n\n"
            "- **podq**: `serverless.autopipeline.AutoPipeline.execute` (one connection of its "
            "own: a loop turn's commands in one write, replies parsed by hiredis in the "
            "protocol's callback).\n"
            "- **redis-py**: `Redis.execute_command` on the same pooled client (redis-py 5, "
            "hiredis parser): a pool connection per command in flight.\n"
            "- CPU per command: `time.process_time()` of the process over the calls (client code, "
            "event loop, system calls), divided by the calls."
        ),
        rows=rows,
    )
