"""`make chaos`: jobs over HTTP while workers are SIGKILLed and Redis is killed and restarted.

    python bench/chaos.py [--jobs 20000] [--minutes 10] [--workers 4] [--kill-every 3] [--quick]

One private redis-server with AOF (appendfsync always), a gateway process, and the real scaler
(process backend) keeping --workers worker processes alive. Jobs are submitted over HTTP /run;
meanwhile a random worker is SIGKILLed every ~--kill-every seconds and, once half the jobs have
been acknowledged, Redis is SIGKILLed and started again on the same AOF. The handler appends each job id it
starts to a file of its own process, so every execution is counted, even of killed workers.

The report (printed, and written to bench/results/chaos.md) counts:
- submitted: jobs acknowledged by the API (HTTP 200 from /run); 503s while Redis is down are
  retried by the client as new submissions and counted apart;
- completed / failed: the terminal status of each acknowledged job;
- lost: acknowledged jobs that never reached a terminal status (must be 0);
- duplicated executions: executions beyond the first of a job (at-least-once: a worker killed
  mid-job costs a re-execution; expected > 0);
- double results: jobs with more than one accepted terminal write, counted two ways: worker log
  lines "result written" per job, and the endpoint's terminal counters minus the jobs that are
  terminal (each terminal move bumps one counter once). Must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scaler.backends.process import ProcessBackend  # noqa: E402
from serverless import keys  # noqa: E402
from serverless.model import EndpointConfig, Template  # noqa: E402
from serverless.redis_server import RedisProcess, free_port  # noqa: E402
from serverless.registry import Registry  # noqa: E402

EP = "chaos"
TERMINAL = {"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"}
WRITTEN = re.compile(r"job (\S+) attempt \d+ -> (\w+), result written")
HEARTBEAT_MS, LEASE_MS = 500, 3000

HANDLER = '''"""chaos handler: records each execution, sleeps input.ms, returns input.n."""
import asyncio
import os
import uuid

import serverless

_fd = None


def _record(job_id):
    global _fd
    if _fd is None:  # one file per process (and per re-exec): O_APPEND writes survive SIGKILL
        name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}.log"
        _fd = os.open(os.path.join(os.environ["CHAOS_EXEC_DIR"], name),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, (job_id + "\\n").encode())


async def handler(job):
    _record(job["id"])
    await asyncio.sleep(job["input"].get("ms", 0) / 1000)
    return {"n": job["input"].get("n")}


serverless.start({"handler": handler, "concurrency_modifier": lambda c: 4})
'''


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="podq-chaos-"))
        (self.dir / "aof").mkdir()
        (self.dir / "execs").mkdir()
        (self.dir / "handler.py").write_text(HANDLER)
        self.key = "chaos-" + secrets.token_hex(8)
        self.redis: RedisProcess | None = None
        self.port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.acked: list[str] = []
        self.rejected = 0  # submissions answered 503 / not reachable (retried)
        self.kills = 0
        self.redis_down_s = 0.0
        self.redis_restarted = False
        self.finished = False
        self.started = time.monotonic()

    # ---- the pieces -------------------------------------------------------------------------

    def start_redis(self) -> None:
        self.redis = RedisProcess("--appendonly", "yes", "--appendfsync", "always",
                                  "--dir", str(self.dir / "aof"), port=self.port).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def env(self) -> dict[str, str]:
        return {**os.environ, "PODQ_REDIS_URL": self.url, "PODQ_API_KEY": self.key,
                "PODQ_RATE_LIMITS": "false", "PODQ_HEARTBEAT_MS": str(HEARTBEAT_MS),
                "PODQ_LEASE_MS": str(LEASE_MS), "PODQ_RESULT_TTL_RUN_MS": str(6 * 3600_000),
                "PODQ_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", "TMPDIR": str(self.dir)}

    def spawn(self, name: str, *cmd: str) -> None:
        log = open(self.dir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "serverless.cli", *cmd],
                                            env=self.env(), cwd=ROOT, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    async def setup(self) -> None:
        self.start_redis()
        redis = Redis.from_url(self.url)
        registry = Registry(redis)
        await registry.put_template(Template(id="t-chaos", name="chaos", handler=str(self.dir / "handler.py"),
                                             env={"CHAOS_EXEC_DIR": str(self.dir / "execs")}))
        await registry.put_endpoint(EndpointConfig(
            id=EP, name=EP, template_id="t-chaos", gpu_ids="ANY",
            workers_min=self.args.workers, workers_max=self.args.workers))
        await redis.aclose()
        self.gateway_port = free_port()
        self.spawn("gateway", "gateway", "--port", str(self.gateway_port))
        self.spawn("scaler", "scaler", "--tick", "0.5")
        self.backend = ProcessBackend(self.url, log_dir=str(self.dir))  # to list (and kill) workers
        deadline = time.monotonic() + 60
        while len([h for h in await self.backend.list() if h.running]) < self.args.workers:
            if time.monotonic() > deadline:
                raise SystemExit(f"workers did not start; see {self.dir}")
            await asyncio.sleep(0.2)

    # ---- the run ----------------------------------------------------------------------------

    async def submit_all(self, http: aiohttp.ClientSession) -> None:
        url = f"http://127.0.0.1:{self.gateway_port}/v2/{EP}/run"
        todo = iter(range(self.args.jobs))

        async def one_sender() -> None:
            for n in todo:
                body = {"input": {"n": n, "ms": random.randint(0, 20)}}
                while True:
                    try:
                        async with http.post(url, json=body) as r:
                            if r.status == 200:
                                self.acked.append((await r.json())["id"])
                                break
                            await r.read()
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        pass
                    self.rejected += 1  # Redis (or the gateway) unreachable: submit again
                    await asyncio.sleep(0.2)

        await asyncio.gather(*(one_sender() for _ in range(32)))

    async def kill_workers(self) -> None:
        mean = self.args.kill_every
        while not self.finished:
            await asyncio.sleep(random.uniform(0.3 * mean, 1.7 * mean))
            handles = [h for h in await self.backend.list() if h.running]
            if handles and not self.finished:
                victim = random.choice(handles)
                try:
                    os.kill(int(victim.ref), signal.SIGKILL)
                    self.kills += 1
                except ProcessLookupError:
                    pass

    async def restart_redis_midway(self, redis: Redis) -> None:
        while True:
            await asyncio.sleep(0.5)
            if len(self.acked) >= self.args.jobs // 2:  # submissions and work both under way
                break
        assert self.redis is not None and self.redis.proc is not None
        t0 = time.monotonic()
        self.redis.proc.kill()  # SIGKILL: only what appendfsync always wrote survives
        self.redis.proc.wait()
        self.redis.stop()
        await asyncio.sleep(2.0)
        self.start_redis()
        self.redis_down_s = time.monotonic() - t0
        self.redis_restarted = True

    async def terminal_count(self, redis: Redis) -> int:
        try:
            stats = await redis.hgetall(keys.stats(EP))
        except (OSError, Exception):  # down for the restart
            return -1
        return sum(int(stats.get(s.lower().encode(), 0)) for s in TERMINAL)

    async def statuses(self, redis: Redis) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(self.acked), 1000):
            batch = self.acked[i:i + 1000]
            async with redis.pipeline(transaction=False) as pipe:
                for job_id in batch:
                    pipe.hget(keys.job(job_id), "status")
                got = await pipe.execute()
            out.update({j: (s or b"MISSING").decode() for j, s in zip(batch, got)})
        return out

    async def run(self) -> dict[str, object]:
        await self.setup()
        print(f"chaos: {self.args.jobs} jobs, {self.args.workers} workers, a kill every "
              f"~{self.args.kill_every} s, Redis restarted once; files in {self.dir}", flush=True)
        redis = Redis.from_url(self.url, socket_timeout=5, retry_on_timeout=True)
        deadline = self.started + self.args.minutes * 60
        headers = {"Authorization": f"Bearer {self.key}"}
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
            killer = asyncio.create_task(self.kill_workers())
            restarter = asyncio.create_task(self.restart_redis_midway(redis))
            submitter = asyncio.create_task(self.submit_all(http))
            statuses: dict[str, str] = {}
            last_print = 0.0
            while time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                done = await self.terminal_count(redis)
                if time.monotonic() - last_print > 10:
                    last_print = time.monotonic()
                    print(f"  {time.monotonic() - self.started:5.0f} s: {len(self.acked)} acknowledged, "
                          f"{max(done, 0)} ended, {self.kills} workers killed", flush=True)
                if submitter.done() and restarter.done() and done >= len(self.acked):
                    try:
                        statuses = await self.statuses(redis)
                    except Exception:
                        continue
                    if all(s in TERMINAL for s in statuses.values()):
                        break
            self.finished = True
            for task in (killer, restarter, submitter):
                task.cancel()
            await asyncio.gather(killer, restarter, submitter, return_exceptions=True)
        elapsed = time.monotonic() - self.started
        statuses = await self.statuses(redis)
        report = await self.account(redis, statuses, elapsed)
        await redis.aclose()
        return report

    # ---- the accounting ---------------------------------------------------------------------

    async def account(self, redis: Redis, statuses: dict[str, str], elapsed: float) -> dict[str, object]:
        by_status = Counter(statuses.values())
        executions: Counter[str] = Counter()
        for f in (self.dir / "execs").glob("*.log"):
            executions.update(line for line in f.read_text().split("\n") if line)
        acked = set(self.acked)
        written: Counter[str] = Counter()
        for f in self.dir.rglob("*.log"):
            for m in WRITTEN.finditer(f.read_text(errors="replace")):
                written[m.group(1)] += 1
        terminal_records = 0
        async for key in redis.scan_iter(match="podq:job:*", count=1000):
            if (await redis.hget(key, "status") or b"").decode() in TERMINAL:
                terminal_records += 1
        stats = {k.decode(): int(v) for k, v in (await redis.hgetall(keys.stats(EP))).items()}
        terminal_counted = sum(stats.get(s.lower(), 0) for s in TERMINAL)
        return {
            "jobs submitted (HTTP 200 from /run)": len(self.acked),
            "submissions refused while Redis was down (503, resubmitted)": self.rejected,
            "completed": by_status.get("COMPLETED", 0),
            "failed": by_status.get("FAILED", 0),
            "timed out / cancelled": by_status.get("TIMED_OUT", 0) + by_status.get("CANCELLED", 0),
            "lost (acknowledged, never terminal)": sum(1 for s in statuses.values() if s not in TERMINAL),
            "executions": sum(executions[j] for j in acked),
            "duplicated executions (re-runs after a kill)": sum(max(0, executions[j] - 1) for j in acked),
            "completed without a recorded execution": sum(
                1 for j, s in statuses.items() if s == "COMPLETED" and executions[j] == 0),
            "accepted result writes seen in worker logs": sum(written[j] for j in acked),
            "double results (two accepted result writes)": sum(1 for n in written.values() if n > 1),
            "double terminal moves (counters - terminal jobs)": terminal_counted - terminal_records,
            "jobs requeued after a lost lease": stats.get("retried", 0),
            "workers SIGKILLed": self.kills,
            "Redis SIGKILLed + restarted (AOF)": f"1 ({self.redis_down_s:.1f} s down)" if self.redis_restarted else "0",
            "wall time": f"{elapsed:.0f} s",
            "throughput": f"{len(self.acked) / elapsed:.0f} jobs/s",
        }

    async def close(self) -> None:
        scaler = self.procs.get("scaler")
        if scaler is not None and scaler.poll() is None:
            scaler.send_signal(signal.SIGTERM)
            scaler.wait(15)
        try:
            for handle in await self.backend.list():
                await self.backend.stop(handle, 0.5)
        except AttributeError:
            pass
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(15)
        if self.redis is not None:
            self.redis.stop()


def render(report: dict[str, object], args: argparse.Namespace) -> str:
    ok = report["lost (acknowledged, never terminal)"] == 0 and \
        report["double results (two accepted result writes)"] == 0 and \
        report["double terminal moves (counters - terminal jobs)"] == 0
    lines = [
        "# Chaos run",
        "",
        f"`python bench/chaos.py --jobs {args.jobs} --workers {args.workers} --kill-every {args.kill_every}`"
        f" on {time.strftime('%Y-%m-%d %H:%M')} ({os.cpu_count()} CPUs). Redis with AOF "
        f"(appendfsync always), a gateway, the scaler (process backend) keeping {args.workers} "
        f"workers (4 jobs each, 0-20 ms per job); lease {LEASE_MS} ms, heartbeat {HEARTBEAT_MS} ms, "
        "max attempts 3. See docs/reliability.md.",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in report.items()),
        "",
        f"**{'PASS' if ok else 'FAIL'}**: lost jobs and double results must be 0; duplicated "
        "executions are the at-least-once cost of killed workers.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--minutes", type=float, default=10.0, help="give up after this long")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--kill-every", type=float, default=3.0, help="mean seconds between worker kills")
    p.add_argument("--quick", action="store_true", help="2,000 jobs, a kill every ~1.5 s (< 1 minute)")
    p.add_argument("--keep", action="store_true", help="keep the run's folder (logs, AOF) even on PASS")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "chaos.md"))
    args = p.parse_args()
    if args.quick:
        args.jobs, args.kill_every, args.minutes = 2_000, 1.5, min(args.minutes, 3.0)
    chaos = Chaos(args)
    try:
        report = asyncio.run(chaos.run())
    finally:
        asyncio.run(chaos.close())
    text = render(report, args)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    failed = "**FAIL**" in text
    if failed or args.keep:
        print(f"kept the run's logs, AOF and execution records in {chaos.dir}")
    else:
        shutil.rmtree(chaos.dir, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
