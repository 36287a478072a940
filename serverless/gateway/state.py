"""The gateway's typed application state: every `web.AppKey` the gateway's modules read.

Kept apart from app.py so handlers and middlewares can read state without importing the module
that wires them together (app.py imports them; nothing here imports back).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from serverless.gateway.auth import KeyChecker, Scope
    from serverless.gateway.chunk_fanout import ChunkFanout
    from serverless.gateway.known_endpoints import KnownEndpoints
    from serverless.gateway.limits import Limits, RateLimiter
    from serverless.gateway.webhooks import WebhookPolicy
    from serverless.objects import ObjectStore
    from serverless.registry import Registry
    from serverless.settings import Settings
    from serverless.store import JobStore

STORE: web.AppKey[JobStore] = web.AppKey("podq_store")
SETTINGS: web.AppKey[Settings] = web.AppKey("podq_settings")
KEYS: web.AppKey[KeyChecker] = web.AppKey("podq_keys")
LIMITS: web.AppKey[Limits] = web.AppKey("podq_limits")
LIMITER: web.AppKey[RateLimiter] = web.AppKey("podq_limiter")
WEBHOOK_POLICY: web.AppKey[WebhookPolicy] = web.AppKey("podq_webhook_policy")
OPENAPI: web.AppKey[bytes] = web.AppKey("podq_openapi")
REGISTRY: web.AppKey[Registry] = web.AppKey("podq_registry")
# where batch inputs / results and model bundles are kept (PODQ_DATA_DIR or PODQ_OBJECT_STORE)
OBJECTS: web.AppKey[ObjectStore] = web.AppKey("podq_objects")
# which endpoints exist (registered, served by a live worker, or holding jobs), cached briefly
KNOWN: web.AppKey[KnownEndpoints] = web.AppKey("podq_known_endpoints")
# names of the routes that need the admin key (the route table's `admin` rows)
ADMIN_ROUTES: web.AppKey[frozenset[str]] = web.AppKey("podq_admin_routes")
# the route names anyone may call without a key (Route.public: /healthz, /openapi.json, a public /metrics)
PUBLIC_ROUTES: web.AppKey[frozenset[str]] = web.AppKey("podq_public_routes")
SSE_BLOCK_MS: web.AppKey[int] = web.AppKey("podq_sse_block_ms")
# the shared reader of every open SSE stream's chunks (chunk_fanout.py)
CHUNK_FANOUT: web.AppKey[ChunkFanout] = web.AppKey("podq_chunk_fanout")
# set when the gateway shuts down: held worker long-polls end within a second
CLOSING: web.AppKey[asyncio.Event] = web.AppKey("podq_closing")
# seconds a refused request to a worker route waits before its answer (auth.py)
WORKER_REFUSAL_PAUSE_S: web.AppKey[float] = web.AppKey("podq_worker_refusal_pause_s")
# per request: the sha256 digest of the request's API key (auth middleware; rate limits read it)
KEY_DIGEST: web.RequestKey[str] = web.RequestKey("podq_key_digest", str)
# per request: what that key may reach (auth middleware; routes that check reach read it)
KEY_SCOPE: web.RequestKey[Scope] = web.RequestKey("podq_key_scope")
