"""The console's route table, its handlers, and the gate in front of them.

Every console route is named `console:*` and lives under /console. The gate (a middleware the
gateway places before its API-key check) takes those requests: the sign-in page and the static
files are open; every other console route needs a valid session cookie (a page without one is
redirected to sign-in, anything else is 401), and every POST also needs the session's CSRF
token (csrf.py: 403 otherwise). Then it calls the handler directly, so the API-key middleware
and the API's rate limits never see console requests; the API routes are untouched.

Actions are plain form POSTs answered with a 303 back to the page they came from, so they
work without JavaScript. They call what the /v1 and /v2 handlers call (the registry, the job
store), with the same checks. Every answer carries a Content-Security-Policy allowing only the
console's own script and stylesheet, `X-Frame-Options: DENY` (no clickjacking of the action
buttons) and `Cache-Control: no-store`.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web
from aiohttp.typedefs import Handler

from serverless import keys, worker_logs
from serverless.console import auth, csrf, history, jobs, live, numbers, pages
from serverless.errors import NotFound, PodqError
from serverless.gateway import admin_routes, state
from serverless.gateway import auth as api_auth
from serverless.metrics_store import read_cluster
from serverless.model import Status, Template
from serverless.registry import new_id
from serverless.store import now_ms

PREFIX = "console:"
BASE = pages.BASE
OPEN = frozenset({"console:signin", "console:signin-post", "console:static"})
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
MESSAGES = {  # ?done= codes an action redirects with (only these texts are ever shown)
    "pause": "Paused: no workers run; jobs stay queued.",
    "resume": "Resumed.",
    "scale-to-zero": "Scaling to zero: every worker stops; the next job starts one.",
    "purge": "Queue purged.",
    "cancel": "Cancel sent.",
    "retry": "Queued again.",
    "retry-failed": "Failed jobs queued again.",
    "revoke": "Key revoked.",
    "template": "Template created.",
    "delete-template": "Template deleted.",
}
LOG_TAIL = 200  # log lines a page shows before following new ones
SESSION: web.RequestKey[auth.Session] = web.RequestKey("podq_console_session", auth.Session)
BACK: web.RequestKey[str] = web.RequestKey("podq_console_back", str)  # the form's `next`


# ---- the gate ------------------------------------------------------------------------------


def safe_back(target: str | None, default: str) -> str:
    """A redirect target from a form: a console path only (no other host, no scheme)."""
    if target and target.startswith(f"{BASE}/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


@web.middleware
async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Console requests: session (and, for a POST, CSRF) checks, then the handler; the rest
    of the gateway's middlewares below this one are skipped for them. API requests pass on."""
    name = request.match_info.route.name or ""
    if not name.startswith(PREFIX):
        return await handler(request)
    if name not in OPEN:
        session = await auth.session_of(request)
        if session is None:
            if request.method == "GET" and not name.startswith("console:live"):
                raise web.HTTPSeeOther(f"{BASE}/sign-in", headers=HEADERS)
            return web.Response(status=401, text="sign in to the console first", headers=HEADERS)
        if request.method == "POST" and (refused := await csrf.refusal(request, session)):
            refused.headers.update(HEADERS)
            return refused
        request[SESSION] = session
    response = await request.match_info.handler(request)
    if not response.prepared:  # an SSE stream sent its headers already
        response.headers.update(HEADERS)
    return response


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html")


def _back(request: web.Request, default: str, done: str) -> web.HTTPSeeOther:
    target = safe_back(request.get(BACK), default)
    sep = "&" if "?" in target else "?"
    return web.HTTPSeeOther(f"{target}{sep}done={done}")


def _message(request: web.Request) -> str:
    return MESSAGES.get(request.query.get("done", ""), "")


def _csrf(request: web.Request) -> str:
    return request[SESSION].csrf


# ---- sign-in, static ---------------------------------------------------------------------


async def sign_in_page(request: web.Request) -> web.Response:
    return _html(pages.sign_in(back=request.query.get("next", "")))


async def sign_in_post(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    key = str(form.get("key", ""))
    if not auth.key_is_admin(request, key):
        text = ("wrong key: use the gateway's admin key (PODQ_API_KEY)"
                if request.app[state.KEYS].has_admin else
                "this gateway has no admin key: start it with PODQ_API_KEY set to use the console")
        return _html(pages.sign_in(text), status=401)
    response = web.HTTPSeeOther(safe_back(str(form.get("next", "")), f"{BASE}/"))
    await auth.sign_in(request, response)
    raise response


async def sign_out(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther(f"{BASE}/sign-in")
    await auth.sign_out(request, request[SESSION], response)
    raise response


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    text = (resources.files("serverless.console") / name).read_text()
    return web.Response(text=text, content_type=STATIC[name])


# ---- pages ---------------------------------------------------------------------------------


async def endpoints_page(request: web.Request) -> web.Response:
    store = request.app[state.STORE]
    snapshot = await read_cluster(store.redis, now_ms(), store.stale_after_ms)
    configs = {c.id: c for c in await request.app[state.REGISTRY].endpoints()}
    rates = {f.endpoint: history.rate_per_s(await history.read(store.redis, f.endpoint, now_ms() - 180_000))
             for f in snapshot}
    cells = numbers.live(snapshot, {}, 0)
    cells.update({f"{ep}.rate": numbers.rate_text(r) for ep, r in rates.items()})
    return _html(pages.endpoints(snapshot, configs, cells, _csrf(request), _message(request)))


async def endpoint_page(request: web.Request) -> web.Response:
    store = request.app[state.STORE]
    ep = request.match_info["endpoint_id"]
    now = now_ms()
    snapshot = {f.endpoint: f for f in await read_cluster(store.redis, now, store.stale_after_ms)}
    config = await request.app[state.REGISTRY].get_endpoint(ep)
    if ep not in snapshot:
        return _html(pages.not_found(f"no endpoint {ep!r}", _csrf(request)), status=404)
    points = await history.read(store.redis, ep, now - history.POINTS * history.MINUTE_MS)
    cells = numbers.live([snapshot[ep]], {}, 0)
    cells[f"{ep}.rate"] = numbers.rate_text(history.rate_per_s(points))
    logs = await worker_logs.read(store.redis, ep, worker_logs.LogQuery(tail=LOG_TAIL))
    return _html(pages.endpoint(ep, config, snapshot[ep], cells, await store.workers(ep), points,
                                logs.lines, logs.next, _csrf(request), now, _message(request)))


async def jobs_page(request: web.Request) -> web.StreamResponse:
    store = request.app[state.STORE]
    if job_id := request.query.get("id", "").strip():
        raise web.HTTPSeeOther(f"{BASE}/jobs/{pages.u(job_id)}")
    chosen = request.query.get("endpoint", "")
    raw_status = request.query.get("status", "")
    status = Status(raw_status) if raw_status in Status.__members__ else None
    ids = sorted(set(await store.endpoints()) | {c.id for c in await request.app[state.REGISTRY].endpoints()})
    found = await jobs.recent(store, chosen, status) if chosen in ids else []
    return _html(pages.jobs(ids, chosen if chosen in ids else "", status.value if status else "",
                            found, _csrf(request), _message(request)))


async def job_page(request: web.Request) -> web.Response:
    store = request.app[state.STORE]
    job_id = request.match_info["job_id"]
    record = await store.get(job_id)
    if record is None:
        text = f"job {job_id!r} not found (unknown, or its result expired)"
        return _html(pages.not_found(text, _csrf(request)), status=404)
    chunks = await store.read_chunks(job_id, "0-0", count=1000)
    logs = await worker_logs.read(store.redis, record.endpoint, worker_logs.LogQuery(job=job_id, tail=LOG_TAIL))
    return _html(pages.job(record, chunks, logs.lines, logs.next, _csrf(request), now_ms(),
                           _message(request)))


async def templates_page(request: web.Request) -> web.Response:
    return _html(pages.templates(await request.app[state.REGISTRY].templates(), _csrf(request),
                                 _message(request)))


async def keys_page(request: web.Request) -> web.Response:
    found = await api_auth.list_keys(request.app[state.STORE].redis)
    return _html(pages.keys(found, _csrf(request), message=_message(request)))


# ---- actions (POST, then 303 back) --------------------------------------------------------

Action = Callable[[web.Request], Awaitable[str]]


def action(run: Action, default: Callable[[web.Request], str]) -> Handler:
    """A POST handler: run the action, then 303 to the form's `next` (a console path) or
    `default`, with `?done=<code>` so the page says what happened. A refused action (unknown
    id, a job that cannot be retried) is answered with its message (the API's own text)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        request[BACK] = str((await request.post()).get("next", ""))
        try:
            done = await run(request)
        except PodqError as e:
            return web.Response(status=e.status_code, text=str(e))
        raise _back(request, default(request), done)

    return handle


async def _endpoint_action(request: web.Request) -> str:
    ep, verb = request.match_info["endpoint_id"], request.match_info["verb"]
    registry, store = request.app[state.REGISTRY], request.app[state.STORE]
    if verb == "purge":
        await store.purge(ep)
    elif verb == "retry-failed":
        await jobs.retry_failed(store, ep)
    elif verb == "scale-to-zero":
        await registry.request_scale_to_zero(ep)
    else:
        current = await registry.require_endpoint(ep)
        await registry.put_endpoint(admin_routes.patched_endpoint(current, {"paused": verb == "pause"}, now_ms()))
        if verb == "resume":
            await registry.clear_scale_to_zero(ep)
    return verb


async def _job_action(request: web.Request) -> str:
    job_id, verb = request.match_info["job_id"], request.match_info["verb"]
    store = request.app[state.STORE]
    if verb == "cancel":
        if await store.cancel(job_id) is None:
            raise NotFound(f"job {job_id!r} not found (unknown, or its result expired)")
    else:
        await store.retry(job_id)
    return verb


async def _revoke(request: web.Request) -> str:
    digest = request.match_info["digest"]
    if not await api_auth.revoke_key(request.app[state.STORE].redis, digest):
        raise NotFound(f"no stored key with digest {digest!r}")
    return "revoke"


async def _create_template(request: web.Request) -> str:
    """A template from the form's name, image and handler (the registry checks them, as
    POST /v1/templates does); other fields take their defaults (change them with the API)."""
    form = await request.post()
    fields = {name: str(form.get(name, "")).strip() for name in ("name", "image_name", "handler")}
    template = Template(id=new_id("tpl"), created_at=now_ms(), name=fields["name"],
                        image_name=fields["image_name"], handler=fields["handler"] or None)
    await request.app[state.REGISTRY].put_template(template)
    return "template"


async def _delete_template(request: web.Request) -> str:
    await request.app[state.REGISTRY].delete_template(request.match_info["template_id"])
    return "delete-template"


async def create_key(request: web.Request) -> web.Response:
    """POST /console/keys: answered with the page itself (not a redirect), the only time the
    new key is shown; Cache-Control: no-store keeps it out of the browser's cache."""
    form = await request.post()
    scope = [x.strip() for x in str(form.get("endpoints", "")).split(",") if x.strip()]
    bad = [x for x in scope if not keys.valid_id(x)]
    if bad:
        return web.Response(status=400, text=f"endpoint id(s) {', '.join(map(repr, bad))} are "
                                             "invalid: use letters, digits, '_.:-'")
    key = f"podq_{secrets.token_urlsafe(32)}"  # as POST /v1/keys makes one (key_routes.py)
    redis = request.app[state.STORE].redis
    await api_auth.add_key(redis, key, str(form.get("label", "")), scope, worker=form.get("worker") == "1")
    return _html(pages.keys(await api_auth.list_keys(redis), _csrf(request), new_key=key))


def _route(name: str, method: str, path: str, handler: Handler) -> tuple[str, str, str, Handler]:
    return (PREFIX + name, method, BASE + path, handler)


_VERBS = "{verb:pause|resume|scale-to-zero|purge|retry-failed}"
ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    _route("signin", "GET", "/sign-in", sign_in_page),
    _route("signin-post", "POST", "/sign-in", sign_in_post),
    _route("sign-out", "POST", "/sign-out", sign_out),
    _route("static", "GET", "/static/{name}", static),
    _route("endpoints", "GET", "/", endpoints_page),
    _route("endpoint", "GET", "/endpoints/{endpoint_id}", endpoint_page),
    _route("endpoint-action", "POST", f"/endpoints/{{endpoint_id}}/{_VERBS}",
           action(_endpoint_action, lambda r: f"{BASE}/endpoints/{pages.u(r.match_info['endpoint_id'])}")),
    _route("jobs", "GET", "/jobs", jobs_page),
    _route("job", "GET", "/jobs/{job_id}", job_page),
    _route("job-action", "POST", "/jobs/{job_id}/{verb:cancel|retry}",
           action(_job_action, lambda r: f"{BASE}/jobs/{pages.u(r.match_info['job_id'])}")),
    _route("templates", "GET", "/templates", templates_page),
    _route("create-template", "POST", "/templates", action(_create_template, lambda r: f"{BASE}/templates")),
    _route("delete-template", "POST", "/templates/{template_id}/delete",
           action(_delete_template, lambda r: f"{BASE}/templates")),
    _route("keys", "GET", "/keys", keys_page),
    _route("create-key", "POST", "/keys", create_key),
    _route("revoke-key", "POST", "/keys/{digest}/revoke", action(_revoke, lambda r: f"{BASE}/keys")),
    _route("live-numbers", "GET", "/live/numbers", live.numbers_stream),
    _route("live-job", "GET", "/live/jobs/{job_id}", live.job_chunks),
    _route("live-logs", "GET", "/live/logs/{endpoint_id}", live.log_lines),
)


async def _to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(f"{BASE}/")


def install(app: web.Application) -> None:
    """Add the console's routes and its history sampler to the gateway `app` (its `gate`
    must be in the app's middlewares, before the API-key check)."""
    for name, method, path, handler in ROUTES:
        app.router.add_route(method, path, handler, name=name)
    app.router.add_route("GET", BASE, _to_console, name=PREFIX + "root")
    app.cleanup_ctx.append(history.sampler())
