"""The console's figures from fixed-bucket histograms (pure): table tests."""

from __future__ import annotations

import pytest

from serverless.console import numbers
from serverless.metrics_store import DELAY_MS, EndpointFigures, Histogram, histogram, le_text
from serverless.model import WorkerCounts


def hist(counts: dict[float, int], bounds=DELAY_MS) -> Histogram:  # type: ignore[no-untyped-def]
    return histogram({le_text(b): n for b, n in counts.items()}, bounds)


@pytest.mark.parametrize(("counts", "q", "want"), [
    ({}, 0.5, None),  # no observations
    ({10: 4}, 0.5, 0.0075),  # all in (5 ms, 10 ms]: half way through it
    ({10: 4}, 1.0, 0.010),
    ({1: 1, 1000: 1}, 0.5, 0.001),  # rank 1 is the first bucket's top
    ({1: 1, 1000: 1}, 0.9, 0.5 + 0.5 * 0.8),  # rank 1.8: 80 % into (0.5 s, 1 s]
    ({3_600_000: 1}, 0.5, 2700.0),
])
def test_quantile(counts: dict[float, int], q: float, want: float | None) -> None:
    got = numbers.quantile(hist(counts) if counts else hist({}), q)
    assert got == (None if want is None else pytest.approx(want))


def test_quantile_in_the_inf_bucket_is_the_top_bound() -> None:
    h = histogram({"+Inf": 3}, DELAY_MS)
    assert numbers.quantile(h, 0.5) == DELAY_MS[-1] / 1000


def test_merged_adds_bucket_counts() -> None:
    a, b = hist({10: 1}), hist({10: 2, 1000: 1})
    m = numbers.merged([a, b])
    assert m is not None and m.count == 4 and numbers.merged([]) is None


@pytest.mark.parametrize(("value", "text"), [
    (None, "–"), (0.0123, "12.3 ms"), (0.5, "500 ms"), (1.5, "1.5 s"), (250.0, "250 s"),
])
def test_seconds_text(value: float | None, text: str) -> None:
    assert numbers.seconds_text(value) == text


def figures(ep: str, completed: int, queued: int) -> EndpointFigures:
    return EndpointFigures(
        endpoint=ep, depth={"normal": queued, "low": 1}, oldest_age_s={}, in_progress=2,
        stats={"completed": completed, "failed": 1}, delay=hist({10: 2}),
        execution={"completed": hist({1000: 1})}, workers=WorkerCounts(idle=1, running=2),
        cold_starts={}, cold_start={}, decisions={}, desired=None)


def test_live_cells_and_rate() -> None:
    cells = numbers.live([figures("a", 30, 4), figures("b", 5, 0)], {"a": 11}, 2.0)
    assert cells["a.queued"] == "5" and cells["a.in_progress"] == "2"
    assert cells["a.workers"] == "1 idle, 2 running"
    assert cells["a.rate"] == "10.00"  # (30 + 1 - 11) / 2 s
    assert cells["b.rate"] == "–"  # not in the previous snapshot
    assert cells["a.delay_p50"] == "7.5 ms" and cells["a.exec_p90"] == "950 ms"
