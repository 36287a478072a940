"""The runner's decisions, as pure functions of what it knows (no I/O, `now` passed in).

- `to_feed`: how many inputs to read next. At most `max_in_flight` jobs are queued or running,
  and at most `window` inputs are read but not yet written to the results file, so a slow input
  holds back a bounded number of finished results in Redis (results are written in input order).
- `ready_run` / `part_due`: which finished results form the next results part (a contiguous run
  from the first unwritten index) and whether to write it now (a full part, a part waiting
  long enough, or the batch ending).
- `job_id` / `index_of`: deterministic job ids, so a restarted runner finds its in-flight jobs
  and a second submit of the same input is refused by the job store.
- `result_line`, `next_rate`, `eta_s`, `counts`: shaping what users read.
"""

from __future__ import annotations

from collections.abc import Collection

import msgspec

from serverless.batches.model import BatchCounts, ResultLine
from serverless.model import JobRecord

PART_LINES = 10_000  # results per part at most
PART_WAIT_S = 2.0  # a shorter part is written once its first result waited this long
WINDOW_PER_IN_FLIGHT = 8  # window = this x max_in_flight (and at least PART_LINES)
RATE_HALF_LIFE_S = 10.0

_encode_line = msgspec.json.Encoder().encode


def window(max_in_flight: int) -> int:
    """Inputs read but not yet written to the results file, at most."""
    return max(PART_LINES, WINDOW_PER_IN_FLIGHT * max_in_flight)


def to_feed(*, next_index: int, written: int, in_flight: int, max_in_flight: int, exhausted: bool) -> int:
    """How many inputs to read now (each becomes a job, or a result at once)."""
    if exhausted:
        return 0
    room_in_flight = max_in_flight - in_flight
    room_in_window = window(max_in_flight) - (next_index - written)
    return max(0, min(room_in_flight, room_in_window))


def ready_run(written: int, ready: Collection[int], limit: int = PART_LINES) -> int:
    """How many finished results follow `written` without a gap (at most `limit`)."""
    n = 0
    while n < limit and written + n in ready:
        n += 1
    return n


def part_due(run: int, oldest_wait_s: float, ending: bool) -> bool:
    """Write the next part now? A full one always; a shorter one when it has waited long
    enough (so results are downloadable while the batch runs) or the batch is ending."""
    if run == 0:
        return False
    return run >= PART_LINES or ending or oldest_wait_s >= PART_WAIT_S


def part_name(start: int) -> str:
    """A results part's name: its first index, zero-padded so names sort in input order."""
    return f"{start:012d}.jsonl"


def part_start(name: str) -> int:
    return int(name.rsplit("/", 1)[-1].split(".", 1)[0])


def job_id(batch_id: str, round_: int, index: int) -> str:
    """`<batch>-<index>` in round 0, `<batch>-<index>-r<round>` in a retry round."""
    return f"{batch_id}-{index}" if round_ == 0 else f"{batch_id}-{index}-r{round_}"


def index_of(batch_id: str, round_: int, job: str) -> int | None:
    """The input index of one of this round's job ids; None for any other id."""
    prefix = f"{batch_id}-"
    if not job.startswith(prefix):
        return None
    rest = job[len(prefix):]
    if round_:
        rest, _, r = rest.partition("-r")
        if r != str(round_):
            return None
    return int(rest) if rest.isdigit() else None


LOST_ERROR = ("the job's record is gone (it ended and its result expired while no gateway ran "
              "this batch, or it was deleted); retry the batch's failed inputs")


def result_line(index: int, job: str, record: JobRecord | None) -> bytes:
    """The results-file line of a finished job (None: its record is gone)."""
    if record is None:
        line = ResultLine(index, job, "FAILED", error=LOST_ERROR)
    elif record.status.value == "COMPLETED":
        line = ResultLine(index, job, "COMPLETED", output=record.output or msgspec.Raw(b"null"))
    else:
        line = ResultLine(index, job, record.status.value, error=record.error or record.status.value.lower())
    return _encode_line(line)


def failed_line(index: int, error: str) -> bytes:
    """The line of an input that never became a job (an unreadable record)."""
    return _encode_line(ResultLine(index, None, "FAILED", error=error))


def next_rate(rate: float, finished: int, dt_s: float) -> float:
    """Inputs per second, smoothed: `finished` more in the last `dt_s` seconds."""
    if dt_s <= 0:
        return rate
    weight = 0.5 ** (dt_s / RATE_HALF_LIFE_S)
    now_rate = finished / dt_s
    return now_rate if rate == 0 else weight * rate + (1 - weight) * now_rate


def eta_s(remaining: int, rate: float) -> float | None:
    """Seconds to the end at `rate`; 0 when nothing remains, None when no rate is known."""
    if remaining <= 0:
        return 0.0
    return round(remaining / rate, 1) if rate > 0 else None


def counts(fields: dict[str, int], *, total: int, next_index: int, in_flight: int) -> BatchCounts:
    """The counts GET /v1/batches/{id} shows, from the batch's counters."""
    return BatchCounts(
        completed=fields.get("COMPLETED", 0), failed=fields.get("FAILED", 0),
        cancelled=fields.get("CANCELLED", 0), timed_out=fields.get("TIMED_OUT", 0),
        in_flight=in_flight, pending=max(0, total - next_index),
    )
