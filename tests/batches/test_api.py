"""Batches through a real gateway with in-test workers: results in input order, per-input
failures, retry of the failed ones, cancel, bad requests."""

from __future__ import annotations

import asyncio
import random

import msgspec

from serverless.model import Status
from serverless.store import JobStore
from tests.batches.conftest import jsonl, result_lines, upload, wait_state
from tests.gateway.test_webhooks import receiver  # noqa: F401  (fixture)


async def shuffled(store: JobStore, job) -> tuple[Status, bytes | None, str | None]:  # type: ignore[no-untyped-def]
    """Finish out of order: each job sleeps a random while (several workers run at once)."""
    value = msgspec.json.decode(job.input)
    await asyncio.sleep(random.random() * 0.02)
    if isinstance(value, dict) and "fail" in value:
        return Status.FAILED, None, value["fail"]
    return Status.COMPLETED, msgspec.json.encode({"echo": value}), None


async def test_results_are_in_input_order_when_jobs_finish_out_of_order(gateway, known, workers) -> None:
    await workers(known, n=8, handler=shuffled)
    batch = await upload(gateway, known, jsonl(list(range(300))), max_in_flight=16)
    assert batch["total"] == 300 and batch["state"] == "RUNNING"
    done = await wait_state(gateway, batch["id"])
    assert done["counts"]["completed"] == 300 and done["written"] == 300
    lines = await result_lines(gateway, batch["id"])
    assert [x["index"] for x in lines] == list(range(300))
    assert all(x["status"] == "COMPLETED" and x["output"] == {"echo": x["index"]} for x in lines)
    assert lines[5]["id"] == f"{batch['id']}-5"
    nothing = await gateway.call("POST", f"/v1/batches/{batch['id']}/retry")
    assert nothing.status == 409 and nothing.body["error"].endswith("has no FAILED or TIMED_OUT input to retry")


async def test_a_bad_line_and_a_failing_input_fail_alone_and_retry_runs_only_those(gateway, known, workers) -> None:
    await workers(known, n=2)
    body = jsonl([1, {"fail": "boom"}, 3]) + b"{not json\n\n" + jsonl([5])
    batch = await upload(gateway, known, body)
    assert batch["total"] == 5  # the blank line is not an input
    done = await wait_state(gateway, batch["id"])
    assert (done["counts"]["completed"], done["counts"]["failed"]) == (3, 2)
    lines = await result_lines(gateway, batch["id"])
    assert [x["status"] for x in lines] == ["COMPLETED", "FAILED", "COMPLETED", "FAILED", "COMPLETED"]
    assert lines[1]["error"] == "boom"
    assert lines[3]["id"] is None and lines[3]["error"].startswith("line 4 is not valid JSON")
    failed = await result_lines(gateway, batch["id"], "?status=FAILED")
    assert [x["index"] for x in failed] == [1, 3]

    again = await gateway.call("POST", f"/v1/batches/{batch['id']}/retry")
    assert again.status == 200 and again.body["round"] == 1
    done = await wait_state(gateway, batch["id"])
    lines = await result_lines(gateway, batch["id"])
    assert [x["status"] for x in lines] == ["COMPLETED", "FAILED", "COMPLETED", "FAILED", "COMPLETED"]
    assert lines[1]["id"] == f"{batch['id']}-1-r1"  # ran again
    assert lines[0]["id"] == f"{batch['id']}-0"  # carried over
    assert done["counts"]["completed"] == 3 and done["counts"]["failed"] == 2


async def test_cancel_stops_feeding_and_cancels_what_is_queued(gateway, known) -> None:
    batch = await upload(gateway, known, jsonl(list(range(50))), max_in_flight=5)  # no worker
    cancel = await gateway.call("POST", f"/v1/batches/{batch['id']}/cancel")
    assert cancel.status == 200 and cancel.body["state"] in ("CANCELLING", "CANCELLED")
    done = await wait_state(gateway, batch["id"], ("CANCELLED",))
    lines = await result_lines(gateway, batch["id"])
    assert all(x["status"] == "CANCELLED" for x in lines) and len(lines) == done["written"] <= 5
    assert done["counts"]["cancelled"] == len(lines)
    retry = await gateway.call("POST", f"/v1/batches/{batch['id']}/retry")
    assert retry.status == 409 and "CANCELLED" in retry.body["error"]
    deleted = await gateway.call("DELETE", f"/v1/batches/{batch['id']}")
    assert deleted.status == 200
    gone = await gateway.call("GET", f"/v1/batches/{batch['id']}")
    assert gone.status == 404 and batch["id"] in gone.body["error"]


async def test_bad_requests_get_json_errors(gateway, known) -> None:
    cases = [
        ("POST", "/v1/batches?endpoint_id=ep-nowhere", b"1\n", 404, "ep-nowhere"),
        ("POST", f"/v1/batches?endpoint_id={known}", b"\n\n", 400, "the batch file has no inputs"),
        ("POST", f"/v1/batches?endpoint_id={known}&format=xml", b"1\n", 400, "format 'xml' is not supported"),
        ("POST", f"/v1/batches?endpoint_id={known}&format=csv", b"a,a\n1,2\n", 400, "distinct, non-empty"),
        ("POST", f"/v1/batches?endpoint_id={known}&max_in_flight=0", b"1\n", 400, "max_in_flight='0'"),
        ("POST", "/v1/batches", b'{"endpoint_id": "x"', 400, "invalid request body"),
        ("GET", "/v1/batches/batch-nope", None, 404, "batch 'batch-nope' not found"),
    ]
    for method, path, body, status, text in cases:
        answer = await gateway.call(method, path, data=body)
        assert answer.status == status and text in answer.body["error"], (path, answer.body)
    url = {"endpoint_id": known, "url": "ftp://example.com/x.jsonl"}
    answer = await gateway.call("POST", "/v1/batches", json=url)
    assert answer.status == 400 and "ftp://example.com/x.jsonl" in answer.body["error"]


async def test_a_batch_from_a_url_the_gateway_fetches(gateway, known, workers) -> None:
    from aiohttp import web

    async def csv_file(_: web.Request) -> web.Response:
        return web.Response(body=b"q\nx\ny\n")

    async def gone(_: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/in.csv", csv_file)
    app.router.add_get("/gone", gone)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        await workers(known)
        made = await gateway.call("POST", "/v1/batches", json={"endpoint_id": known, "url": f"http://{host}:{port}/in.csv"})
        assert made.status == 200 and made.body["format"] == "csv" and made.body["total"] == 2
        await wait_state(gateway, made.body["id"])
        assert [x["output"] for x in await result_lines(gateway, made.body["id"])] == [
            {"echo": {"q": "x"}}, {"echo": {"q": "y"}}]
        gone = await gateway.call("POST", "/v1/batches", json={"endpoint_id": known, "url": f"http://{host}:{port}/gone"})
        assert gone.status == 400 and "answered HTTP 404" in gone.body["error"]
    finally:
        await runner.cleanup()


async def test_a_key_reaches_only_the_batches_of_its_endpoints(gateway, known) -> None:
    batch = await upload(gateway, known, jsonl([1, 2]))
    own = (await gateway.call("POST", "/v1/keys", json={"endpoints": [known]})).body["key"]
    other = (await gateway.call("POST", "/v1/keys", json={"endpoints": ["elsewhere"]})).body["key"]
    unscoped = (await gateway.call("POST", "/v1/keys", json={})).body["key"]
    for key, reaches in ((own, True), (unscoped, True), (other, False)):
        auth = {"Authorization": f"Bearer {key}"}
        listed = await gateway.call("GET", "/v1/batches", headers=auth, auth=False)
        assert listed.status == 200
        assert (batch["id"] in [b["id"] for b in listed.body["batches"]]) is reaches
        read = await gateway.call("GET", f"/v1/batches/{batch['id']}", headers=auth, auth=False)
        assert read.status == (200 if reaches else 403)
        made = await gateway.call("POST", f"/v1/batches?endpoint_id={known}", data=jsonl([3]),
                                  headers={**auth, "Content-Type": "application/x-ndjson"}, auth=False)
        assert made.status == (200 if reaches else 403)
    assert read.body["error"] == (f"this key may not reach endpoint '{known}'; use a key scoped to it, "
                                  "or the admin key")


async def test_every_batch_job_reaches_its_endpoints_webhook(gateway, store, endpoint, workers,
                                                             receiver) -> None:
    """The runner collects a finished job at once; its record must outlive that long enough for
    the webhook dispatcher to read it (before, most deliveries found no record and were dropped)."""
    from serverless import keys
    from serverless.batches.runner import WEBHOOK_READ_MS
    from tests.gateway.test_endpoint_webhook import hooked_endpoint

    hook = await receiver()
    await hooked_endpoint(gateway, endpoint, hook.url)
    await workers(endpoint, n=2)
    batch = await upload(gateway, endpoint, jsonl(list(range(20))))
    await wait_state(gateway, batch["id"])
    # collected, yet kept a while for a dispatcher that lags (a burst, a busy gateway)
    ttl = await store.redis.pttl(keys.job(f"{batch['id']}-0"))
    assert 0 < ttl <= WEBHOOK_READ_MS
    await hook.wait_for(20)
    assert sorted(b["id"] for b in hook.bodies) == sorted(f"{batch['id']}-{i}" for i in range(20))
