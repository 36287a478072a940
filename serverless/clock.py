"""podq's clock: wall-clock milliseconds on Redis's clock, whatever host a process runs on.

Every time podq stores (a job's submitted_at, started_at and finished_at, a lease's deadline, a
ttl, a worker's heartbeat) comes from `now_ms()`, in whichever process writes it: gateways,
workers and scalers on different hosts. Host clocks disagree (a machine without NTP can be
seconds or minutes off), and a lease written by a worker whose clock runs 30 s behind looks
expired to a reaper on time, which requeues a job that is still running; a ttl or a delay would
be off by as much. So each process measures how far its clock is from Redis's (`TIME`, the
middle of the round trip taken as the moment Redis read it: the error is at most half the round
trip) when it connects, and again every SYNC_EVERY_S while it reaps; `now_ms()` adds that
offset. Offsets within TOLERANCE_MS of the current one are not applied, so on one host (and on
hosts kept in step by NTP) the offset stays 0 and time never steps back by a rounding.

Alternative not taken: reading `TIME` inside every Redis function. It covers only what the
functions stamp, while times are also computed in Python (a status body's delayTime, a
heartbeat, a batch's deadlines), and every test that passes its own `now` would need a second
path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

log = logging.getLogger("podq.clock")

SYNC_EVERY_S = 60.0  # how often a process that reaps measures its offset again
TOLERANCE_MS = 5  # a new offset this close to the current one is not applied
WARN_SKEW_MS = 1_000  # an offset this large is logged: the host's clock wants NTP

_wall_ns: Callable[[], int] = time.time_ns  # the host's clock (tests shift it)
_offset_ms = 0
_synced_at = float("-inf")  # time.monotonic() of the last measurement
_refused = False  # the ACL user may not run TIME (warned once)


def now_ms() -> int:
    """Milliseconds since the epoch on Redis's clock (the host's clock plus its offset)."""
    return _wall_ns() // 1_000_000 + _offset_ms


def offset_ms() -> int:
    """How far Redis's clock is ahead of this host's, in ms, as last measured (0 before)."""
    return _offset_ms


def estimate_offset(before_ns: int, server_s: int, server_us: int, after_ns: int) -> int:
    """Redis's clock minus the host's, in ms: Redis's `TIME` against the middle of the host's
    readings taken just before the command was sent and just after its reply arrived."""
    server_ms = server_s * 1_000 + server_us // 1_000
    return server_ms - (before_ns + after_ns) // 2 // 1_000_000


def applied(current: int, measured: int) -> int:
    """The offset to use after a measurement: the new one, unless it is within TOLERANCE_MS of
    the current one (then the current one stays, so time does not jitter)."""
    return current if abs(measured - current) <= TOLERANCE_MS else measured


def may_read_redis_time() -> bool:
    """False once Redis refused TIME to this process's user (podq then keeps the host's clock,
    and a take must be given the host's `now`: serverless/doorbell.py)."""
    return not _refused


def note_time_refused() -> None:
    """Redis refused TIME to this process's user inside a function (the ACL changed since it
    connected): from now on, as when `sync` is refused."""
    global _refused
    _refused = True


def due() -> bool:
    """Whether SYNC_EVERY_S has passed since the last measurement (or none was made)."""
    return time.monotonic() - _synced_at >= SYNC_EVERY_S


async def sync(redis: Redis) -> int:
    """Measure this host's offset from Redis's clock and use it from now on; returns it.
    Raises what the client raises when Redis cannot be reached (the offset is kept). A user
    whose ACL lacks TIME keeps the host's clock, with one warning."""
    global _offset_ms, _synced_at, _refused
    before = _wall_ns()
    try:
        server_s, server_us = await redis.time()
    except NoPermissionError:  # an ACL written before podq used TIME
        if not _refused:
            log.warning("the Redis user may not run TIME, so podq uses this host's clock, which "
                        "must then agree with every other podq host's: add +time to its ACL "
                        "(docs/security.md)")
        _refused, _synced_at = True, time.monotonic()
        return _offset_ms
    after = _wall_ns()
    offset = applied(_offset_ms, estimate_offset(before, int(server_s), int(server_us), after))
    if offset != _offset_ms and abs(offset) >= WARN_SKEW_MS:
        log.warning("this host's clock is %+d ms off Redis's: podq uses Redis's time (leases, "
                    "ttls, timestamps); sync the host's clock (NTP) to silence this", offset)
    _offset_ms, _synced_at = offset, time.monotonic()
    return offset
