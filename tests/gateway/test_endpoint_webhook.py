"""The per-endpoint post-inference webhook: every job of the endpoint that ends is POSTed to a
real receiver on a real port, whoever submitted it and however it ended, besides a request's
own webhook; the gateway's client sends no webhook at all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from serverless.client import AsyncioEndpoint
from serverless.errors import JobFailed
from serverless.gateway.webhooks import targets
from serverless.store import JobStore
from tests.gateway.conftest import ADMIN_KEY, Gateway
from tests.gateway.test_webhooks import Receiver, receiver  # noqa: F401  (fixture)


@pytest.mark.parametrize("request_hook,endpoint_hook,expected", [
    (None, None, []),
    ("http://a/x", None, ["http://a/x"]),
    (None, "http://e/x", ["http://e/x"]),
    ("http://a/x", "http://e/x", ["http://a/x", "http://e/x"]),  # both, the request's first
    ("http://e/x", "http://e/x", ["http://e/x"]),  # one POST per distinct URL
])
def test_a_job_goes_to_its_own_webhook_and_its_endpoints(
    request_hook: str | None, endpoint_hook: str | None, expected: list[str]
) -> None:
    assert targets(request_hook, endpoint_hook) == expected


async def hooked_endpoint(gateway: Gateway, endpoint: str, url: str | None) -> None:
    """`endpoint` in the registry (via the admin API), with `url` as its webhook."""
    template = await gateway.call("POST", "/v1/templates", json={"name": endpoint, "handler": "h.py"})
    made = await gateway.call("POST", "/v1/endpoints", json={
        "id": endpoint, "name": endpoint, "template_id": template.body["id"], "paused": True, "webhook": url})
    assert made.status == 200, made.body


def statuses(rec: Receiver) -> dict[str, str]:
    return {b["id"]: b["status"] for b in rec.bodies}


async def test_every_job_of_the_endpoint_reaches_its_webhook(
    gateway: Gateway, endpoint: str, workers: Any, receiver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook, own = await receiver(), await receiver()
    await hooked_endpoint(gateway, endpoint, hook.url)
    await workers(endpoint)
    monkeypatch.setenv("PODQ_ENDPOINT_BASE_URL", f"{gateway.url}/v2")
    async with AsyncioEndpoint(endpoint, api_key=ADMIN_KEY) as client:  # sends no webhook
        assert await client.run_sync({"n": 1}) == {"echo": {"n": 1}}
        job = await client.run({"n": 2})
        assert await job.output() == {"echo": {"n": 2}}
        with pytest.raises(JobFailed, match="boom"):
            await client.run_sync({"fail": "boom"})
        both = await client.run({"input": {"n": 3}, "webhook": own.url})
        await both.output()
    await hook.wait_for(4)
    assert sorted(statuses(hook).values()) == ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED"]
    assert job.job_id in statuses(hook) and both.job_id in statuses(hook)
    await own.wait_for(1)
    assert [b["id"] for b in own.bodies] == [both.job_id]  # the request's own webhook too
    [body] = [b for b in hook.bodies if b["id"] == job.job_id]
    assert body["output"] == {"echo": {"n": 2}} and body["workerId"] == "w0"  # /status's body
    await asyncio.sleep(0.2)
    assert len(hook.bodies) == 4  # once per job


async def test_cancelled_and_purged_jobs_reach_it_too(
    gateway: Gateway, endpoint: str, receiver: Any
) -> None:
    hook = await receiver()
    await hooked_endpoint(gateway, endpoint, hook.url)  # paused, no worker: jobs stay queued
    ids = [(await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": i})).body["id"] for i in range(3)]
    await gateway.call("POST", f"/v2/{endpoint}/cancel/{ids[0]}")
    purged = await gateway.call("POST", f"/v2/{endpoint}/purge-queue")
    assert purged.body["removed"] == 2
    await hook.wait_for(3)
    assert statuses(hook) == {job_id: "CANCELLED" for job_id in ids}


async def test_a_changed_or_removed_webhook_applies_to_jobs_that_end_later(
    gateway: Gateway, store: JobStore, endpoint: str, receiver: Any
) -> None:
    old, new = await receiver(), await receiver()
    await hooked_endpoint(gateway, endpoint, old.url)
    first = (await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1})).body["id"]
    moved = await gateway.call("PATCH", f"/v1/endpoints/{endpoint}", json={"webhook": new.url})
    assert moved.status == 200
    await gateway.call("POST", f"/v2/{endpoint}/cancel/{first}")  # submitted before the change
    await new.wait_for(1)
    assert [b["id"] for b in new.bodies] == [first] and old.bodies == []
    await gateway.call("PATCH", f"/v1/endpoints/{endpoint}", json={"webhook": None})
    second = (await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 2})).body["id"]
    await gateway.call("POST", f"/v2/{endpoint}/cancel/{second}")
    assert (await store.get(second)).status.value == "CANCELLED"
    await asyncio.sleep(0.3)
    assert len(new.bodies) == 1 and old.bodies == []
