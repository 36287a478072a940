"""The console over plain HTTP (no JavaScript): a real gateway on a real socket and a real
redis-server. Sign-in and its cookie, sessions on every route, CSRF on every action, escaping
of user data, and actions that change state through POST -> 303."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import msgspec
import pytest

from serverless import keys
from serverless.console import auth
from serverless.console.routes import ROUTES
from serverless.model import EndpointConfig, Status, Template
from serverless.registry import Registry
from serverless.store import JobStore, now_ms
from tests.console.conftest import CSRF, Console
from tests.gateway.conftest import ADMIN_KEY, Gateway, StartWorkers

HOSTILE = '<script>alert("x")</script>&"\''


async def _run(gateway: Gateway, endpoint: str, value: object) -> str:
    answer = await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": value})
    assert answer.status == 200, answer.body
    return str(answer.body["id"])


async def _until(predicate, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# ---- sign-in -------------------------------------------------------------------------------


async def test_sign_in_sets_a_signed_http_only_strict_cookie(console: Console) -> None:
    r = await console.sign_in()
    assert r.status == 303 and r.headers["Location"] == "/console/"
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(f"{auth.COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; request.secure turns it on behind https
    assert ADMIN_KEY not in cookie and auth.hash_key(ADMIN_KEY) not in cookie
    status, text = await console.get("/console/")
    assert status == 200 and "<h1>Endpoints</h1>" in text


async def test_a_wrong_key_cannot_sign_in(console: Console, store: JobStore) -> None:
    from serverless.gateway.auth import add_key

    client_key = "a-client-key"
    await add_key(store.redis, client_key)  # a valid API key, but not the admin key
    for key in ("wrong", client_key, ""):
        r = await console.sign_in(key)
        assert r.status == 401 and "Set-Cookie" not in r.headers
    status, text = await console.get("/console/", allow_redirects=False)
    assert status == 303


async def test_a_forged_or_signed_out_cookie_is_refused(console: Console) -> None:
    await console.sign_in()
    token = next(c.value for c in console.session.cookie_jar if c.key == auth.COOKIE)
    nonce, expires, sig = token.split(".")
    forged = f"{nonce}.{int(expires) + 3600}.{sig}"
    async with aiohttp.ClientSession(cookies={auth.COOKIE: forged}) as other:
        async with other.get(f"{console.url}/console/", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/console/sign-in"
    status, _, _ = await console.post("/console/sign-out", {"csrf": await console.csrf()})
    assert status == 303
    async with aiohttp.ClientSession(cookies={auth.COOKIE: token}) as replay:  # a copied cookie
        async with replay.get(f"{console.url}/console/", allow_redirects=False) as r:
            assert r.status == 303


def test_tokens_pure() -> None:
    secret = b"s" * 32
    token = auth.make_token(secret, "abc123", 2_000)
    session = auth.read_token(secret, token, 1_000)
    assert session is not None and session.csrf == auth.csrf_token(secret, "abc123")
    assert auth.read_token(secret, token, 2_000) is None  # expired
    assert auth.read_token(b"t" * 32, token, 1_000) is None  # another secret
    for bad in ("", "a.b", "abc123.x.y", "a-b.2000.00", token + "0"):
        assert auth.read_token(secret, bad, 1_000) is None, bad


async def test_every_console_route_needs_the_session(console: Console) -> None:
    """Without a session: pages redirect to sign-in, live streams and actions are 401."""
    open_ = {"/console/sign-in", "/console/static/{name}"}
    for name, method, path, _ in ROUTES:
        if path in open_:
            continue
        path = re.sub(r"\{verb:[^}]*\}", "pause" if "endpoints" in path else "cancel", path)
        url = console.url + path.format(endpoint_id="e", job_id="j", digest="d", name="x",
                                        template_id="t")
        async with console.session.request(method, url, allow_redirects=False) as r:
            if method == "GET" and "/live/" not in path:
                assert (r.status, r.headers.get("Location")) == (303, "/console/sign-in"), name
            else:
                assert r.status == 401, name


# ---- CSRF ----------------------------------------------------------------------------------


async def test_a_post_without_the_csrf_token_is_refused(
    signed_in: Console, registered: str, store: JobStore, make_gateway
) -> None:
    registry = Registry(store.redis)
    await registry.put_endpoint(msgspec.structs.replace(
        await registry.require_endpoint(registered), paused=False))
    path = f"/console/endpoints/{registered}/pause"
    for data in ({}, {"csrf": ""}, {"csrf": "0" * 40}):
        status, _, text = await signed_in.post(path, data)
        assert status == 403 and "CSRF" in text
    # another session's token does not do either
    other = Console(signed_in.url, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
    async with other.session:
        await other.sign_in()
        status, _, _ = await signed_in.post(path, {"csrf": await other.csrf()})
        assert status == 403
    assert not (await registry.require_endpoint(registered)).paused
    status, location, _ = await signed_in.post(path, {"csrf": await signed_in.csrf()})
    assert (status, location) == (303, f"/console/endpoints/{registered}?done=pause")
    assert (await registry.require_endpoint(registered)).paused


# ---- escaping ------------------------------------------------------------------------------


async def test_user_data_is_escaped(signed_in: Console, gateway: Gateway, store: JobStore) -> None:
    # the registry refuses such names; records written around it (by hand, by an older podq)
    # are escaped all the same
    for key, record in ((keys.REGISTRY_TEMPLATES, Template(id="t-x", name=HOSTILE, image_name=HOSTILE)),
                        (keys.REGISTRY_ENDPOINTS, EndpointConfig(id="ep-x", name=HOSTILE, template_id="t-x",
                                                                 paused=True))):
        await store.redis.hset(key, record.id, msgspec.json.encode(record))
    job_id = await _run(gateway, "ep-x", {"prompt": HOSTILE})
    taken = await store.take("ep-x", "w1")
    assert taken is not None
    await store.append_chunks(job_id, taken.attempt, [msgspec.json.encode({"tok": HOSTILE})])
    await store.finish(job_id, taken.attempt, Status.FAILED, error=HOSTILE)
    for path in ("/console/", "/console/endpoints/ep-x", "/console/templates",
                 f"/console/jobs/{job_id}", "/console/jobs?endpoint=ep-x"):
        status, text = await signed_in.get(path)
        assert status == 200, path
        assert "<script>alert" not in text, path
    _, text = await signed_in.get(f"/console/jobs/{job_id}")
    assert text.count("&lt;script&gt;alert(") >= 3  # input, chunk, error
    _, text = await signed_in.get("/console/")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&quot;&#x27;" in text


# ---- actions without JavaScript --------------------------------------------------------------


async def _act(console: Console, path: str, back: str = "", fields: dict[str, str] | None = None) -> str:
    data = {"csrf": await console.csrf(), **({"next": back} if back else {}), **(fields or {})}
    status, location, text = await console.post(path, data)
    assert status == 303, text
    return location


async def test_endpoint_actions(signed_in: Console, gateway: Gateway, registered: str, store: JobStore) -> None:
    registry = Registry(store.redis)
    location = await _act(signed_in, f"/console/endpoints/{registered}/resume", "/console/")
    assert location == "/console/?done=resume"
    assert not (await registry.require_endpoint(registered)).paused
    await _act(signed_in, f"/console/endpoints/{registered}/scale-to-zero")
    assert registered in await registry.scale_to_zero_requested()
    await _act(signed_in, f"/console/endpoints/{registered}/resume")
    assert registered not in await registry.scale_to_zero_requested()
    ids = [await _run(gateway, registered, i) for i in range(3)]
    await _act(signed_in, f"/console/endpoints/{registered}/purge")
    assert [(await store.get(i)).status for i in ids] == [Status.CANCELLED] * 3  # type: ignore[union-attr]
    # a redirect never leaves the console
    location = await _act(signed_in, f"/console/endpoints/{registered}/pause", "https://evil.example/")
    assert location == f"/console/endpoints/{registered}?done=pause"
    status, text = await signed_in.get(location)
    assert status == 200 and "Paused: no workers run" in text
    status, _, text = await signed_in.post("/console/endpoints/nope/pause", {"csrf": await signed_in.csrf()})
    assert status == 404 and "not found" in text


async def test_cancel_retry_and_retry_all_failed(
    signed_in: Console, gateway: Gateway, registered: str, store: JobStore
) -> None:
    queued = await _run(gateway, registered, {"n": 1})
    assert await _act(signed_in, f"/console/jobs/{queued}/cancel") == f"/console/jobs/{queued}?done=cancel"
    assert (await store.get(queued)).status is Status.CANCELLED  # type: ignore[union-attr]
    failed = [await _run(gateway, registered, {"n": i}) for i in range(3)]
    for job_id in failed:
        taken = await store.take(registered, "w1")
        assert taken is not None
        await store.finish(taken.id, taken.attempt, Status.FAILED, error="boom")
    await _act(signed_in, f"/console/jobs/{failed[0]}/retry")
    assert (await store.get(failed[0])).status is Status.IN_QUEUE  # type: ignore[union-attr]
    status, _, text = await signed_in.post(f"/console/jobs/{queued}/retry", {"csrf": await signed_in.csrf()})
    assert status == 409 and "CANCELLED" in text  # the store's own refusal
    await _act(signed_in, f"/console/endpoints/{registered}/retry-failed")
    assert {(await store.get(j)).status for j in failed} == {Status.IN_QUEUE}  # type: ignore[union-attr]


async def test_jobs_page_lists_filters_and_searches(
    signed_in: Console, gateway: Gateway, registered: str, store: JobStore
) -> None:
    ids = [await _run(gateway, registered, i) for i in range(3)]
    await store.cancel(ids[1])
    _, text = await signed_in.get(f"/console/jobs?endpoint={registered}")
    assert all(i in text for i in ids) and text.index(ids[2]) < text.index(ids[0])  # newest first
    _, text = await signed_in.get(f"/console/jobs?endpoint={registered}&status=CANCELLED")
    assert ids[1] in text and ids[0] not in text and ids[2] not in text
    async with signed_in.session.get(f"{signed_in.url}/console/jobs?id={ids[0]}", allow_redirects=False) as r:
        assert r.headers["Location"] == f"/console/jobs/{ids[0]}"
    status, _ = await signed_in.get("/console/jobs/no-such-job")
    assert status == 404


async def test_the_recent_index_is_capped(signed_in: Console, registered: str, store: JobStore) -> None:
    from serverless.keys import RECENT, RECENT_CAP
    from serverless.model import RunRequest

    request = RunRequest(input=msgspec.Raw(b"1"))
    await asyncio.gather(*(store.submit(registered, request) for _ in range(RECENT_CAP + 5)))
    assert await store.redis.zcard(RECENT.format(registered)) == RECENT_CAP


async def test_keys_create_once_list_digests_revoke(signed_in: Console, store: JobStore) -> None:
    from serverless.gateway.auth import list_keys

    status, _, text = await signed_in.post(
        "/console/keys", {"csrf": await signed_in.csrf(), "label": HOSTILE, "endpoints": "ep-a, ep-b"},
        follow=True)
    assert status == 200
    key = text.split('<code id="new-key">')[1].split("</code>")[0]
    [stored] = await list_keys(store.redis)
    assert stored.digest == auth.hash_key(key) and stored.endpoints == ["ep-a", "ep-b"]
    _, listing = await signed_in.get("/console/keys")
    assert key not in listing and stored.digest[:16] in listing and "<script>alert" not in listing
    await _act(signed_in, f"/console/keys/{stored.digest}/revoke")
    assert await list_keys(store.redis) == []


# ---- live streams ------------------------------------------------------------------------------


async def _events(console: Console, path: str, count: int) -> list[str]:
    out: list[str] = []
    async with console.session.get(console.url + path, timeout=aiohttp.ClientTimeout(total=10)) as r:
        assert r.status == 200 and r.content_type == "text/event-stream"
        async for line in r.content:
            if line.startswith((b"data:", b"event:")):
                out.append(line.decode().strip())
                if len(out) == count:
                    return out
    return out


async def test_live_numbers_follow_the_queue(signed_in: Console, gateway: Gateway, registered: str) -> None:
    await _run(gateway, registered, 1)
    await _run(gateway, registered, 2)
    [event] = await _events(signed_in, f"/console/live/numbers?endpoint={registered}", 1)
    cells = msgspec.json.decode(event.removeprefix("data: "))
    assert cells[f"{registered}.queued"] == "2" and cells[f"{registered}.in_progress"] == "0"


async def test_live_job_chunks_then_status(
    signed_in: Console, gateway: Gateway, registered: str, workers: StartWorkers
) -> None:
    job_id = await _run(gateway, registered, {"chunks": ["a", "b", "c"], "gap_s": 0.05})
    await workers(registered)
    events = await _events(signed_in, f"/console/live/jobs/{job_id}?after=0-0", 5)
    assert events[:3] == ['data: {"output":"a"}', 'data: {"output":"b"}', 'data: {"output":"c"}']
    assert events[3] == "event: status" and '"COMPLETED"' in events[4]
    status, text = await signed_in.get(f"/console/jobs/{job_id}")
    assert status == 200 and "COMPLETED" in text and text.count("<li data-cursor=") == 3
    status, _ = await signed_in.get("/console/live/jobs/nope")
    assert status == 404


async def test_pages_send_security_headers(signed_in: Console) -> None:
    async with signed_in.session.get(f"{signed_in.url}/console/") as r:
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Cache-Control"] == "no-store"
    html = (await signed_in.get("/console/"))[1]
    assert CSRF.search(html) and "<script>" not in html  # no inline script


@pytest.mark.parametrize("key", ["", "wrong"])
async def test_no_admin_key_gateway_says_how(make_gateway, key: str) -> None:
    gateway = await make_gateway(admin_key="")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gateway.url}/console/sign-in", data={"key": key}) as r:
            assert r.status == 401 and "PODQ_API_KEY" in await r.text()


async def _ship(store: JobStore, endpoint: str, lines: list[tuple[str, str]]) -> None:
    """Write log lines as a worker's shipper does (worker/log_shipper.py's Target)."""
    from worker.log_shipper import STDOUT, Target

    target = Target(store.redis, endpoint, "w7", 10_000)
    try:
        await target.send(target.pack([(now_ms(), STDOUT, job, "", text) for job, text in lines], 0))
    finally:
        await target.close()


async def test_logs_on_the_endpoint_and_job_pages_and_live(
    signed_in: Console, gateway: Gateway, registered: str, store: JobStore
) -> None:
    job_id = await _run(gateway, registered, 1)
    await _ship(store, registered, [("", f"booting {HOSTILE}"), (job_id, "step 1 of the job")])
    _, text = await signed_in.get(f"/console/endpoints/{registered}")
    assert "booting &lt;script&gt;" in text and "step 1 of the job" in text and "<script>alert" not in text
    _, text = await signed_in.get(f"/console/jobs/{job_id}")
    assert "step 1 of the job" in text and "booting" not in text  # only the job's own lines
    after = text.split(f"/console/live/logs/{registered}?job={job_id}&amp;after=")[1].split('"')[0]

    async def later() -> None:
        await asyncio.sleep(0.2)
        await _ship(store, registered, [("other-job", "not this job's"), (job_id, "step 2")])

    writer = asyncio.create_task(later())
    [event] = await _events(signed_in, f"/console/live/logs/{registered}?job={job_id}&after={after}", 1)
    await writer
    line = msgspec.json.decode(event.removeprefix("data: "))
    assert (line["job"], line["line"], line["worker"]) == (job_id, "step 2", "w7")


async def test_templates_create_and_delete(signed_in: Console, store: JobStore) -> None:
    registry = Registry(store.redis)
    location = await _act(signed_in, "/console/templates",
                          fields={"name": "sd xl", "image_name": "me/sd:1", "handler": "h.py"})
    assert location == "/console/templates?done=template"
    [template] = await registry.templates()
    assert (template.name, template.image_name, template.handler) == ("sd xl", "me/sd:1", "h.py")
    status, _, text = await signed_in.post("/console/templates", {"csrf": await signed_in.csrf(),
                                                                  "name": HOSTILE})
    assert status == 400 and "template name" in text  # the registry's own check
    await registry.put_endpoint(EndpointConfig(id="ep-t", name="t", template_id=template.id))
    status, _, text = await signed_in.post(f"/console/templates/{template.id}/delete",
                                           {"csrf": await signed_in.csrf()})
    assert status == 409 and "ep-t" in text
    await registry.delete_endpoint("ep-t")
    await _act(signed_in, f"/console/templates/{template.id}/delete")
    assert await registry.templates() == []



async def test_endpoint_page_shows_workers_with_gpus_uptime_and_jobs(
    signed_in: Console, gateway: Gateway, registered: str, store: JobStore
) -> None:
    from serverless.model import GpuInfo, WorkerBeat, WorkerState

    job_id = await _run(gateway, registered, 1)
    now = now_ms()
    gpu = GpuInfo(index=0, name="NVIDIA H100 <80GB>", uuid="GPU-1", memory_total_mb=81559,
                  memory_used_mb=20480, utilization_pct=37)
    await store.beat(WorkerBeat(id="w-gpu", endpoint=registered, state=WorkerState.RUNNING,
                                jobs=[job_id], gpus=[gpu], seen_at=now, started_at=now - 90_000))
    _, text = await signed_in.get(f"/console/endpoints/{registered}")
    row = text.split("<td>w-gpu</td>")[1].split("</tr>")[0]
    assert "NVIDIA H100 &lt;80GB&gt; · 20480/81559 MB · 37%" in row
    assert "<td>running</td>" in row and re.search(r"<td>9\d(\.\d)? s</td>", row)  # uptime
    assert f'href="/console/jobs/{job_id}"' in row
