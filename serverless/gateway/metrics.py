"""GET /metrics: Prometheus text about the whole cluster and about the gateway replica scraped.

Cluster series (queue depth and oldest age, jobs in progress, submitted / finished / retried,
delay and execution histograms, workers by state, the scaler's cold starts, decisions and
desired workers) are read from Redis at scrape time (serverless/metrics_store.py: the endpoint
list, then one pipeline for every endpoint) and yielded by `ClusterCollector`, a custom
collector over that snapshot. No gateway counts them itself, so every replica reports the same
values: query them with `max by (...)` over replicas, never a sum.

Per-process series live in a registry of the app's own (two gateways in one process, as in the
tests, never collide), each fed by one small hook: HTTP request durations by the route's name
in the route table (never the raw path: ids would make a series per job), method and code (this
module's middleware; SSE streams are left out, they last as long as their job); the AutoPipeline
round trips to Redis (one clock read per batch, serverless/autopipeline.py); open SSE streams
(read from the chunk fanout at scrape time: no hook on the hot path); webhook deliveries by
outcome (webhooks.py); build info. The two duration histograms, observed on every request, are
`Timings`: plain bucket counts that only the event loop's thread touches, so an observation
takes no lock (0.25 us, where prometheus_client's Histogram takes 0.75 us with its per-value
locks: bench/scenarios/metrics_cost.py measures what the whole costs a /run).

The route is in the table as an admin route (the auth middleware asks for the admin key); with
PODQ_METRICS_PUBLIC=true its row is a public route instead, which the auth middleware lets
through as it does /healthz. With
PODQ_METRICS=false there is no route, no middleware and no hook: nothing is measured.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from importlib import metadata
from itertools import accumulate
from typing import TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Info, disable_created_metrics
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
)
from prometheus_client.registry import Collector

from serverless import autopipeline, keys
from serverless.gateway import state
from serverless.gateway.chunk_fanout import ChunkFanout
from serverless.gateway.openapi import Route
from serverless.gateway.webhooks import FAILURE, REFUSED, RETRY, SUCCESS, Observer, unobserved
from serverless.metrics_store import (
    FINISHED, PRIORITIES, WORKER_STATES, EndpointFigures, read_cluster,
)
from serverless.settings import Settings
from serverless.store import now_ms

ROUTE_NAME = "metrics"
M = TypeVar("M", bound=Metric)
# seconds; /runsync?wait= defaults to 90 s and is clamped to 300 s (docs/api.md)
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                30, 90, 300)
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                 0.5, 1)
# any other method a client sends is labelled `other` (a label value per made-up method would
# let a client grow the series without bound)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# `_created` series would double every counter and histogram for a figure Prometheus' text
# format does not use (prometheus_client's documented switch; it is process-wide)
disable_created_metrics()


def _version() -> str:
    try:
        return metadata.version("podq")
    except metadata.PackageNotFoundError:
        return "0"


class Timings(Collector):
    """A histogram of durations as plain counts per label set: [bucket counts..., +Inf count,
    sum]. Only the event loop's thread observes and collects, so nothing is locked."""

    def __init__(self, name: str, doc: str, labels: Sequence[str],
                 bounds: Sequence[float]) -> None:
        self.name, self.doc, self.labels, self.bounds = name, doc, list(labels), tuple(bounds)
        self._les = [*(repr(float(b)) for b in bounds), "+Inf"]
        self._series: dict[tuple[str, ...], list[float]] = {}

    def series(self, *labels: str) -> list[float]:
        """The counts of one label set (made on first use; hand it to `observe`)."""
        return self._series.setdefault(labels, [0] * (len(self.bounds) + 2))

    def observe(self, counts: list[float], seconds: float) -> None:
        """Count `seconds` in the series `counts` (from `series`)."""
        counts[bisect_left(self.bounds, seconds)] += 1  # the first bucket with le >= seconds
        counts[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, counts in self._series.items():
            buckets = list(zip(self._les, accumulate(counts[:-1])))
            family.add_metric(list(labels), buckets, counts[-1])
        yield family


class ProcessMetrics:
    """This gateway process's own series, in a registry of their own."""

    def __init__(self, fanout: ChunkFanout) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http = Timings(
            "podq_http_request_duration_seconds",
            "Time from request to response by route name, method and status code (SSE streams "
            "excluded)", ("route", "method", "code"), HTTP_BUCKETS)
        self.redis = Timings(
            "podq_redis_roundtrip_duration_seconds",
            "One AutoPipeline round trip to Redis: the commands one event-loop turn sent", (),
            REDIS_BUCKETS)
        self._redis_counts = self.redis.series()
        self.registry.register(self.http)
        self.registry.register(self.redis)
        Gauge("podq_sse_streams", "Open /stream Server-Sent Events responses",
              registry=self.registry).set_function(lambda: fanout.open)
        deliveries = Counter("podq_webhook_deliveries", "Webhook deliveries by outcome (each "
                             "after up to 1 + retries tries)", ("outcome",), registry=self.registry)
        self._webhooks = {o: deliveries.labels(o) for o in (SUCCESS, FAILURE, REFUSED)}
        self._webhooks[RETRY] = Counter("podq_webhook_retries", "Webhook tries after a failed one",
                                        registry=self.registry)
        Info("podq_build", "podq's version and Python's", registry=self.registry).info(
            {"version": _version(), "python": platform.python_version()})
        self._requests: dict[tuple[str | None, str, int], list[float]] = {}  # series by labels

    def request_done(self, route: str | None, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        counts = self._requests.get((route, method, status))
        if counts is None:
            known = method if method in _METHODS else "other"
            counts = self.http.series(route or "unmatched", known, str(status))
            if known == method:  # a made-up method is not cached: the dict stays bounded
                self._requests[(route, method, status)] = counts
        self.http.observe(counts, seconds)

    def round_trip(self, seconds: float) -> None:
        """The AutoPipeline's observer."""
        self.redis.observe(self._redis_counts, seconds)

    def webhook(self, event: str) -> None:
        """webhooks.deliver's observer: an outcome or a retry."""
        self._webhooks[event].inc()


METRICS: web.AppKey[ProcessMetrics] = web.AppKey("podq_metrics")


# ---- cluster series -------------------------------------------------------------------


class _Families:
    """The cluster's metric families, filled one endpoint at a time."""

    def __init__(self) -> None:
        gauge, counter, histogram = GaugeMetricFamily, CounterMetricFamily, HistogramMetricFamily
        self.depth = _family(gauge, "podq_queue_depth", "Jobs waiting in the queue", "priority")
        self.age = _family(gauge, "podq_queue_oldest_age_seconds",
                           "How long the oldest queued job has waited (0 when none)", "priority")
        self.running = _family(gauge, "podq_jobs_in_progress", "Jobs a worker is running")
        self.submitted = _family(counter, "podq_jobs_submitted",
                                 "Jobs queued by /run, /runsync and /retry")
        self.finished = _family(counter, "podq_jobs_finished", "Jobs that reached a final status",
                                "status")
        self.retried = _family(counter, "podq_jobs_retried",
                               "Jobs requeued after their worker lost the lease")
        self.delay = _family(histogram, "podq_job_delay_seconds",
                             "Wait from submission to a job's first start (RunPod's delayTime)")
        self.execution = _family(histogram, "podq_job_execution_seconds", "Run time of jobs that "
                                 "ended while running (RunPod's executionTime)", "status")
        self.workers = _family(gauge, "podq_workers", "Workers by state (podq and RunPod protocol)",
                               "state")
        self.cold = _family(counter, "podq_worker_cold_starts",
                            "Worker starts by how they ended: ready, failed, timeout",
                            "backend", "outcome")
        self.cold_s = _family(histogram, "podq_worker_cold_start_seconds",
                              "Start to first ready heartbeat, seen by the scaler", "backend")
        self.decisions = _family(counter, "podq_scaler_decisions",
                                 "Workers the scaler started or stopped, by action", "action")
        self.desired = _family(gauge, "podq_scaler_desired_workers", "The scaling policy's target")
        self.log_dropped = _family(counter, "podq_log_lines_dropped", "Worker output lines not shipped "
                                   "to the endpoint's log stream (buffer full, or Redis unreachable)")

    def add(self, f: EndpointFigures) -> None:
        ep = f.endpoint
        for priority in PRIORITIES:
            self.depth.add_metric([ep, priority], f.depth[priority])
            self.age.add_metric([ep, priority], f.oldest_age_s[priority])
        self.running.add_metric([ep], f.in_progress)
        self.submitted.add_metric([ep], f.stats.get("submitted", 0))
        for status in FINISHED:
            self.finished.add_metric([ep, status], f.stats.get(status, 0))
        self.retried.add_metric([ep], f.stats.get("retried", 0))
        self.delay.add_metric([ep], f.delay.buckets, f.delay.sum_s)
        for status, h in f.execution.items():
            self.execution.add_metric([ep, status], h.buckets, h.sum_s)
        for worker_state in WORKER_STATES:
            self.workers.add_metric([ep, worker_state], getattr(f.workers, worker_state))
        for (backend, outcome), n in sorted(f.cold_starts.items()):
            self.cold.add_metric([ep, backend, outcome], n)
        for backend, h in f.cold_start.items():
            self.cold_s.add_metric([ep, backend], h.buckets, h.sum_s)
        for action, n in sorted(f.decisions.items()):
            self.decisions.add_metric([ep, action], n)
        if f.desired is not None:
            self.desired.add_metric([ep], f.desired)
        self.log_dropped.add_metric([ep], f.stats.get(keys.LOG_LINES_DROPPED, 0))

    def all(self) -> list[Metric]:
        return list(vars(self).values())


def _family(kind: type[M], name: str, doc: str, *labels: str) -> M:
    """A family of one endpoint-labelled series per endpoint (and per `labels`)."""
    return kind(name, doc, labels=["endpoint", *labels])


class ClusterCollector(Collector):
    """The cluster series of one scrape, from the figures read_cluster returned."""

    def __init__(self, endpoints: Iterable[EndpointFigures]) -> None:
        self.endpoints = list(endpoints)

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        for figures in self.endpoints:
            families.add(figures)
        return iter(families.all())


class _Both(Collector):
    def __init__(self, *sources: Collector) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source.collect()


async def scrape(request: web.Request) -> web.Response:
    """GET /metrics: the cluster's series (read from Redis now) and this process's, in the text
    format the scraper's Accept header asks for (Prometheus text or OpenMetrics)."""
    store = request.app[state.STORE]
    cluster = ClusterCollector(await read_cluster(store.redis, now_ms(), store.stale_after_ms))
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(_Both(cluster, request.app[METRICS].registry))
    return web.Response(body=body, headers={"Content-Type": content_type})


ROUTE = Route(ROUTE_NAME, ("GET",), "/metrics", scrape,
              "Prometheus metrics: the cluster's (from Redis) and this replica's", admin=True)


# ---- wiring (create_app) --------------------------------------------------------------


@web.middleware
async def timing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Time every answered request; outermost, so auth refusals and errors count too."""
    started = time.perf_counter()
    response = await handler(request)
    if isinstance(response, web.Response):  # an SSE stream lasts as long as its job: left out
        request.app[METRICS].request_done(request.match_info.route.name, request.method,
                                          response.status, time.perf_counter() - started)
    return response


def middlewares(settings: Settings) -> tuple[Middleware, ...]:
    """What goes before the error middleware (timing, so it sees the status the client gets)."""
    return (timing_middleware,) if settings.metrics else ()


def routes(settings: Settings) -> tuple[Route, ...]:
    """The /metrics row of the route table (public with PODQ_METRICS_PUBLIC=true: the auth
    middleware then lets it through), or none when metrics are off."""
    if not settings.metrics:
        return ()
    return (dataclasses.replace(ROUTE, public=True, admin=False) if settings.metrics_public else ROUTE,)


def install(app: web.Application, settings: Settings) -> None:
    """Give `app` its process metrics and time its Redis round trips while it runs (after
    CHUNK_FANOUT is set); nothing when metrics are off."""
    if not settings.metrics:
        return
    app[METRICS] = ProcessMetrics(app[state.CHUNK_FANOUT])
    app.cleanup_ctx.append(_timing_round_trips)


async def _timing_round_trips(app: web.Application) -> AsyncIterator[None]:
    observe = app[METRICS].round_trip
    autopipeline.ROUND_TRIP_OBSERVERS.append(observe)
    yield
    autopipeline.ROUND_TRIP_OBSERVERS.remove(observe)


def webhook_observer(app: web.Application) -> Observer:
    """What the webhook dispatcher tells its deliveries' outcomes to (nothing when off)."""
    metrics = app.get(METRICS)
    return metrics.webhook if metrics is not None else unobserved
