"""Every /v2 route over real HTTP against the real job store."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from serverless.model import Status
from serverless.store import JobStore
from tests.gateway.conftest import Gateway


@pytest.mark.usefixtures("registered")
async def test_run_queues_a_job(gateway: Gateway, store: JobStore, endpoint: str) -> None:
    answer = await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": {"prompt": "hi"}})
    assert answer.status == 200
    assert answer.body["status"] == "IN_QUEUE" and answer.body["id"].endswith("-u1")
    assert set(answer.body) == {"id", "status"}
    taken = await store.take(endpoint, "w")
    assert taken.id == answer.body["id"] and msgspec.json.decode(taken.input) == {"prompt": "hi"}


@pytest.mark.usefixtures("registered")
async def test_run_passes_policy_to_the_worker(gateway: Gateway, store: JobStore, endpoint: str) -> None:
    envelope = {"input": 1, "policy": {"executionTimeout": 5000, "ttl": 60000, "lowPriority": True}}
    answer = await gateway.call("POST", f"/v2/{endpoint}/run", json=envelope)
    assert answer.status == 200, answer.body
    taken = await store.take(endpoint, "w")
    assert taken.id == answer.body["id"] and taken.execution_timeout_ms == 5000


@pytest.mark.usefixtures("registered")
async def test_s3_config_reaches_the_worker_and_is_never_echoed(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    envelope = {"input": 1, "s3Config": {"bucketName": "b", "accessSecret": "s"}}
    answer = await gateway.call("POST", f"/v2/{endpoint}/run", json=envelope)
    assert answer.status == 200, answer.body
    job_id = answer.body["id"]
    taken = await store.take(endpoint, "w")
    assert msgspec.json.decode(taken.s3_config) == {"bucketName": "b", "accessSecret": "s"}
    await store.finish(job_id, taken.attempt, Status.COMPLETED, output=b'"ok"')
    status = await gateway.call("GET", f"/v2/{endpoint}/status/{job_id}")
    assert "s3Config" not in status.body and "accessSecret" not in str(status.body)


async def test_runsync_answers_the_finished_status_body(
    gateway: Gateway, endpoint: str, workers
) -> None:
    await workers(endpoint)
    answer = await gateway.call("POST", f"/v2/{endpoint}/runsync", json={"input": {"n": 3}})
    body = answer.body
    assert answer.status == 200 and body["status"] == "COMPLETED"
    assert body["output"] == {"echo": {"n": 3}} and body["workerId"] == "w0"
    assert body["id"].startswith("sync-") and body["id"].endswith("-e1")
    assert isinstance(body["delayTime"], int) and isinstance(body["executionTime"], int)


async def test_runsync_failed_job_carries_its_error(gateway: Gateway, endpoint: str, workers) -> None:
    await workers(endpoint)
    answer = await gateway.call("POST", f"/v2/{endpoint}/runsync", json={"input": {"fail": "boom"}})
    assert answer.body["status"] == "FAILED" and answer.body["error"] == "boom"
    assert "output" not in answer.body


@pytest.mark.usefixtures("registered")
async def test_runsync_not_done_in_time_answers_id_and_status(gateway: Gateway, endpoint: str) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await gateway.call("POST", f"/v2/{endpoint}/runsync?wait=1000", json={"input": 1})
    assert 0.9 <= loop.time() - started < 3
    assert answer.status == 200 and answer.body == {"id": answer.body["id"], "status": "IN_QUEUE"}


@pytest.mark.usefixtures("registered")
async def test_runsync_wait_below_minimum_is_clamped_to_one_second(
    gateway: Gateway, endpoint: str
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await gateway.call("POST", f"/v2/{endpoint}/runsync?wait=1", json={"input": 1})
    assert loop.time() - started >= 0.9 and answer.body["status"] == "IN_QUEUE"


@pytest.mark.usefixtures("registered")
async def test_status_shows_queue_progress_and_result(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    job_id = (await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1})).body["id"]
    queued = await gateway.call("GET", f"/v2/{endpoint}/status/{job_id}")
    assert queued.body == {"id": job_id, "status": "IN_QUEUE"}
    taken = await store.take(endpoint, "w9")
    await store.progress(job_id, taken.attempt, b'"50%"')
    running = await gateway.call("POST", f"/v2/{endpoint}/status/{job_id}")
    assert running.body["status"] == "IN_PROGRESS" and running.body["output"] == "50%"
    await store.finish(job_id, taken.attempt, Status.COMPLETED, output=b'{"a": 1}')
    done = await gateway.call("GET", f"/v2/{endpoint}/status/{job_id}")
    assert done.body["output"] == {"a": 1} and done.body["workerId"] == "w9"


@pytest.mark.parametrize("path", ["status", "stream", "cancel", "retry"])
async def test_unknown_job_is_404_json(gateway: Gateway, endpoint: str, path: str) -> None:
    answer = await gateway.call("POST", f"/v2/{endpoint}/{path}/no-such-job")
    assert answer.status == 404
    assert answer.body == {
        "error": f"job 'no-such-job' not found on endpoint '{endpoint}' "
        "(unknown, of another endpoint, or its result expired)"
    }


@pytest.mark.usefixtures("registered")
async def test_job_of_another_endpoint_is_404(gateway: Gateway, endpoint: str) -> None:
    job_id = (await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1})).body["id"]
    for path in ("status", "stream", "cancel"):
        answer = await gateway.call("POST", f"/v2/other-ep/{path}/{job_id}")
        assert answer.status == 404, path
    assert (await gateway.call("GET", f"/v2/{endpoint}/status/{job_id}")).body["status"] == "IN_QUEUE"


async def test_invalid_endpoint_id_is_404_json(gateway: Gateway) -> None:
    answer = await gateway.call("POST", "/v2/bad%20id/run", json={"input": 1})
    assert answer.status == 404
    assert answer.body == {
        "error": "endpoint 'bad id' not found: ids are 1-128 letters, digits, '_', '.', ':' or '-'"
    }


@pytest.mark.usefixtures("registered")
async def test_cancel_queued_then_finished_job(gateway: Gateway, store: JobStore, endpoint: str) -> None:
    job_id = (await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1})).body["id"]
    answer = await gateway.call("POST", f"/v2/{endpoint}/cancel/{job_id}")
    assert answer.body == {"id": job_id, "status": "CANCELLED"}
    assert await store.take(endpoint, "w") is None
    again = await gateway.call("POST", f"/v2/{endpoint}/cancel/{job_id}")
    assert again.body == {"id": job_id, "status": "CANCELLED"}


@pytest.mark.usefixtures("registered")
async def test_retry_of_failed_job_and_409_otherwise(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    job_id = (await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": {"v": 7}})).body["id"]
    refused = await gateway.call("POST", f"/v2/{endpoint}/retry/{job_id}")
    assert refused.status == 409
    assert refused.body == {
        "error": f"job '{job_id}' is IN_QUEUE; only FAILED or TIMED_OUT jobs can be retried"
    }
    taken = await store.take(endpoint, "w")
    await store.finish(job_id, taken.attempt, Status.FAILED, error="boom")
    answer = await gateway.call("POST", f"/v2/{endpoint}/retry/{job_id}")
    assert answer.status == 200 and answer.body == {"id": job_id, "status": "IN_QUEUE"}
    again = await store.take(endpoint, "w")
    assert again.id == job_id and msgspec.json.decode(again.input) == {"v": 7}


@pytest.mark.usefixtures("registered")
async def test_purge_queue_and_health(gateway: Gateway, store: JobStore, endpoint: str) -> None:
    for _ in range(4):
        await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1})
    await store.take(endpoint, "w")
    health = await gateway.call("GET", f"/v2/{endpoint}/health")
    assert health.body["jobs"] == {
        "completed": 0, "failed": 0, "inProgress": 1, "inQueue": 3, "retried": 0,
    }
    assert set(health.body["workers"]) >= {"idle", "running"}
    purged = await gateway.call("POST", f"/v2/{endpoint}/purge-queue")
    assert purged.body == {"removed": 3, "status": "completed"}
    after = await gateway.call("GET", f"/v2/{endpoint}/health")
    assert (after.body["jobs"]["inQueue"], after.body["jobs"]["inProgress"]) == (0, 1)


async def test_healthz_needs_no_key(gateway: Gateway) -> None:
    answer = await gateway.call("GET", "/healthz", auth=False)
    assert answer.status == 200 and answer.body == {"status": "ok"}


async def test_openapi_documents_every_route(gateway: Gateway) -> None:
    answer = await gateway.call("GET", "/openapi.json", auth=False)
    spec = answer.body
    assert answer.status == 200 and spec["openapi"].startswith("3.")
    assert {
        "/v2/{endpoint_id}/run", "/v2/{endpoint_id}/runsync", "/v2/{endpoint_id}/status/{job_id}",
        "/v2/{endpoint_id}/stream/{job_id}", "/v2/{endpoint_id}/cancel/{job_id}",
        "/v2/{endpoint_id}/retry/{job_id}", "/v2/{endpoint_id}/purge-queue",
        "/v2/{endpoint_id}/health", "/healthz", "/openapi.json",
        # RunPod's worker-side protocol (serverless/gateway/worker_routes.py)
        "/v2/{endpoint_id}/job-take/{worker_id}", "/v2/{endpoint_id}/job-take-batch/{worker_id}",
        "/v2/{endpoint_id}/job-done/{worker_id}/{job_id}", "/v2/{endpoint_id}/job-stream/{worker_id}/{job_id}",
        "/v2/{endpoint_id}/ping/{worker_id}", "/v2/{endpoint_id}/job-stop/{worker_id}",
        # OpenAI's API as RunPod serves it (serverless/gateway/openai_routes.py)
        "/v2/{endpoint_id}/openai/v1/chat/completions", "/v2/{endpoint_id}/openai/v1/completions",
        "/v2/{endpoint_id}/openai/v1/models",
        # RunPod's admin API as GraphQL (serverless/gateway/graphql_routes.py)
        "/graphql",
        # Hugging Face-style inference (serverless/gateway/hf_routes.py)
        "/v2/{endpoint_id}/hf", "/v2/{endpoint_id}/hf/v1/chat/completions",
    } == {p for p in spec["paths"] if not p.startswith("/v1/")}  # /v1: tests/admin
    run = spec["paths"]["/v2/{endpoint_id}/run"]["post"]
    assert run["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RunRequest"
    }
    assert {"200", "400", "401", "404", "413", "429"} <= set(run["responses"])
    assert "input" in spec["components"]["schemas"]["RunRequest"]["required"]
    assert set(spec["paths"]["/v2/{endpoint_id}/status/{job_id}"]) == {"get", "post"}
    chat = spec["paths"]["/v2/{endpoint_id}/openai/v1/chat/completions"]["post"]["responses"]
    assert chat["400"]["content"]["application/json"]["schema"] == {  # the handler's: OpenAI's shape
        "$ref": "#/components/schemas/OpenAIErrorReply"}
    assert chat["401"]["content"]["application/json"]["schema"] == {  # the auth middleware's
        "$ref": "#/components/schemas/ErrorReply"}


async def test_unknown_route_and_wrong_method_are_json(gateway: Gateway, endpoint: str) -> None:
    missing = await gateway.call("GET", "/v2/nope")
    assert missing.status == 404
    assert missing.body == {"error": "no route for GET /v2/nope; see GET /openapi.json for the routes"}
    wrong = await gateway.call("DELETE", f"/v2/{endpoint}/run")
    assert wrong.status == 405 and wrong.headers["Allow"] == "POST"
    assert wrong.body == {"error": f"DELETE is not allowed on /v2/{endpoint}/run; use POST"}


@pytest.mark.usefixtures("registered")
async def test_reaper_requeues_a_crashed_workers_job(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    job_id = (await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1})).body["id"]
    crashed = JobStore(store.redis, store.settings.with_overrides(lease_ms=100))
    assert (await crashed.take(endpoint, "crashed")).id == job_id  # and never renews its lease
    for _ in range(100):
        body = (await gateway.call("GET", f"/v2/{endpoint}/status/{job_id}")).body
        if body["status"] == "IN_QUEUE":
            break
        await asyncio.sleep(0.05)
    assert body["status"] == "IN_QUEUE"
    health = await gateway.call("GET", f"/v2/{endpoint}/health")
    assert health.body["jobs"]["retried"] == 1
