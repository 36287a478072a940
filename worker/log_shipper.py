"""The worker's log shipper: its stdout, stderr and log lines, tagged with their job, into Redis.

A podq-runtime worker replaces `sys.stdout` and `sys.stderr` with tees. Every write goes on to
the real stream first-hand (so `docker logs`, the process backend's file and the engine's logs
still see everything, boot and crash output included), and each complete line is also appended
to a bounded in-memory buffer as `(ms, stream, job, level, text)`:

- `job` is the job whose code wrote the line: `worker.handlers.current_job`, a contextvar the
  runtime sets in each job's task (and that its handler pool threads run under), so with
  concurrency > 1 each line carries the job of the task that wrote it. A thread the handler
  started itself has no such context: when exactly one job is running it gets that one (what
  RunPod's logs do), else none. Lines written outside any job (the runtime's own) carry none.
- `stream` is stdout or stderr, or `log` for a line a `logging.StreamHandler` wrote: the tee
  sees the record being emitted and takes its level, so podq's own records and a handler's
  `logging` output carry `level`. Handlers bound to the real streams before the capture began
  are pointed at the tees.

Why at the Python level and not by `dup2` onto fds 1 and 2: a line read back from a pipe has
lost its writer, so it could not be tagged with a job once two jobs run at once. Output written
straight to the fds (C extensions, subprocesses) still reaches the backend's logs.

The write side never waits: an append to a deque (atomic under the GIL, no lock), and when the
buffer holds PODQ_LOG_BUFFER_LINES lines the new line is dropped and counted (`itertools.count`,
also atomic). The flush runs on the worker's event loop every PODQ_LOG_FLUSH_MS, or as soon as
BATCH lines wait: one round trip per BATCH lines (one small Lua script, `Target`) that runs
`XADD podq:ep:{ep}:logs MAXLEN ~ N` per line and one `HINCRBY podq:ep:{ep}:stats
log_lines_dropped` for the lines dropped since the last flush. A flush that fails (Redis away)
loses its lines; they are counted as dropped too, so lines shipped + dropped = lines written.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from typing import Any, TextIO

import hiredis
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from serverless import keys
from serverless.clock import now_ms
from serverless.settings import Settings
from worker.handlers import current_job

log = logging.getLogger("podq.worker")

STDOUT, STDERR, LOG = "stdout", "stderr", "log"
LINE_MAX = 8192  # characters of one shipped line; the rest is cut and the cut is said
CUT_MARK = " [... {} more characters cut by podq]"
BATCH = 500  # lines per flush (one round trip); this many waiting wakes the flusher early
FINAL_FLUSH_S = 3.0  # what a stopping worker spends sending its last lines
_EMIT = logging.StreamHandler.emit.__code__

# (epoch ms, stream, job id or "", level or "", text)
Line = tuple[int, str, str, str, str]

# One flush: KEYS stream, stats hash; ARGV maxlen, worker, lines dropped since the last flush,
# then ts, job, stream, level, line for each line (ship_args). An entry's id is Redis's
# (`ms-seq` at XADD); `ts` is when the line was written.
_SHIP = f"""
local maxlen, worker = ARGV[1], ARGV[2]
for i = 4, #ARGV, 5 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'ts', ARGV[i], 'worker', worker,
             'job', ARGV[i + 1], 'stream', ARGV[i + 2], 'level', ARGV[i + 3], 'line', ARGV[i + 4])
end
if ARGV[3] ~= '0' then redis.call('HINCRBY', KEYS[2], '{keys.LOG_LINES_DROPPED}', ARGV[3]) end
return (#ARGV - 3) / 5
"""
_SHIP_SHA = hashlib.sha1(_SHIP.encode()).hexdigest()


# ---- pure ---------------------------------------------------------------------------------


def cap(text: str, limit: int = LINE_MAX) -> str:
    """`text` cut to `limit` characters, with a marker that says how many were cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + CUT_MARK.format(len(text) - limit)


def ship_args(worker_id: str, maxlen: int, dropped: int, lines: list[Line]) -> tuple[str | int, ...]:
    """ARGV of _SHIP: the stream's cap, the worker, the new drops, then 5 values a line."""
    flat: list[str | int] = [maxlen, worker_id, dropped]
    for ts, stream, job, level, text in lines:
        flat += (ts, job, stream, level, text)
    return tuple(flat)


def only_job(running: Collection[str]) -> str:
    """The job a line from an untagged thread belongs to: the one running job, if one is."""
    ids = list(running)  # one C call: safe while the event loop changes the collection
    return ids[0] if len(ids) == 1 else ""


# ---- the write side (any thread) ----------------------------------------------------------


class LineBuffer:
    """A bounded FIFO of lines: `add` from any thread never waits; past `capacity` it drops.

    Drops are counted by an `itertools.count`, whose `next` is one atomic C call. `dropped()`
    reads it (the flusher only): each read also advances it, so reads are subtracted.
    """

    def __init__(self, capacity: int, on_batch: Callable[[], None] | None = None) -> None:
        self.capacity = capacity
        self.on_batch = on_batch  # called when BATCH lines wait (wakes the flusher)
        self._lines: deque[Line] = deque()
        self._drops = itertools.count()
        self._reads = 0

    def add(self, line: Line) -> None:
        lines = self._lines
        if len(lines) >= self.capacity:
            next(self._drops)
            return
        lines.append(line)
        if len(lines) == BATCH and self.on_batch is not None:
            self.on_batch()

    def take(self, n: int) -> list[Line]:
        """Up to `n` of the oldest lines, removed from the buffer."""
        pop, lines = self._lines.popleft, self._lines
        return [pop() for _ in range(min(n, len(lines)))]

    def dropped(self) -> int:
        """Lines dropped since the buffer was made."""
        total = next(self._drops) - self._reads
        self._reads += 1
        return total

    def __len__(self) -> int:
        return len(self._lines)


Sink = Callable[[str, str, str], None]  # (stream, level, text)


class Tee:
    """A text stream that writes through to `real` and hands each complete line to `sink`.

    Partial lines are kept per thread (print writes its text and its newline in two calls),
    and a partial line longer than LINE_MAX is handed over as it is, so memory stays bounded.
    A write without a newline costs a dict update; the writer's frame is looked at only for a
    write that ends lines. Every other attribute (fileno, isatty, encoding, buffer, ...) is the
    real stream's.
    """

    def __init__(self, real: TextIO, stream: str, sink: Sink) -> None:
        self.real, self.stream, self._sink = real, stream, sink
        self._partial: dict[int, str] = {}  # thread id -> its unfinished line

    def write(self, text: str) -> int:
        tid = threading.get_ident()
        if "\n" not in text:
            head = self._partial.get(tid, "") + text
            if len(head) > LINE_MAX:
                self._sink(self.stream, "", self._partial.pop(tid, "") + text)
            else:
                self._partial[tid] = head
            return self.real.write(text)
        if text == "\n":  # print's line end: the usual case
            parts = [self._partial.pop(tid, "")]
        else:
            parts = (self._partial.pop(tid, "") + text).split("\n")
            if rest := parts.pop():
                self._partial[tid] = rest
        stream, level = self.stream, ""
        frame = sys._getframe(1)
        if frame.f_code is _EMIT:  # a logging.StreamHandler writing a record
            record = frame.f_locals.get("record")
            stream, level = LOG, record.levelname.lower() if isinstance(record, logging.LogRecord) else ""
        for part in parts:
            self._sink(stream, level, part)
        return self.real.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


# ---- the shipper --------------------------------------------------------------------------


class Target:
    """Where lines go once the worker is connected: its endpoint's stream, on a connection of
    its own (made from the worker's pool: the same address, credentials and TLS).

    A flush is one EVALSHA of _SHIP (an XADD per line and the HINCRBY, run by Redis), packed
    by hiredis's C packer. The worker's CPU is what counts (the handler's threads wait for the
    GIL while the loop packs): measured per line, 1.2 us for this, 3.8 us for a pipeline of
    XADDs packed by hiredis, whose replies are each parsed, and redis-py's own pipeline, which
    packs every argument in Python, took five times the latter's wall time.
    """

    def __init__(self, redis: Redis, endpoint: str, worker_id: str, maxlen: int) -> None:
        self.worker_id, self.maxlen = worker_id, maxlen
        self.stream_key, self.stats_key = keys.logs(endpoint), keys.stats(endpoint)
        self._conn = redis.connection_pool.make_connection()

    def pack(self, lines: list[Line], dropped: int) -> bytes:
        """The one command of a flush."""
        return _pack(("EVALSHA", _SHIP_SHA, 2, self.stream_key, self.stats_key,
                      *ship_args(self.worker_id, self.maxlen, dropped, lines)))

    async def send(self, command: bytes) -> None:
        """Send a flush (loading _SHIP when Redis does not know it: first use, a restart); a
        connection that failed midway is closed."""
        conn = self._conn
        try:
            await conn.connect()  # a no-op while connected
            try:
                await self._call(command)
            except NoScriptError:
                await self._call(hiredis.pack_command(("SCRIPT", "LOAD", _SHIP)))
                await self._call(command)
        except BaseException:
            await conn.disconnect(nowait=True)
            raise

    async def _call(self, command: bytes) -> Any:
        await self._conn.send_packed_command(command, check_health=False)
        return await self._conn.read_response()  # an error reply raises ResponseError

    async def close(self) -> None:
        await self._conn.disconnect()


class LogShipper:
    """Captures this process's output into a LineBuffer and ships it (module docstring)."""

    def __init__(self, capacity: int) -> None:
        self.buffer = LineBuffer(capacity, self._wake_flusher)
        self.shipped = 0
        self._lost = 0  # lines taken for a flush that failed
        self._reported = 0  # drops already added to Redis
        self._failing = False
        self._running: Callable[[], Collection[str]] = tuple
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._tees: list[tuple[str, Tee]] = []  # (name in sys, tee)

    # ---- capture (any thread) ----

    def add(self, stream: str, level: str, text: str) -> None:
        """Buffer one line, tagged with the job that wrote it; never waits."""
        job = current_job.get()
        if job is None:
            job = "" if threading.get_ident() == self._loop_thread else only_job(self._running())
        ms = now_ms()  # on Redis's clock, as every time podq stores (serverless/clock.py)
        self.buffer.add((ms, stream, job, level, text if len(text) <= LINE_MAX else cap(text)))

    def install(self) -> None:
        """Put tees over sys.stdout and sys.stderr; logging handlers on the real ones follow."""
        for name, stream in (("stdout", STDOUT), ("stderr", STDERR)):
            real = getattr(sys, name)
            if real is None:  # no such stream (a daemon with it closed): nothing to tee
                continue
            tee = Tee(real, stream, self.add)
            setattr(sys, name, tee)
            _repoint_handlers(real, tee)
            self._tees.append((name, tee))

    def uninstall(self) -> None:
        """Give the real streams back (where nobody replaced the tees since)."""
        for name, tee in self._tees:
            if getattr(sys, name) is tee:
                setattr(sys, name, tee.real)
            _repoint_handlers(tee, tee.real)
        self._tees.clear()

    # ---- shipping (the worker's event loop) ----

    def attach(self, running: Callable[[], Collection[str]]) -> None:
        """Start shipping from this event loop; `running()` gives the ids of running jobs."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._running = running

    async def run(self, target: Target, interval_s: float) -> None:
        """Flush every `interval_s`, or when BATCH lines wait, until cancelled."""
        while True:
            try:
                async with asyncio.timeout(interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self.drain(target)

    async def drain(self, target: Target) -> None:
        """Flush until the buffer is empty (full batches first)."""
        while await self.flush(target) == BATCH:
            pass

    async def close(self, target: Target) -> None:
        """Ship what is left, for at most FINAL_FLUSH_S (a stopping worker); close the
        connection. Lines written after this stay on the real streams only."""
        try:
            async with asyncio.timeout(FINAL_FLUSH_S):
                await self.drain(target)
        except TimeoutError:
            log.warning("log shipping: %d line(s) not sent before the worker stopped",
                        len(self.buffer))
        await target.close()

    async def flush(self, target: Target) -> int:
        """Send up to BATCH lines and the new drop count in one round trip; the lines sent."""
        lines = self.buffer.take(BATCH)
        dropped = self.buffer.dropped() + self._lost - self._reported
        if not lines and not dropped:
            return 0
        try:
            await target.send(target.pack(lines, dropped))
        except (RedisError, OSError) as e:
            self._lost += len(lines)
            self._warn_once(e)
            return 0
        self._reported += dropped
        self.shipped += len(lines)
        self._failing = False
        return len(lines)

    def _wake_flusher(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    def _warn_once(self, error: Exception) -> None:
        if not self._failing:
            self._failing = True
            log.warning("log shipping: Redis refused or did not answer (%s); lines are dropped "
                        "and counted until it answers again", error)


def _pack(command: tuple[str | int, ...]) -> bytes:
    try:
        return hiredis.pack_command(command)
    except UnicodeEncodeError:  # a lone surrogate (bytes decoded with surrogateescape)
        return hiredis.pack_command(tuple(
            a.encode("utf-8", "replace") if isinstance(a, str) else a for a in command))


def _repoint_handlers(old: object, new: object) -> None:
    """Logging StreamHandlers writing to `old` write to `new` from now on."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.StreamHandler) and handler.stream is old:
                handler.setStream(new)  # type: ignore[arg-type]


# ---- the process's one shipper ------------------------------------------------------------

_shipper: LogShipper | None = None


def capture(settings: Settings) -> LogShipper | None:
    """Start capturing this process's output (once; later calls return the same shipper).

    Args:
        settings: PODQ_LOG_SHIPPING (false: nothing is captured) and PODQ_LOG_BUFFER_LINES.

    Returns:
        The process's shipper, or None when shipping is off.
    """
    global _shipper
    if not settings.log_shipping:
        return None
    if _shipper is None:
        _shipper = LogShipper(settings.log_buffer_lines)
        _shipper.install()
    return _shipper


@asynccontextmanager
async def shipping(settings: Settings, redis: Redis, worker_id: str,
                   running: Callable[[], Collection[str]]) -> AsyncIterator[None]:
    """Ship what this process captures from the running event loop while the body runs, and
    what is left when it ends (nothing at all when PODQ_LOG_SHIPPING=false).

    Args:
        settings: the endpoint id and the PODQ_LOG_* settings.
        redis: the worker's pool (the shipper makes its own connection from it).
        worker_id: the id every line is tagged with.
        running: the ids of the jobs the worker runs now (for lines from untagged threads).
    """
    shipper = capture(settings)
    if shipper is None or settings.endpoint_id is None:
        yield
        return
    shipper.attach(running)
    target = Target(redis, settings.endpoint_id, worker_id, settings.log_stream_maxlen)
    task = asyncio.create_task(shipper.run(target, settings.log_flush_ms / 1000),
                               name="podq-log-shipper")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await shipper.close(target)


def release() -> None:
    """Stop capturing (local test runs ship nothing)."""
    global _shipper
    if _shipper is not None:
        _shipper.uninstall()
        _shipper = None
