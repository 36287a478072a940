"""Shared benchmark plumbing: a private redis-server, worker processes, stats and the table."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serverless.errors import ConfigError  # noqa: E402
from serverless.redis_server import RedisProcess, find_server  # noqa: E402


def start_redis() -> RedisProcess:
    return RedisProcess().start()


def spawn(cmd: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(list(cmd), cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def percentile(samples: Sequence[float], pct: float) -> float:
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1))))
    return ordered[k]


def machine() -> str:
    load = os.getloadavg()
    return (f"{os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
            f"Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def cpu_model() -> str:
    """The CPU's model name and family (reports from different days may come from different
    hosts: a peer's figure moves with the host, so the ratio of two runs is not comparable)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, _, value = line.partition(":")
                fields.setdefault(name.strip(), value.strip())
    except OSError:  # not Linux
        return "unknown CPU"
    return f"{fields.get('model name', 'unknown CPU')} (family {fields.get('cpu family', '?')}, " \
           f"model {fields.get('model', '?')})"


# the packages whose versions set the peers' figures (and podq's own HTTP and Redis layers)
VERSIONED = ("runpod", "fastapi", "uvicorn", "pydantic", "saq", "dramatiq", "celery", "arq",
             "aiohttp", "uvloop", "redis", "hiredis")


def versions() -> str:
    """`name version` of each installed package in VERSIONED, and the redis-server's version."""
    from importlib import metadata

    out = []
    for name in VERSIONED:
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    try:
        server = find_server()
        out.append(f"{Path(server.path).name} {'.'.join(map(str, server.version))}")
    except ConfigError:  # no server found: the report says so by leaving it out
        pass
    return ", ".join(out)


def table(rows: Sequence[tuple[str, float, float, bool]], peer: str) -> str:
    """rows: (metric, ours, peer, lower_is_better) -> markdown with a ratio column."""
    lines = [f"| metric | podq | {peer} | ratio ({peer} / podq for times, podq / {peer} for rates) |",
             "|---|---:|---:|---:|"]
    for name, ours, theirs, lower_better in rows:
        ratio = (theirs / ours if lower_better else ours / theirs) if ours and theirs else float("nan")
        lines.append(f"| {name} | {ours:,.2f} | {theirs:,.2f} | {ratio:,.1f}x |")
    return "\n".join(lines)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


async def sequential(call, count: int) -> list[float]:
    """Run `call()` `count` times one after another; the latency of each in ms."""
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


async def fan_out(total: int, clients: int, one) -> float:
    """Run `one()` `total` times from `clients` concurrent loops; the seconds it took."""
    counter = iter(range(total))

    async def client() -> None:
        for _ in counter:
            await one()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - t0


def exited(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """Raise if one of `procs` has exited (a server that died while we wait for it)."""
    for p in procs:
        if p.poll() is not None:
            raise RuntimeError(f"{' '.join(map(str, p.args))} exited with {p.returncode}")


async def wait_http(url: str, procs: Iterable[subprocess.Popen[bytes]] = (), timeout: float = 30) -> None:
    """Until `url` answers (any status below 500); fails early if one of `procs` exited."""
    import aiohttp

    procs = list(procs)
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            exited(procs)
            try:
                async with s.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")
