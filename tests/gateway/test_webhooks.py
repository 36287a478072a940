"""Webhooks: delivered to a real local receiver on a free port, retried, never affecting the job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from serverless.errors import BadRequest
from serverless.gateway.webhooks import WebhookPolicy, check_url, is_private
from serverless.model import Status
from serverless.store import JobStore
from tests.gateway.conftest import Gateway, GatewayFactory


class Receiver:
    """An HTTP server that answers the scripted statuses in turn (then 200) and keeps bodies."""

    def __init__(self, statuses: list[int], delay_s: float = 0.0) -> None:
        self.statuses, self.delay_s = list(statuses), delay_s
        self.bodies: list[dict] = []
        self.arrived = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        status = self.statuses.pop(0) if self.statuses else 200
        if self.delay_s and status == 200 and len(self.bodies) == 1:
            await asyncio.sleep(self.delay_s)
        self.arrived.set()
        return web.Response(status=status)

    async def wait_for(self, n: int, timeout: float = 5) -> None:
        async def enough() -> None:
            while len(self.bodies) < n:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout)


@pytest.fixture
async def receiver() -> AsyncIterator[Callable[..., Receiver]]:
    runners: list[web.AppRunner] = []

    async def start(statuses: tuple[int, ...] = (), delay_s: float = 0.0) -> Receiver:
        rec = Receiver(list(statuses), delay_s)
        app = web.Application()
        app.router.add_post("/hook", rec.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        rec.url = f"http://{host}:{port}/hook"
        return rec

    yield start
    for runner in runners:
        await runner.cleanup()


async def finish_with_webhook(
    gateway: Gateway, store: JobStore, endpoint: str, url: str, status: Status = Status.COMPLETED
) -> str:
    envelope = {"input": {"x": 1}, "webhook": url}
    job_id = (await gateway.call("POST", f"/v2/{endpoint}/run", json=envelope)).body["id"]
    taken = await store.take(endpoint, "w")
    error = "boom" if status is Status.FAILED else None
    output = b'{"y": 2}' if status is Status.COMPLETED else None
    await store.finish(job_id, taken.attempt, status, output=output, error=error)
    return job_id


@pytest.mark.usefixtures("registered")
async def test_webhook_gets_the_status_body_once(
    gateway: Gateway, store: JobStore, endpoint: str, receiver
) -> None:
    rec = await receiver()
    job_id = await finish_with_webhook(gateway, store, endpoint, rec.url)
    await rec.wait_for(1)
    [body] = rec.bodies
    assert body["id"] == job_id and body["status"] == "COMPLETED" and body["output"] == {"y": 2}
    assert body["workerId"] == "w" and "executionTime" in body
    await asyncio.sleep(0.2)
    assert len(rec.bodies) == 1


@pytest.mark.usefixtures("registered")
async def test_failed_and_cancelled_jobs_get_webhooks_too(
    gateway: Gateway, store: JobStore, endpoint: str, receiver
) -> None:
    rec = await receiver()
    await finish_with_webhook(gateway, store, endpoint, rec.url, Status.FAILED)
    envelope = {"input": 1, "webhook": rec.url}
    queued = (await gateway.call("POST", f"/v2/{endpoint}/run", json=envelope)).body["id"]
    await gateway.call("POST", f"/v2/{endpoint}/cancel/{queued}")
    await rec.wait_for(2)
    assert sorted((b["status"], b.get("error")) for b in rec.bodies) == [
        ("CANCELLED", None), ("FAILED", "boom"),
    ]


@pytest.mark.usefixtures("registered")
async def test_webhook_is_retried_twice_after_failures(
    gateway: Gateway, store: JobStore, endpoint: str, receiver
) -> None:
    rec = await receiver([500, 503])
    await finish_with_webhook(gateway, store, endpoint, rec.url)
    await rec.wait_for(3)
    assert len(rec.bodies) == 3 and rec.bodies[0] == rec.bodies[2]


@pytest.mark.usefixtures("registered")
async def test_slow_receiver_times_out_and_is_retried(
    make_gateway: GatewayFactory, store: JobStore, endpoint: str, receiver
) -> None:
    gateway = await make_gateway(webhooks=WebhookPolicy(timeout_s=0.2, retry_delay_s=0.01, allow_private=True))
    rec = await receiver(delay_s=1.0)  # the first try hangs past the timeout
    await finish_with_webhook(gateway, store, endpoint, rec.url)
    await rec.wait_for(2)


@pytest.mark.usefixtures("registered")
async def test_a_failing_webhook_never_changes_the_job(
    gateway: Gateway, store: JobStore, endpoint: str, receiver
) -> None:
    rec = await receiver([500, 500, 500, 500])
    job_id = await finish_with_webhook(gateway, store, endpoint, rec.url)
    await rec.wait_for(3)
    await asyncio.sleep(0.2)
    assert len(rec.bodies) == 3  # one try and two retries, no more
    status = await gateway.call("GET", f"/v2/{endpoint}/status/{job_id}")
    assert status.body["status"] == "COMPLETED" and status.body["output"] == {"y": 2}


@pytest.mark.usefixtures("registered")
async def test_unreachable_webhook_never_changes_the_job(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    job_id = await finish_with_webhook(gateway, store, endpoint, "http://127.0.0.1:9/nothing")
    await asyncio.sleep(0.3)
    status = await gateway.call("GET", f"/v2/{endpoint}/status/{job_id}")
    assert status.body["status"] == "COMPLETED"


@pytest.mark.usefixtures("registered")
async def test_two_gateway_replicas_deliver_once(
    make_gateway: GatewayFactory, store: JobStore, endpoint: str, receiver
) -> None:
    first, _second = await make_gateway(), await make_gateway()
    rec = await receiver()
    await finish_with_webhook(first, store, endpoint, rec.url)
    await rec.wait_for(1)
    await asyncio.sleep(0.3)
    assert len(rec.bodies) == 1


@pytest.mark.parametrize(
    "url,ok",
    [
        ("https://example.com/hook", True),
        ("http://10.0.0.5:8080/cb?x=1", True),
        ("ftp://example.com/hook", False),
        ("file:///etc/passwd", False),
        ("example.com/hook", False),
        ("https://", False),
        ("http://[::1", False),
        ("https://0*", False),  # the host holds a character no host name has (the fuzzer's find)
        ("https://user@example.com/", False),  # credentials in a webhook URL: not accepted
        ("https://[2606:4700::1111]:8443/x", True),
        ("http://[5ee]/x", False),  # brackets around what is not an IPv6 address (the fuzzer's find)
        ("http://[::ffff:127.0.0.1]/x", True),
    ],
)
def test_only_absolute_http_urls_are_accepted(url: str, ok: bool) -> None:
    if ok:
        check_url(url)
    else:
        with pytest.raises(BadRequest, match="webhook"):
            check_url(url)



@pytest.mark.parametrize("address,private", [
    ("127.0.0.1", True), ("10.1.2.3", True), ("192.168.0.1", True), ("169.254.169.254", True),
    ("::1", True), ("::ffff:127.0.0.1", True), ("0.0.0.0", True), ("8.8.8.8", False),
    ("2606:4700:4700::1111", False),
])
def test_private_addresses(address, private) -> None:
    assert is_private(address) is private


def test_literal_private_webhooks_refused_at_submit_unless_allowed() -> None:
    for url in ("http://127.0.0.1:9/hook", "http://localhost/hook", "https://[::1]/x", "http://169.254.169.254/"):
        with pytest.raises(BadRequest, match="private or loopback.*PODQ_WEBHOOK_ALLOW_PRIVATE"):
            check_url(url, allow_private=False)
        check_url(url, allow_private=True)
    check_url("https://hooks.example.com/x", allow_private=False)  # names are checked at delivery


async def test_delivery_refuses_a_name_that_resolves_to_a_private_address() -> None:
    import aiohttp

    from serverless.gateway.webhooks import deliver, refusal

    policy = WebhookPolicy(timeout_s=0.2, retries=2, retry_delay_s=0.01)
    assert "resolves to private address 127.0.0.1" in await refusal("http://localhost:9/x", policy)
    async with aiohttp.ClientSession() as session:
        assert await deliver(session, "http://localhost:9/x", b"{}", policy) is False
    allowed = WebhookPolicy(allow_private=True)
    assert await refusal("http://localhost:9/x", allowed) is None


async def hanging(rec: Receiver) -> None:
    """Wait until the receiver holds its first POST (it answers only after its delay)."""
    for _ in range(250):
        if rec.bodies:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no webhook arrived")


async def test_a_webhook_claimed_by_a_gateway_that_died_is_delivered_by_another(
    store: JobStore, endpoint: str, receiver
) -> None:
    """Gateway A takes a job's webhook and dies mid-POST (its receiver hangs); once A's alive
    mark has run out, gateway B moves what A claimed back and delivers it."""
    import msgspec

    from serverless import keys
    from serverless.gateway.webhooks import WebhookDispatcher
    from serverless.model import RunRequest

    rec = await receiver(delay_s=3)  # the first POST hangs: A dies in the middle of it
    policy = WebhookPolicy(allow_private=True)
    a, b = WebhookDispatcher(store, policy), WebhookDispatcher(store, policy)
    await a.start()
    job = await store.submit(endpoint, RunRequest(input=msgspec.Raw(b"{}"), webhook=rec.url))
    taken = await store.take(endpoint, "w")
    await store.finish(job.id, taken.attempt, Status.COMPLETED, output=b"1")
    await hanging(rec)
    for task in (a._listener, a._keeper, *a._tasks):  # killed: no close(), nothing handed back
        task.cancel()
    assert await store.redis.lrange(keys.WEBHOOKS_CLAIMED.format(a.id), 0, -1) == [job.id.encode()]
    await store.redis.hset(keys.WEBHOOK_DISPATCHERS, a.id, 0)  # its alive mark ran out
    await b.start()
    try:
        await rec.wait_for(2)
        assert [x["id"] for x in rec.bodies] == [job.id, job.id]
        await asyncio.sleep(0.1)
        assert await store.redis.exists(keys.WEBHOOKS_CLAIMED.format(a.id)) == 0
        assert await store.redis.hkeys(keys.WEBHOOK_DISPATCHERS) == [b.id.encode()]
        assert await store.redis.llen(keys.WEBHOOKS_CLAIMED.format(b.id)) == 0  # delivered, dropped
    finally:
        await b.close()
        await a._session.close()
        await a._blocking.aclose()


async def test_a_gateway_that_stops_hands_its_undelivered_webhooks_back(
    store: JobStore, endpoint: str, receiver
) -> None:
    import msgspec

    from serverless import keys
    from serverless.gateway.webhooks import WebhookDispatcher
    from serverless.model import RunRequest

    rec = await receiver(delay_s=3)
    a = WebhookDispatcher(store, WebhookPolicy(allow_private=True))
    await a.start()
    job = await store.submit(endpoint, RunRequest(input=msgspec.Raw(b"{}"), webhook=rec.url))
    taken = await store.take(endpoint, "w")
    await store.finish(job.id, taken.attempt, Status.COMPLETED, output=b"1")
    await hanging(rec)
    await a.close()  # the hanging delivery is cancelled: its id goes back to the shared list
    assert await store.redis.lrange(keys.WEBHOOKS, 0, -1) == [job.id.encode()]
    assert await store.redis.hlen(keys.WEBHOOK_DISPATCHERS) == 0


async def test_a_job_that_cannot_be_read_at_delivery_is_read_again_not_dropped(
    store: JobStore, endpoint: str, receiver, redis_server, settings
) -> None:
    """The dispatcher's Redis user may not read job hashes for a while (a real NOPERM from
    Redis, as any Redis error): the delivery waits, its id stays claimed, and the webhook
    arrives once the read works again."""
    import msgspec

    from serverless import keys
    from serverless.gateway.webhooks import WebhookDispatcher
    from serverless.model import RunRequest
    from serverless.queue import connect

    user, password = "hooks", "hooks-password"
    await store.redis.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*",
                                      "+@all", "-hgetall")
    hooks_settings = msgspec.structs.replace(settings, redis_url=redis_server.url_for(user, password))
    hooks_store = JobStore(await connect(hooks_settings.redis_url), hooks_settings)
    rec = await receiver()
    dispatcher = WebhookDispatcher(hooks_store, WebhookPolicy(allow_private=True))
    await dispatcher.start()
    try:
        job = await store.submit(endpoint, RunRequest(input=msgspec.Raw(b"{}"), webhook=rec.url))
        taken = await store.take(endpoint, "w")
        await store.finish(job.id, taken.attempt, Status.COMPLETED, output=b"1")
        claimed = keys.WEBHOOKS_CLAIMED.format(dispatcher.id)
        for _ in range(100):  # claimed, and its read refused (NOPERM) at least once
            if await store.redis.lrange(claimed, 0, -1) == [job.id.encode()]:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.6)
        assert rec.bodies == []
        assert await store.redis.lrange(claimed, 0, -1) == [job.id.encode()]  # not dropped
        await store.redis.execute_command("ACL", "SETUSER", user, "+hgetall")
        await rec.wait_for(1, timeout=10)
        assert [b["id"] for b in rec.bodies] == [job.id]
        for _ in range(100):
            if await store.redis.llen(claimed) == 0:
                break
            await asyncio.sleep(0.02)
        assert await store.redis.llen(claimed) == 0
    finally:
        await dispatcher.close()
        await hooks_store.close()
        await store.redis.execute_command("ACL", "DELUSER", user)
