"""What /metrics costs the gateway: /run throughput with metrics on and off, in one run.

Three `podq gateway` processes on one redis-server: one with PODQ_METRICS=true (the
request-timing middleware, the Redis round-trip timing, the /metrics route) and two with
PODQ_METRICS=false (none of them). The second metrics-off gateway is the control: it differs
from the first in nothing, so what the two differ by is this run's noise floor. Their endpoint
is registered and paused, so /run is the gateway's own work only (auth, the endpoint check, one
FCALL that queues the job) and no worker competes for the cores.

Rounds cycle through the six orders of the three gateways, so each gateway goes first, second
and third equally often and drift in the machine's speed falls on all alike. Each round gives
two figures per gateway: /run requests per second, and the gateway process's CPU time per
request (the scheduler's nanosecond account). The second is the gateway's cost: on a 2-core
machine the load generator and Redis share the cores with the gateway, so throughput is bounded
by all three, and other processes stretch a round's wall time more than a request's CPU.
A ratio x/y is sqrt(median x/y of the rounds where x went before y x median x/y of the rounds
where it went after), so a head start of whichever goes first cancels (an ABBA estimate).
The metrics-on gateway's /metrics is scraped once per cycle of six rounds, about every 1.5 s
(a real Prometheus scrapes every 15 s, so this overstates the scrape's share tenfold).

    .venv/bin/python -m bench.run --only metrics_cost [--quick] [--out DIR]
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.common import fan_out, start_redis, wait_http
from bench.peers.base import PY, Procs
from bench.report import Row, Section
from bench.scenarios.streaming import AUTH, podq_env
from serverless.model import EndpointConfig, Template
from serverless.queue import connect
from serverless.redis_server import free_port
from serverless.registry import Registry

EP = "metrics-cost"
CLIENTS = 64
TARGET = "< 5 %"
TARGET_PCT = 5.0
WARMUP = 1_000
ON, OFF, CONTROL = "metrics on", "metrics off", "metrics off (control)"
ORDERS = list(itertools.permutations((ON, OFF, CONTROL)))


@dataclass(frozen=True)
class Gateway:
    url: str
    pid: int

    def cpu_s(self) -> float:
        """CPU time of the process's threads so far, from the scheduler's nanosecond account
        (/proc/<pid>/task/*/schedstat; the clock-tick counts psutil reads move in 10 ms steps,
        a few % of a round)."""
        tasks = Path(f"/proc/{self.pid}/task")
        return sum(int((t / "schedstat").read_text().split()[0]) for t in tasks.iterdir()) / 1e9


@dataclass(frozen=True)
class Round:
    rate: float  # /run requests per second
    cpu_us: float  # gateway CPU per request (µs)


async def run(opts) -> Section:
    rounds, per_round = (12, 1_000) if opts.quick else (120, 1_000)
    redis, procs = start_redis(), Procs()
    try:
        await _register(redis.url)
        gateways = {name: _spawn(procs, redis.url, name == ON) for name in (ON, OFF, CONTROL)}
        for g in gateways.values():
            await wait_http(f"{g.url}/healthz", procs.procs)
        async with aiohttp.ClientSession(headers=AUTH, connector=aiohttp.TCPConnector(limit=0)) as s:
            results = await _rounds(s, gateways, rounds, per_round)
    finally:
        procs.stop()
        redis.stop()
    return _section(results, rounds, per_round)


async def _register(redis_url: str) -> None:
    redis = await connect(redis_url)
    registry = Registry(redis)
    template = await registry.put_template(Template(id="t-cost", name="cost", handler="noop.py"))
    await registry.put_endpoint(EndpointConfig(id=EP, name=EP, template_id=template.id, paused=True))
    await redis.aclose()


def _spawn(procs: Procs, redis_url: str, metrics: bool) -> Gateway:
    port = free_port()
    env = {**podq_env(redis_url), "PODQ_METRICS": "true" if metrics else "false"}
    proc = procs.spawn([PY, "-m", "serverless.cli", "gateway", "--port", str(port)], env)
    return Gateway(f"http://127.0.0.1:{port}", proc.pid)


async def _rounds(s: aiohttp.ClientSession, gateways: dict[str, Gateway], rounds: int,
                  per_round: int) -> dict[str, list[Round]]:
    """Each round's figures by gateway; round i runs them in ORDERS[i % 6]."""
    for g in gateways.values():
        await _round(s, g, WARMUP, scrape=False)
    results: dict[str, list[Round]] = {name: [] for name in gateways}
    for i in range(rounds):
        for name in ORDERS[i % len(ORDERS)]:
            scrape = name == ON and i % len(ORDERS) == 0  # once per cycle of the six orders
            results[name].append(await _round(s, gateways[name], per_round, scrape))
        print(f"  round {i + 1}/{rounds}: " + ", ".join(
            f"{n} {r[-1].rate:,.0f} /run/s {r[-1].cpu_us:.0f} µs" for n, r in results.items()), flush=True)
    return results


async def _round(s: aiohttp.ClientSession, g: Gateway, total: int, scrape: bool) -> Round:
    async def submit() -> None:
        async with s.post(f"{g.url}/v2/{EP}/run", json={"input": {}}) as r:
            if r.status != 200:
                raise RuntimeError(f"/run answered {r.status}: {await r.text()}")
            await r.read()

    cpu, started = g.cpu_s(), time.perf_counter()
    scraping = asyncio.create_task(_scrape(s, g.url)) if scrape else None
    await fan_out(total, CLIENTS, submit)
    if scraping is not None:
        await scraping
    elapsed = time.perf_counter() - started
    return Round(total / elapsed, (g.cpu_s() - cpu) / total * 1e6)


async def _scrape(s: aiohttp.ClientSession, url: str) -> None:
    await asyncio.sleep(0.05)  # mid-round
    async with s.get(f"{url}/metrics") as r:
        if r.status != 200:
            raise RuntimeError(f"/metrics answered {r.status}: {await r.text()}")
        await r.read()


def abba_ratio(x: list[float], y: list[float], x_first: list[bool]) -> float:
    """x/y of paired rounds with the effect of going first cancelled: sqrt(median x/y of the
    rounds where x went first x median x/y of those where y did)."""
    ratios = [a / b for a, b in zip(x, y)]
    before = [r for r, first in zip(ratios, x_first) if first]
    after = [r for r, first in zip(ratios, x_first) if not first]
    return math.sqrt(statistics.median(before) * statistics.median(after))


def _ratio(results: dict[str, list[Round]], x: str, y: str, field: str) -> float:
    orders = [ORDERS[i % len(ORDERS)] for i in range(len(results[x]))]
    first = [o.index(x) < o.index(y) for o in orders]
    xs, ys = ([getattr(r, field) for r in results[name]] for name in (x, y))
    return abba_ratio(xs, ys, first)


def _section(results: dict[str, list[Round]], rounds: int, per_round: int) -> Section:
    def median(name: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in results[name])

    rate = _ratio(results, ON, OFF, "rate")
    cpu_cost = (_ratio(results, ON, OFF, "cpu_us") - 1) * 100
    noise = (_ratio(results, CONTROL, OFF, "cpu_us") - 1) * 100
    print(f"/run/s: on {median(ON, 'rate'):,.0f}, off {median(OFF, 'rate'):,.0f}, on/off {rate:.3f}; "
          f"gateway CPU per /run: on {median(ON, 'cpu_us'):.0f} µs, off {median(OFF, 'cpu_us'):.0f} µs, "
          f"cost {cpu_cost:+.1f} % (control vs off: {noise:+.1f} %)", flush=True)
    rows = [Row(metric=f"/run requests/s, {n} (median round)", podq=median(n, "rate"),
                lower_is_better=False) for n in (ON, OFF, CONTROL)]
    rows.append(Row(metric="/run throughput, on / off", podq=rate, lower_is_better=False))
    rows += [Row(metric=f"gateway CPU per /run, {n} (µs, median round)", podq=median(n, "cpu_us"))
             for n in (ON, OFF, CONTROL)]
    rows.append(Row(metric="metrics cost: gateway CPU per /run, on vs off (%)", podq=cpu_cost,
                    target=TARGET, met=cpu_cost < TARGET_PCT))
    rows.append(Row(metric="noise floor: the same figure, control vs off (%)", podq=noise))
    description = (
        f"Three `podq gateway` processes on one redis-server: PODQ_METRICS=true, =false, and a "
        f"second =false as the control; {CLIENTS} clients POST `/v2/{{ep}}/run` (aiohttp, "
        f"keep-alive) to a registered, paused endpoint (no worker: the gateway's own work only); "
        f"{rounds} rounds of {per_round:,} requests per gateway, cycling through the six orders, "
        f"after {WARMUP:,} warm-up requests each; /metrics scraped once per cycle of six rounds. "
        "Ratios x/y: sqrt(median x/y of rounds where x went first x median of rounds where y did). "
        "CPU: the gateway process's run time over the round (/proc/<pid>/task/*/schedstat) / "
        "requests. Throughput is bounded by the load generator and Redis sharing the 2 cores, so "
        "the CPU per request is the figure that measures the gateway's cost.")
    notes = [f"per round /run/s, {n}: " + ", ".join(f"{r.rate:,.0f}" for r in results[n])
             for n in (ON, OFF, CONTROL)]
    notes += [f"per round gateway µs CPU per /run, {n}: " + ", ".join(f"{r.cpu_us:.0f}" for r in results[n])
              for n in (ON, OFF, CONTROL)]
    return Section(title="Metrics cost (/run with metrics on and off)", description=description,
                   rows=rows, notes=notes)
