"""The figures the console shows, from the metrics store's snapshot (pure).

Percentiles come from the fixed-bucket histograms the Lua scripts keep in Redis
(metrics_store.Histogram), interpolated inside a bucket as Prometheus' histogram_quantile
does, so the console and a Grafana panel over /metrics agree. `live` flattens one snapshot
into `{"<endpoint>.<figure>": text}`: the pages mark each cell with its key (`data-k`), and the
console script sets the cell's text from the SSE event, with no HTML built in the browser.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from serverless.metrics_store import FINISHED, INF, EndpointFigures, Histogram
from serverless.model import WorkerCounts

DASH = "–"
PERCENTILES = (0.5, 0.9)


def merged(histograms: Iterable[Histogram]) -> Histogram | None:
    """Several histograms of one bucket layout as one (execution over final statuses,
    cold starts over backends); None when there are none."""
    hists = list(histograms)
    if not hists:
        return None
    buckets = [(le, sum(h.buckets[i][1] for h in hists)) for i, (le, _) in enumerate(hists[0].buckets)]
    return Histogram(buckets, sum(h.sum_s for h in hists))


def quantile(h: Histogram | None, q: float) -> float | None:
    """The q-quantile in seconds (histogram_quantile's interpolation); None when empty. A
    rank in the +Inf bucket answers the highest finite bound, as Prometheus does."""
    if h is None or h.count == 0:
        return None
    rank = q * h.count
    lower, below = 0.0, 0
    for le, count in h.buckets:
        if count >= rank:
            if le == INF:
                return lower
            upper = float(le)
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = (lower if le == INF else float(le)), count
    return lower


def seconds_text(value: float | None) -> str:
    """1.5 -> '1.50 s', 0.0123 -> '12.3 ms', None -> a dash."""
    if value is None:
        return DASH
    if value < 1:
        return f"{value * 1000:.3g} ms"
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"


def finished(figures: EndpointFigures) -> int:
    """Jobs of the endpoint that ever ended (completed, failed, cancelled, timed out)."""
    return sum(figures.stats.get(name, 0) for name in FINISHED)


def execution(figures: EndpointFigures) -> Histogram | None:
    return merged(figures.execution.values())


def cold_start(figures: EndpointFigures) -> Histogram | None:
    return merged(figures.cold_start.values())


def workers_text(counts: WorkerCounts) -> str:
    """'2 idle, 1 running' (states with none left out); a dash when there are none."""
    parts = [f"{n} {name}" for name, n in msgspec.structs.asdict(counts).items() if n]
    return ", ".join(parts) or DASH


def rate_text(per_s: float | None) -> str:
    return DASH if per_s is None else f"{per_s:.2f}"


def live(
    snapshot: Iterable[EndpointFigures], before: Mapping[str, int], seconds: float
) -> dict[str, str]:
    """Every endpoint's figures as cell texts; jobs/s from the finished counts `before` (the
    previous snapshot, `seconds` ago; no rate for an endpoint not in it)."""
    cells: dict[str, str] = {}
    for f in snapshot:
        done = finished(f)
        rate = (max(0, done - before[f.endpoint]) / seconds
                if f.endpoint in before and seconds > 0 else None)
        ex = execution(f)
        values = {
            "queued": str(sum(f.depth.values())), "in_progress": str(f.in_progress),
            "workers": workers_text(f.workers), "rate": rate_text(rate),
            "delay_p50": seconds_text(quantile(f.delay, 0.5)),
            "delay_p90": seconds_text(quantile(f.delay, 0.9)),
            "exec_p50": seconds_text(quantile(ex, 0.5)),
            "exec_p90": seconds_text(quantile(ex, 0.9)),
        }
        cells.update({f"{f.endpoint}.{name}": text for name, text in values.items()})
    return cells
