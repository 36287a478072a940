"""The runner's pure decisions, one row per rule."""

from __future__ import annotations

import msgspec
import pytest

from serverless.batches import plan
from serverless.model import JobRecord, Status


@pytest.mark.parametrize("next_index,written,in_flight,cap,exhausted,expected", [
    (0, 0, 0, 10, False, 10),  # a new batch fills its in-flight cap
    (10, 0, 10, 10, False, 0),  # the cap is reached: nothing more until one ends
    (10, 5, 3, 10, False, 7),  # room for what ended
    (0, 0, 0, 10, True, 0),  # the file is read to the end
    (plan.window(10), 0, 0, 10, False, 0),  # one slow input holds back a full window
    (plan.window(10) - 2, 0, 0, 10, False, 2),  # the window's last places
])
def test_to_feed(next_index, written, in_flight, cap, exhausted, expected) -> None:
    assert plan.to_feed(next_index=next_index, written=written, in_flight=in_flight, max_in_flight=cap,
                        exhausted=exhausted) == expected


def test_the_window_is_at_least_a_part() -> None:
    assert plan.window(1) == plan.PART_LINES and plan.window(10_000) == 80_000


@pytest.mark.parametrize("written,ready,limit,expected", [
    (0, set(), 10, 0),
    (0, {1, 2, 3}, 10, 0),  # input 0 has not finished: nothing can be written
    (0, {0, 1, 2, 4}, 10, 3),  # stops at the gap
    (5, {5, 6, 7}, 2, 2),  # at most a part
])
def test_ready_run(written, ready, limit, expected) -> None:
    assert plan.ready_run(written, ready, limit) == expected


@pytest.mark.parametrize("run,waited,ending,expected", [
    (0, 100.0, True, False),  # nothing to write
    (plan.PART_LINES, 0.0, False, True),  # a full part at once
    (3, 0.1, False, False),  # a short part waits a little for more
    (3, plan.PART_WAIT_S, False, True),  # ... then is written, so results show while it runs
    (3, 0.0, True, True),  # the batch ends
])
def test_part_due(run, waited, ending, expected) -> None:
    assert plan.part_due(run, waited, ending) is expected


@pytest.mark.parametrize("round_,index,job", [(0, 7, "batch-ab-7"), (2, 7, "batch-ab-7-r2")])
def test_job_ids_round_trip(round_, index, job) -> None:
    assert plan.job_id("batch-ab", round_, index) == job
    assert plan.index_of("batch-ab", round_, job) == index


@pytest.mark.parametrize("round_,job", [
    (0, "other-7"), (0, "batch-ab-7-r1"), (1, "batch-ab-7"), (1, "batch-ab-7-r2"), (0, "batch-ab-x"),
])
def test_ids_of_other_batches_or_rounds_are_not_ours(round_, job) -> None:
    assert plan.index_of("batch-ab", round_, job) is None


def _record(status: Status, output: bytes | None = None, error: str | None = None) -> JobRecord:
    return JobRecord(id="j", endpoint="e", status=status, input=msgspec.Raw(b"1"),
                     output=msgspec.Raw(output) if output else None, error=error)


@pytest.mark.parametrize("record,expected", [
    (_record(Status.COMPLETED, b'{"a":1}'), b'{"index":3,"id":"j","status":"COMPLETED","output":{"a":1}}'),
    (_record(Status.FAILED, error="boom"), b'{"index":3,"id":"j","status":"FAILED","error":"boom"}'),
    (_record(Status.CANCELLED), b'{"index":3,"id":"j","status":"CANCELLED","error":"cancelled"}'),
    (None, b'{"index":3,"id":"j","status":"FAILED","error":"' + plan.LOST_ERROR.encode() + b'"}'),
])
def test_result_line(record, expected) -> None:
    assert plan.result_line(3, "j", record) == expected


@pytest.mark.parametrize("rate,finished,dt,expected", [
    (0.0, 100, 2.0, 50.0),  # the first measure is taken as it is
    (50.0, 100, 0.0, 50.0),  # no time passed: unchanged
    (50.0, 100, plan.RATE_HALF_LIFE_S, 30.0),  # half the old rate, half the new (10/s)
])
def test_next_rate(rate, finished, dt, expected) -> None:
    assert plan.next_rate(rate, finished, dt) == pytest.approx(expected)


@pytest.mark.parametrize("remaining,rate,expected", [(0, 0.0, 0.0), (100, 0.0, None), (100, 20.0, 5.0)])
def test_eta(remaining, rate, expected) -> None:
    assert plan.eta_s(remaining, rate) == expected
