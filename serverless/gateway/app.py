"""create_app: the gateway's typed state, background tasks, middlewares and its one route table.

The gateway is stateless: everything it knows is in Redis, so any number of replicas may run
behind a load balancer. Two background tasks run in every replica: the reaper (requeues jobs
whose worker stopped renewing its lease, so a crash is recovered even when no other worker of
that endpoint runs) and the webhook dispatcher.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from aiohttp import web
from redis.exceptions import RedisError

from serverless import console, periodic
from serverless.codec import json_encode
from serverless.gateway import admin_routes as admin
from serverless.gateway import (
    batch_routes, bundle_routes, graphql_routes, hf_routes, key_routes, log_routes, metrics,
    openai_routes, routes, state,
)
from serverless.gateway import worker_routes as wr
from serverless.gateway.auth import KeyChecker, admin_key_from_env, auth_middleware
from serverless.gateway.chunk_fanout import ChunkFanout, fanout_lifecycle
from serverless.gateway.error_responses import error_middleware
from serverless.gateway.known_endpoints import KnownEndpoints
from serverless.gateway.limits import Limits, RateLimiter, limits_from_settings, rate_limit_middleware
from serverless.gateway.openapi import ID_PATTERN, Param, Refinements, Route, build_spec, openapi_json
from serverless.gateway.replies import JobRef, Liveness, PurgeReply, StreamReply
from serverless.gateway.webhooks import URL_PATTERN, WebhookDispatcher, WebhookPolicy
from serverless.objects import open_store
from serverless.model import ApiKey, EndpointConfig, Health, RunRequest, StatusBody, Template
from serverless.registry import Registry
from serverless.runpod_protocol import DoneBody, StreamBody
from serverless.settings import Settings
from serverless.store import JobStore

log = logging.getLogger("podq.gateway")

V2 = "/v2/{endpoint_id}"
TEMPLATE = "/v1/templates/{template_id}"
ENDPOINT = "/v1/endpoints/{endpoint_id}"
_GET_POST = ("GET", "POST")
_WAIT = Param("wait", "query", "ms to wait for the result (default 90000, 1000..300000)", "integer")
_SSE = (
    Param("Accept", "header", "`text/event-stream` for a live Server-Sent Events stream"),
    Param("Last-Event-ID", "header", "SSE: resume after this chunk cursor"),
)

ROUTES: tuple[Route, ...] = (
    Route("run", ("POST",), f"{V2}/run", routes.run, "Queue a job",
          RunRequest, JobRef, (413,)),
    Route("runsync", ("POST",), f"{V2}/runsync", routes.runsync,
          "Queue a job and wait for its result", RunRequest, StatusBody, (413,), (_WAIT,)),
    Route("status", _GET_POST, f"{V2}/status/{{job_id}}", routes.status,
          "A job's status, output or error", reply=StatusBody),
    Route("stream", _GET_POST, f"{V2}/stream/{{job_id}}", routes.stream,
          "Stream chunks not yet returned (JSON), or live as SSE", reply=StreamReply, params=_SSE),
    Route("cancel", ("POST",), f"{V2}/cancel/{{job_id}}", routes.cancel,
          "Cancel a queued or running job", reply=JobRef),
    Route("retry", ("POST",), f"{V2}/retry/{{job_id}}", routes.retry,
          "Queue a FAILED or TIMED_OUT job again", reply=JobRef, errors=(409,)),
    Route("purge-queue", ("POST",), f"{V2}/purge-queue", routes.purge_queue,
          "Cancel every queued job of the endpoint", reply=PurgeReply),
    Route("health", ("GET",), f"{V2}/health", routes.health,
          "Job and worker counts", reply=Health),
    Route("healthz", ("GET",), "/healthz", routes.healthz,
          "The gateway is up", reply=Liveness, public=True),
    Route("openapi", ("GET",), "/openapi.json", openapi_json,
          "This document", public=True),
)

# RunPod's worker-side protocol (unmodified `runpod` worker images): worker keys or the admin key
def _worker_path(route: str, job: bool = False) -> str:
    return f"{V2}/{route}/{{worker_id}}" + ("/{job_id}" if job else "")


_TAKE = (
    Param("job_in_progress", "query", "0: the worker holds no job (jobs handed to it go back to the queue)"),
)
_NONE_CAME = "No job came within the hold (PODQ_RUNPOD_HOLD_MS); the worker polls again"
WORKER_ROUTES: tuple[Route, ...] = (
    Route("job-take", ("GET",), _worker_path("job-take"), wr.job_take,
          "Worker: take one job (long-poll; 204 when none came)", params=_TAKE, empty=_NONE_CAME),
    Route("job-take-batch", ("GET",), _worker_path("job-take-batch"), wr.job_take,
          "Worker: take up to batch_size jobs (long-poll; 204 when none came)",
          params=(*_TAKE, Param("batch_size", "query", "most jobs to hand over", "integer", (1, 1000))),
          empty=_NONE_CAME),
    Route("job-done", ("POST",), _worker_path("job-done", job=True), wr.job_done,
          "Worker: a job's result, or a progress update", DoneBody, wr.Accepted, (413,)),
    Route("job-stream", ("POST",), _worker_path("job-stream", job=True), wr.job_stream,
          "Worker: one stream chunk of a running job", StreamBody, wr.Accepted, (413,)),
    Route("ping", ("GET",), _worker_path("ping"), wr.ping,
          "Worker: heartbeat listing the jobs it holds", reply=wr.Pong),
    Route("job-stop", ("GET",), _worker_path("job-stop"), wr.job_stop,
          "Worker: jobs to stop (long-poll; 204 when none)", reply=wr.JobsToStop,
          empty="No job to stop came within the hold"),
)

# the admin API: templates and endpoints in the registry; the admin key only (403 otherwise)
ADMIN_ROUTES: tuple[Route, ...] = (
    Route("create-template", ("POST",), "/v1/templates", admin.create_template,
          "Create a template", admin.TemplateBody, Template, (409,), admin=True),
    Route("list-templates", ("GET",), "/v1/templates", admin.list_templates,
          "Every template", reply=list[Template], admin=True),
    Route("get-template", ("GET",), TEMPLATE, admin.get_template,
          "One template", reply=Template, admin=True),
    Route("update-template", ("PATCH",), TEMPLATE, admin.update_template,
          "Change a template; endpoints using it roll their workers",
          admin.TemplatePatch, Template, admin=True),
    Route("delete-template", ("DELETE",), TEMPLATE, admin.delete_template,
          "Delete a template no endpoint uses", reply=admin.Deleted, errors=(409,), admin=True),
    Route("create-endpoint", ("POST",), "/v1/endpoints", admin.create_endpoint,
          "Create an endpoint (or, with update_if_exists, update the one with its id or name)",
          admin.EndpointBody, EndpointConfig, (409,), admin=True,
          params=(Param("update_if_exists", "query", "true: update the endpoint with the body's "
                        "`id`, else its `name`, if one exists (the fields sent, as a PATCH)",
                        "boolean"),)),
    Route("list-endpoints", ("GET",), "/v1/endpoints", admin.list_endpoints,
          "Every endpoint with its status", reply=list[EndpointConfig], admin=True,
          params=(Param("label", "query", "KEY:VALUE, or KEY for any value; repeat it: every "
                        "filter must match", pattern=admin.LABEL_FILTER_PATTERN),)),
    Route("get-endpoint", ("GET",), ENDPOINT, admin.get_endpoint,
          "One endpoint with its status", reply=EndpointConfig, admin=True),
    Route("update-endpoint", ("PATCH",), ENDPOINT, admin.update_endpoint,
          "Change an endpoint (a new template, GPUs or backend roll its workers)",
          admin.EndpointPatch, EndpointConfig, admin=True),
    Route("delete-endpoint", ("DELETE",), ENDPOINT, admin.delete_endpoint,
          "Delete an endpoint; its workers are stopped", reply=admin.Deleted, admin=True),
    Route("pause-endpoint", ("POST",), f"{ENDPOINT}/pause", admin.pause_endpoint,
          "Pause: no workers, jobs stay queued", reply=EndpointConfig, admin=True),
    Route("resume-endpoint", ("POST",), f"{ENDPOINT}/resume", admin.resume_endpoint,
          "Resume a paused or scaled-to-zero endpoint", reply=EndpointConfig, admin=True),
    Route("scale-to-zero", ("POST",), f"{ENDPOINT}/scale-to-zero", admin.scale_to_zero,
          "Stop every worker now; the next job starts one", reply=EndpointConfig, admin=True),
    Route("create-key", ("POST",), "/v1/keys", key_routes.create_key,
          "Create an API key (shown once), optionally scoped to endpoints",
          key_routes.KeyBody, key_routes.NewKey, admin=True),
    Route("list-keys", ("GET",), "/v1/keys", key_routes.list_keys,
          "Stored keys: digests, labels, scopes", reply=list[ApiKey], admin=True),
    Route("revoke-key", ("DELETE",), "/v1/keys/{digest}", key_routes.revoke_key,
          "Revoke a key by its digest", reply=key_routes.Revoked, admin=True),
)
# + /v1/endpoints/{id}/logs, + /v2/{endpoint_id}/openai/v1/... (RunPod's OpenAI-compatible route)
ALL_ROUTES = (ROUTES + WORKER_ROUTES + ADMIN_ROUTES + log_routes.ROUTES + openai_routes.ROUTES
              + hf_routes.ROUTES + graphql_routes.ROUTES + batch_routes.ROUTES + bundle_routes.ROUTES)

_POLICY_MS = {"minimum": 1, "maximum": routes.POLICY_MAX_MS}
# what the handlers check beyond the Structs' types, so the document promises no more than they take
SCHEMA_REFINEMENTS: Refinements = {
    "Policy": {"executionTimeout": _POLICY_MS, "ttl": _POLICY_MS},
    # an absolute http(s) URL with a host (private hosts are refused too, unless allowed)
    "RunRequest": {"webhook": {"pattern": URL_PATTERN}},
    "TemplateBody": {"id": {"pattern": ID_PATTERN}},
    "EndpointBody": {"id": {"pattern": ID_PATTERN}},
    "KeyBody": {"endpoints": {"items": {"type": "string", "pattern": ID_PATTERN}}},
}


def api_spec() -> dict[str, Any]:
    """The document GET /openapi.json serves."""
    return build_spec(ALL_ROUTES, SCHEMA_REFINEMENTS)


class GatewayOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What a gateway process is configured with besides Settings.

    `admin_key` None means: read PODQ_API_KEY. `api_keys` are extra plain keys accepted by this
    process (keys stored in Redis through auth.add_key are accepted too).
    """

    admin_key: str | None = None
    api_keys: tuple[str, ...] = ()
    # None: from PODQ_RATE_LIMITS and PODQ_KEY_RATE_LIMITS (limits.limits_from_settings, off
    # unless set); a Limits given replaces both
    limits: Limits | None = None
    webhooks: WebhookPolicy = msgspec.field(default_factory=WebhookPolicy)
    reap_interval_s: float = 1.0
    sse_block_ms: int = 500
    # a refused worker-route request is answered after this pause (the SDK re-polls a 401 at once)
    worker_refusal_pause_s: float = 1.0


EXPIRE_INTERVAL_S = 30.0  # the ttl sweep of queued jobs (policy.ttl is at least seconds long)


async def reap_forever(store: JobStore, interval_s: float) -> None:
    """Every `interval_s`, requeue (or fail) jobs of every endpoint whose lease ran out."""

    async def reap_all() -> None:
        try:
            endpoints = await store.endpoints()
        except (RedisError, OSError):
            store.note_unreachable()  # reaping waits until workers have renewed (JobStore.reap)
            raise
        for endpoint in endpoints:
            requeued, failed = await store.reap(endpoint)
            if requeued or failed:
                log.info("reaped %s: %d requeued, %d failed", endpoint, requeued, failed)

    await periodic.every(interval_s, reap_all)


async def expire_forever(store: JobStore, interval_s: float = EXPIRE_INTERVAL_S) -> None:
    """Every `interval_s`, end TIMED_OUT the queued jobs whose ttl has passed, of every endpoint
    (those of an endpoint without workers would otherwise stay queued for good)."""

    async def expire_all() -> None:
        for endpoint in await store.endpoints():
            if expired := await store.expire_queued(endpoint):
                log.info("%s: %d queued job(s) passed their ttl", endpoint, expired)

    await periodic.every(interval_s, expire_all)


def _reaper(interval_s: float) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        store = app[state.STORE]
        tasks = [asyncio.create_task(reap_forever(store, interval_s), name="podq-reaper"),
                 asyncio.create_task(expire_forever(store), name="podq-ttl-sweep")]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return ctx


async def backfill_registry(store: JobStore, retry_s: float = 5.0) -> int:
    """Index the endpoints stored before their indexes existed (Registry.backfill_indexes), once
    per gateway start, retried until Redis answers; returns how many entries it wrote."""
    while True:
        try:
            written = await Registry(store.redis).backfill_indexes()
        except (RedisError, OSError) as e:
            log.warning("indexing stored endpoints failed: %s (retrying in %.0f s)", e, retry_s)
            await asyncio.sleep(retry_s)
            continue
        if written:
            log.info("indexed %d setting(s) of endpoints stored before their index existed", written)
        return written


async def _backfill(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(backfill_registry(app[state.STORE]), name="podq-registry-backfill")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _webhooks(app: web.Application) -> AsyncIterator[None]:
    dispatcher = WebhookDispatcher(app[state.STORE], app[state.WEBHOOK_POLICY],
                                   metrics.webhook_observer(app))
    await dispatcher.start()
    yield
    await dispatcher.close()


async def _objects(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[state.OBJECTS].close()


async def _closing(app: web.Application) -> None:
    app[state.CLOSING].set()


def _add_routes(app: web.Application, table: tuple[Route, ...]) -> None:
    for route in table:
        resource = app.router.add_resource(route.path, name=route.name)
        for method in route.methods:
            resource.add_route(method, route.handler)


def create_app(
    store: JobStore, settings: Settings, options: GatewayOptions | None = None
) -> web.Application:
    """Build the gateway application around a job store the caller owns (and closes).

    Args:
        store: the job store; the app does not close it.
        settings: podq's settings.
        options: keys, limits, webhook policy, intervals (defaults: RunPod's numbers).

    Returns:
        The aiohttp application, ready for an AppRunner or a test server.
    """
    options = options or GatewayOptions()
    limits = options.limits if options.limits is not None else limits_from_settings(settings)
    admin = options.admin_key if options.admin_key is not None else admin_key_from_env()
    app = web.Application(  # metrics: none when PODQ_METRICS=false
        middlewares=[*metrics.middlewares(settings), error_middleware, console.gate, auth_middleware,
                     rate_limit_middleware],  # console.gate: /console's own session check
        client_max_size=max(limits.run_max_bytes, limits.runsync_max_bytes) + 1,
    )
    app[state.STORE] = store
    app[state.SETTINGS] = settings
    app[state.KEYS] = KeyChecker(store.redis, admin, options.api_keys)
    app[state.LIMITS] = limits
    app[state.LIMITER] = RateLimiter(store.redis, limits)
    app[state.WEBHOOK_POLICY] = (
        msgspec.structs.replace(options.webhooks, allow_private=True)
        if settings.webhook_allow_private else options.webhooks
    )
    app[state.SSE_BLOCK_MS] = options.sse_block_ms
    app[state.WORKER_REFUSAL_PAUSE_S] = options.worker_refusal_pause_s
    app[state.CLOSING] = asyncio.Event()
    app.on_shutdown.append(_closing)
    app[state.REGISTRY] = Registry(store.redis)
    app[state.KNOWN] = KnownEndpoints(store.redis, store.stale_after_ms)
    app[state.OBJECTS] = open_store(settings)
    table = ALL_ROUTES + metrics.routes(settings)  # /metrics: text, not in openapi.json
    app[state.ADMIN_ROUTES] = frozenset(r.name for r in table if r.admin)
    app[state.PUBLIC_ROUTES] = frozenset(r.name for r in table if r.public)
    app[state.OPENAPI] = json_encode(api_spec())
    _add_routes(app, table)
    console.install(app)  # /console: the web console and its history sampler
    app[state.CHUNK_FANOUT] = ChunkFanout(store.redis)  # SSE: one shared chunk reader
    metrics.install(app, settings)
    app.cleanup_ctx.extend([_reaper(options.reap_interval_s), _backfill, _webhooks, fanout_lifecycle,
                             _objects])
    app.cleanup_ctx.append(batch_routes.runners)  # batch jobs: one runner per batch over all replicas
    return app
