"""API keys: where a request's key is read from, how keys are stored, how they are compared.

A request carries its key as `Authorization: Bearer <key>` or as the bare key (RunPod's docs
show both). Keys are never stored in plain text: Redis holds their sha256 digests (hash
`keys.API_KEYS`), and keys given to the process (the admin key from PODQ_API_KEY, extra keys
passed to create_app) are kept as digests too and compared with `hmac.compare_digest`, so the
time a comparison takes says nothing about how much of a guess was right. Redis keys are found
by digest, so a lookup's timing can only reveal the digest of a guess, never the key.

An endpoint's `access` (EndpointConfig.access, Hugging Face's endpoint `type`) decides who may
call its /v2 job routes; worker routes and the /v1 admin routes do not depend on it:

    public      the job routes of OPEN_ON_PUBLIC need no key; a key that is sent is not checked
                (huggingface_hub sends the user's saved Hub token to any URL), so per-key rate
                limits do not apply there, the endpoint's own rate limits do; purge-queue still
                needs a key
    protected   a valid key whose scope includes the endpoint (an empty scope: every endpoint)
    private     the admin key, or a key whose scope names the endpoint: an unscoped key is 403

Knowing the access must not cost a Redis round trip per request: each gateway process keeps an
endpoint's access for ACCESS_TTL_MS (2 s) after reading it (unregistered endpoints too, as
protected). A change of `access` therefore takes effect on every replica within 2 s; until
then a replica may still apply the old rule.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from aiohttp import web
from aiohttp.typedefs import Handler
import msgspec
from redis.asyncio import Redis

from serverless import keys
from serverless.gateway import state
from serverless.gateway.error_responses import error_response
from serverless.model import ApiKey, EndpointAccess
from serverless.store import now_ms
from serverless.ttl_cache import TtlCache

ADMIN_KEY_ENV = "PODQ_API_KEY"

MISSING_KEY = (
    "missing API key: send `Authorization: Bearer <key>` "
    "(set PODQ_API_KEY or pass api_key= to the client)"
)
INVALID_KEY = "invalid API key: check PODQ_API_KEY or api_key=, or ask an admin for a valid key"
NOT_ADMIN = (
    "{route} needs the admin key (the gateway's PODQ_API_KEY); this key is valid for the "
    "/v2 job routes only"
)
NO_ADMIN_KEY = (
    "{route} is off: this gateway has no admin key; start it with PODQ_API_KEY set to enable "
    "the /v1 admin API"
)
# https://www.rfc-editor.org/rfc/rfc9110#section-15.5.2: a 401 names the scheme to use
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="podq"'}


def hash_key(key: str) -> str:
    """The sha256 hex digest under which a key is stored and compared."""
    return hashlib.sha256(key.encode()).hexdigest()


def presented_key(header: str | None) -> str | None:
    """The key in an Authorization header value: `Bearer <key>` or the bare key."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    key = rest.strip() if scheme.lower() == "bearer" else header.strip()
    return key or None


def admin_key_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The admin key from PODQ_API_KEY, or None when unset or empty."""
    env = os.environ if environ is None else environ
    return env.get(ADMIN_KEY_ENV) or None


async def add_key(
    redis: Redis, key: str, label: str = "", endpoints: Iterable[str] = (), *, worker: bool = False
) -> str:
    """Store an API key (as its digest) so every gateway replica accepts it.

    Args:
        redis: the shared Redis.
        key: the plain key; it is hashed here and never stored.
        label: a note for admins (who owns the key).
        endpoints: the endpoints the key may reach; empty means every endpoint.
        worker: a worker key: it reaches only the RunPod worker-protocol routes (job-take,
            job-done, ...) of its endpoints, and a client key never reaches those.

    Returns:
        The digest the key is stored under (use it to revoke the key).
    """
    record = ApiKey(digest=hash_key(key), label=label, endpoints=sorted(set(endpoints)),
                    worker=worker, created_at=now_ms())
    await redis.hset(keys.API_KEYS, record.digest, msgspec.json.encode(record))
    return record.digest


async def revoke_key(redis: Redis, digest: str) -> bool:
    """Remove a stored key by its digest; False when no such key was stored."""
    return bool(await redis.hdel(keys.API_KEYS, digest))


async def list_keys(redis: Redis) -> list[ApiKey]:
    """Every stored key (digests, labels and scopes; never the keys themselves)."""
    stored = await redis.hgetall(keys.API_KEYS)
    return sorted((_record(d.decode(), v) for d, v in stored.items()), key=lambda k: k.created_at)


def _record(digest: str, raw: bytes) -> ApiKey:
    try:
        return _key_decoder.decode(raw)
    except msgspec.DecodeError:  # a key stored as a bare label: unscoped
        return ApiKey(digest=digest, label=raw.decode(errors="replace"))


_key_decoder = msgspec.json.Decoder(ApiKey)
# a scope's endpoints: an empty set = every endpoint
ALL_ENDPOINTS: frozenset[str] = frozenset()
# Routes only RunPod-protocol workers call (serverless/gateway/worker_routes.py): worker keys
# and the admin key reach them, client keys do not; worker keys reach nothing else.
WORKER_ROUTES = frozenset({"job-take", "job-take-batch", "job-done", "job-stream", "ping", "job-stop"})
# A worker that presents a bad key re-polls at once (the SDK retries 401s without a pause):
# refusals on worker routes are answered after a pause (GatewayOptions.worker_refusal_pause_s,
# 1 s) so a misconfigured worker cannot spin.
CLIENT_ON_WORKER_ROUTE = (
    "{route} is a worker route (RunPod's worker protocol): use a worker key "
    "(`podq keys create --worker --endpoint ID`) or the admin key, not a client key"
)
WORKER_ON_CLIENT_ROUTE = (
    "this is a worker key: it reaches only the worker-protocol routes (job-take, job-done, "
    "job-stream, ping, job-stop) of its endpoints; use a client key for {route}"
)


# The /v2 job routes a public endpoint opens to callers without a key (by route name, as
# WORKER_ROUTES): RunPod's job routes but purge-queue, and the HF and OpenAI inference routes.
OPEN_ON_PUBLIC = frozenset({
    "run", "runsync", "status", "stream", "cancel", "retry", "health",
    "hf", "hf-chat-completions",
    "openai-chat-completions", "openai-completions", "openai-models",
})
# how long a gateway process keeps an endpoint's access, and for how many endpoints
ACCESS_TTL_MS = 2_000
ACCESS_CACHE_SIZE = 4_096
PRIVATE_UNSCOPED = (
    "endpoint '{endpoint}' is private: it takes the admin key or a key scoped to it, and this "
    "key is unscoped (it reaches every endpoint); create a scoped key with "
    "`podq keys create --endpoint {endpoint}` (POST /v1/keys {{\"endpoints\": [\"{endpoint}\"]}})"
)


def needs_key(access: EndpointAccess, route: str) -> bool:
    """Whether a request to `route` of an endpoint with `access` must carry a valid key.

    Args:
        access: the endpoint's access.
        route: the route's name (the route table's `name`).

    Returns:
        False only for the OPEN_ON_PUBLIC routes of a public endpoint.
    """
    return not (access is EndpointAccess.PUBLIC and route in OPEN_ON_PUBLIC)


def private_refusal(access: EndpointAccess, endpoint: str, scope: frozenset[str], admin: bool) -> str | None:
    """The 403 message for a valid key that may not reach a private endpoint, or None.

    Args:
        access: the endpoint's access.
        endpoint: the endpoint's id.
        scope: the endpoints the key may reach (empty: every endpoint).
        admin: the key is the admin key.

    Returns:
        None when the key may go on (a key scoped to other endpoints is refused before this).
    """
    if access is not EndpointAccess.PRIVATE or admin or endpoint in scope:
        return None
    return PRIVATE_UNSCOPED.format(endpoint=endpoint)


class _Access(msgspec.Struct):
    """The one field of a registry record the middleware reads (others are skipped)."""

    access: EndpointAccess = EndpointAccess.PROTECTED


_access_decoder = msgspec.json.Decoder(_Access)


class Scope(msgspec.Struct, frozen=True):
    """What a valid key may reach: `endpoints` (empty: all), and whether it is a worker key."""

    endpoints: frozenset[str] = ALL_ENDPOINTS
    worker: bool = False


class KeyChecker:
    """Decides whether a presented key is valid: a local key or one stored in Redis."""

    def __init__(
        self, redis: Redis, admin_key: str | None, extra_keys: Iterable[str] = (),
        access_ttl_ms: int = ACCESS_TTL_MS,
    ) -> None:
        local = [admin_key] if admin_key else []
        self._local = [hash_key(k) for k in (*local, *extra_keys) if k]
        self._admin = hash_key(admin_key) if admin_key else None
        self._redis = redis
        self._access: TtlCache[EndpointAccess] = TtlCache(access_ttl_ms, ACCESS_CACHE_SIZE)

    async def access(self, endpoint: str, now_ms: int) -> EndpointAccess:
        """The endpoint's access (protected when it is not registered), kept ACCESS_TTL_MS."""
        access = self._access.get(endpoint, now_ms)
        if access is None:
            raw = await self._redis.hget(keys.REGISTRY_ENDPOINTS, endpoint)
            access = _access_decoder.decode(raw).access if raw else EndpointAccess.PROTECTED
            self._access.put(endpoint, access, now_ms)
        return access

    @property
    def has_admin(self) -> bool:
        """True when this gateway was given an admin key."""
        return self._admin is not None

    def is_admin(self, digest: str) -> bool:
        """True when `digest` (hash_key of the presented key) is the admin key's (constant time)."""
        return self._admin is not None and hmac.compare_digest(digest, self._admin)

    def _is_local(self, digest: str) -> bool:
        # every digest is compared, so the loop's length does not depend on which one matched
        matches = [hmac.compare_digest(digest, known) for known in self._local]
        return any(matches)

    async def scope(self, digest: str) -> Scope | None:
        """What the key whose hash_key is `digest` may reach, or None when it is invalid."""
        if self._is_local(digest):
            return _LOCAL
        raw = await self._redis.hget(keys.API_KEYS, digest)
        if raw is None:
            return None
        record = _record(digest, raw)
        return Scope(frozenset(record.endpoints), record.worker)


def _admin_refusal(app: web.Application, route: str | None, checker: KeyChecker,
                   digest: str, where: str) -> web.Response | None:
    """403 when the route needs the admin key and the (already valid) key of `digest` is not it."""
    if route not in app[state.ADMIN_ROUTES]:
        return None
    if checker.is_admin(digest):
        return None
    text = NOT_ADMIN if checker.has_admin else NO_ADMIN_KEY
    return error_response(403, text.format(route=where))


_LOCAL = Scope()


def _kind_refusal(route: str | None, checker: KeyChecker, digest: str, scope: Scope,
                  where: str) -> web.Response | None:
    """403 for a client key on a worker route, or a worker key anywhere else."""
    on_worker_route = route in WORKER_ROUTES
    if on_worker_route == scope.worker or (on_worker_route and checker.is_admin(digest)):
        return None
    text = WORKER_ON_CLIENT_ROUTE if scope.worker else CLIENT_ON_WORKER_ROUTE
    return error_response(403, text.format(route=where))


class Verdict(NamedTuple):
    """What check_key decided: `refusal` None lets the request go on; `digest` and `scope` name
    the valid key that was sent (None when none was needed, or it was refused before)."""

    refusal: web.Response | None
    digest: str | None = None
    scope: Scope | None = None


_LET_THROUGH = Verdict(None)


async def check_key(app: web.Application, route: str | None, endpoint: str | None,
                    authorization: str | None, query_key: str | None, where: str) -> Verdict:
    """The key rules of every request: 401 for a non-public route without a valid key, 403 for
    an admin route whose key is not the admin key, a worker route whose key is not a worker key
    (or the admin key), or any other route with a worker key.

    Args:
        app: the gateway application (its key checker and route sets).
        route: the route's name (the route table's `name`).
        endpoint: the `endpoint_id` in the path, or None when the route names none.
        authorization: the Authorization header, or None.
        query_key: `?api_key=` for the QUERY_KEY_ROUTES, else None.
        where: `METHOD /path`, as refusals name the route.

    Returns:
        The verdict; the auth middleware and the hot path (hot_path.py) both act on it.
    """
    if route in app[state.PUBLIC_ROUTES]:  # Route.public
        return _LET_THROUGH
    access = await _endpoint_access(app, route, endpoint)
    if not needs_key(access, route or ""):
        return _LET_THROUGH
    key = presented_key(authorization)
    if key is None and route in QUERY_KEY_ROUTES:
        key = query_key or None
    if key is None:
        return Verdict(error_response(401, MISSING_KEY, _CHALLENGE))
    checker = app[state.KEYS]
    digest = hash_key(key)  # hashed once: the key is known by its digest from here on
    scope = await checker.scope(digest)
    if scope is None:
        return Verdict(error_response(401, INVALID_KEY, _CHALLENGE))
    return Verdict(_scope_refusal(app, route, endpoint, access, checker, digest, scope, where),
                   digest, scope)


def _scope_refusal(app: web.Application, route: str | None, endpoint: str | None,
                   access: EndpointAccess, checker: KeyChecker, digest: str, scope: Scope,
                   where: str) -> web.Response | None:
    # an admin route says so first (/v1/endpoints/{endpoint_id} names an endpoint too)
    if (refusal := _admin_refusal(app, route, checker, digest, where)) is not None:
        return refusal
    if (refusal := _kind_refusal(route, checker, digest, scope, where)) is not None:
        return refusal
    if endpoint is None:
        return None
    if scope.endpoints and endpoint not in scope.endpoints:
        reach = ", ".join(sorted(scope.endpoints))
        return error_response(403, f"this key may only reach endpoint(s) {reach}, not '{endpoint}'")
    text = private_refusal(access, endpoint, scope.endpoints, checker.is_admin(digest))
    return None if text is None else error_response(403, text)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply check_key to the request; a valid key's digest and scope go on the request
    (state.KEY_DIGEST for per-key rate limits, state.KEY_SCOPE for routes that read it)."""
    # the route and the app are looked up once here and handed down: this runs on every request
    route = request.match_info.route.name
    query_key = request.query.get("api_key") if route in QUERY_KEY_ROUTES else None
    verdict = await check_key(request.app, route, request.match_info.get("endpoint_id"),
                              request.headers.get("Authorization"), query_key,
                              f"{request.method} {request.path}")
    if verdict.digest is not None:
        request[state.KEY_DIGEST] = verdict.digest
        request[state.KEY_SCOPE] = verdict.scope
    if verdict.refusal is None:
        return await handler(request)
    if route in WORKER_ROUTES:
        await asyncio.sleep(request.app[state.WORKER_REFUSAL_PAUSE_S])
    return verdict.refusal


async def _endpoint_access(app: web.Application, route: str | None,
                           endpoint: str | None) -> EndpointAccess:
    """The access of the endpoint a client route names; protected for every other route (admin
    and worker routes, routes that name no endpoint), whose rules access does not change."""
    if endpoint is None or route in WORKER_ROUTES or route in app[state.ADMIN_ROUTES]:
        return EndpointAccess.PROTECTED
    return await app[state.KEYS].access(endpoint, now_ms())


# routes that also take the key as `?api_key=` (RunPod's GraphQL API: its curl examples send it
# so); the header wins when both are sent
QUERY_KEY_ROUTES = frozenset({"graphql"})
