"""Unmodified `runpod` workers (1.12, 1.7.13; 1.6.2 in the slow set) take jobs from podq.

Each test starts real SDK worker processes against a real gateway and checks what a client of
the /v2 API sees, plus the store's state where the protocol promises something about it.
shared/reference/runpod-worker-protocol.md section 16 is the plan this follows.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import msgspec
import pytest

from serverless import keys
from serverless.gateway.server import RunningGateway
from serverless.model import WorkerProtocol, WorkerState
from tests.runpod_workers.conftest import (
    KEY,
    VERSIONS,
    finished,
    ready,
    register,
    sdk_tuple,
    status,
    submit,
    until,
)

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("version", VERSIONS)
async def test_boot_pings_first_then_takes_and_shows_in_health(
    version, rp_gateway: RunningGateway, client: httpx.AsyncClient, start_worker, endpoint
) -> None:
    worker = start_worker(version, endpoint)
    await ready(rp_gateway.store, endpoint, worker)
    beat = await rp_gateway.store.worker(endpoint, worker.worker_id)
    assert beat.protocol is WorkerProtocol.RUNPOD
    assert beat.runpod_version == version
    assert beat.state is WorkerState.IDLE and beat.interval_ms == 1000
    health = (await client.get(f"/v2/{endpoint}/health")).json()
    assert health["workers"]["idle"] == 1
    answer = await client.post(f"/v2/{endpoint}/runsync", json={"input": {"x": "é✓"}})
    assert answer.json()["status"] == "COMPLETED", worker.log()
    assert answer.json()["output"] == {"echo": {"x": "é✓"}}  # unicode round trip
    assert answer.json()["workerId"] == worker.worker_id


# (input, status, output, error) for a sync handler: RunPod's rp_job.run_job shapes
SHAPES = [
    ({"output": {"a": 1}}, "COMPLETED", {"a": 1}, None),
    ({"output": None}, "COMPLETED", None, None),
    ({"output": {}}, "COMPLETED", "absent", None),
    ({"output": "text"}, "COMPLETED", "text", None),
    ({"output": [1, 2]}, "COMPLETED", [1, 2], None),
    ({"output": 3.5}, "COMPLETED", 3.5, None),
    ({"error": "bad seed"}, "FAILED", "absent", "bad seed"),
    ({"error": "bad seed", "extra": {"detail": 1}}, "FAILED", {"detail": 1}, "bad seed"),
]


@pytest.mark.parametrize("version", VERSIONS)
async def test_every_return_shape_reaches_runpods_final_status(
    version, rp_gateway, client, start_worker, endpoint
) -> None:
    worker = start_worker(version, endpoint, concurrency="4")
    await ready(rp_gateway.store, endpoint, worker)
    ids = [await submit(client, endpoint, case[0]) for case in SHAPES]
    raised = await submit(client, endpoint, {"raise": "boom"})
    for job_id, (_, want_status, want_output, want_error) in zip(ids, SHAPES):
        body = await finished(client, endpoint, job_id, worker=worker)
        assert body["status"] == want_status, (body, worker.log()[-2000:])
        if want_output == "absent":
            assert "output" not in body, body
        else:
            assert body["output"] == want_output, body
        assert body.get("error") == want_error, body
    body = await finished(client, endpoint, raised, worker=worker)
    assert body["status"] == "FAILED"
    error = json.loads(body["error"])  # RunPod's exception report: a JSON document in a string
    assert error["error_message"] == "boom" and "ValueError" in error["error_type"]
    assert error["worker_id"] == worker.worker_id


@pytest.mark.parametrize("aggregate", [True, False])
@pytest.mark.parametrize("version", VERSIONS)
async def test_generator_chunks_stream_in_order_and_aggregate(
    version, aggregate, rp_gateway, client, start_worker, endpoint
) -> None:
    worker = start_worker(version, endpoint, kind="agen", aggregate="1" if aggregate else "0")
    await ready(rp_gateway.store, endpoint, worker)
    chunks = [{"i": i} for i in range(20)] + ["text", 7]
    job_id = await submit(client, endpoint, {"chunks": chunks})
    body = await finished(client, endpoint, job_id, worker=worker)
    assert body["status"] == "COMPLETED", worker.log()
    assert body["output"] == (chunks if aggregate else [])
    streamed = (await client.get(f"/v2/{endpoint}/stream/{job_id}")).json()
    assert [item["output"] for item in streamed["stream"]] == chunks


@pytest.mark.parametrize("version", VERSIONS)
async def test_generator_errors_per_version(version, rp_gateway, client, start_worker, endpoint) -> None:
    worker = start_worker(version, endpoint, kind="gen")
    await ready(rp_gateway.store, endpoint, worker)
    raised = await submit(client, endpoint, {"chunks": [1, 2], "raise": "gen boom"})
    yielded = await submit(client, endpoint, {"chunks": [1], "yield_error": "bad chunk"})
    body = await finished(client, endpoint, raised, worker=worker)
    assert body["status"] == "FAILED" and "gen boom" in body["error"]
    streamed = (await client.get(f"/v2/{endpoint}/stream/{raised}")).json()
    assert [i["output"] for i in streamed["stream"]] == [1, 2]  # chunks before the error stay
    body = await finished(client, endpoint, yielded, worker=worker)
    if sdk_tuple(version) >= (1, 7, 7):  # a yielded {"error"} ends the job FAILED
        assert body["status"] == "FAILED" and body["error"] == "bad chunk"
    else:  # 1.6.x streams it as output and completes: recorded, as the SDK does
        assert body["status"] == "COMPLETED"


@pytest.mark.parametrize("version", VERSIONS)
async def test_progress_shows_while_running_and_a_late_one_is_ignored(
    version, rp_gateway, client, start_worker, endpoint
) -> None:
    worker = start_worker(version, endpoint)
    await ready(rp_gateway.store, endpoint, worker)
    job_id = await submit(client, endpoint, {"progress": [{"step": 1}], "sleep": 1.5})

    async def shows_progress() -> bool:
        body = await status(client, endpoint, job_id)
        return body["status"] == "IN_PROGRESS" and body.get("output") == {"step": 1}

    await until(shows_progress, 15, "progress in /status", worker.log)
    done = await finished(client, endpoint, job_id, worker=worker)
    assert done["status"] == "COMPLETED"
    # a progress POST that lands after the result (runpod-python#250) changes nothing
    late = await client.post(
        f"/v2/{endpoint}/job-done/{worker.worker_id}/{job_id}?gpu=x&isStream=false",
        content=json.dumps({"status": "IN_PROGRESS", "output": {"step": 9}}),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": KEY},
    )
    assert late.status_code == 200 and late.json()["accepted"] is False
    assert await status(client, endpoint, job_id) == done


async def test_duplicate_and_foreign_job_done_are_200_and_change_nothing(
    rp_gateway, client, start_worker, endpoint
) -> None:
    worker = start_worker("1.12.0", endpoint)
    await ready(rp_gateway.store, endpoint, worker)
    job_id = await submit(client, endpoint, {"output": "first"})
    done = await finished(client, endpoint, job_id, worker=worker)
    url = f"/v2/{endpoint}/job-done/{{w}}/{job_id}?gpu=x&isStream=false"
    for w in (worker.worker_id, "someone-else"):
        again = await client.post(url.format(w=w), content=b'{"output": "second"}',
                                  headers={"Authorization": KEY})
        assert again.status_code == 200 and again.json()["accepted"] is False
    assert (await status(client, endpoint, job_id))["output"] == done["output"] == "first"


@pytest.mark.parametrize("version", VERSIONS)
async def test_concurrency_modifier_batch_takes_never_exceed_the_slots(
    version, rp_gateway, client, start_worker, endpoint
) -> None:
    worker = start_worker(version, endpoint, kind="async", concurrency="3")
    await ready(rp_gateway.store, endpoint, worker)
    ids = [await submit(client, endpoint, {"sleep": 0.6, "n": i}) for i in range(9)]
    most = 0
    started = time.monotonic()
    while time.monotonic() - started < 30:
        health = (await client.get(f"/v2/{endpoint}/health")).json()["jobs"]
        most = max(most, health["inProgress"])
        if health["completed"] == 9:
            break
        await asyncio.sleep(0.05)
    if sdk_tuple(version) >= (1, 7, 1):  # batch takes of at most the free slots
        assert most <= 3, f"{most} jobs ran at once on a worker with 3 slots"
    # (1.6.x issues `concurrency` parallel single takes whenever it holds a job, so it can run
    # more than that: the SDK's behaviour, recorded, not podq's)
    assert most >= 2, "the worker never ran jobs side by side"
    for job_id in ids:
        assert (await status(client, endpoint, job_id))["status"] == "COMPLETED"


async def test_long_poll_delivers_mid_hold_and_never_spins(
    rp_gateway, client, start_worker, endpoint
) -> None:
    worker = start_worker("1.12.0", endpoint)
    await ready(rp_gateway.store, endpoint, worker)
    await asyncio.sleep(1.0)  # the worker is now inside a held take
    info = await rp_gateway.store.redis.info("commandstats")
    before = info.get("cmdstat_fcall", {}).get("calls", 0)
    await asyncio.sleep(3.0)  # idle: at most a few takes (each hold is 3 s here)
    info = await rp_gateway.store.redis.info("commandstats")
    assert info.get("cmdstat_fcall", {}).get("calls", 0) - before < 40, "the idle worker spins"
    answer = await client.post(f"/v2/{endpoint}/runsync", json={"input": {"output": 1}})
    assert answer.json()["status"] == "COMPLETED"
    assert answer.json()["delayTime"] < 500, answer.json()  # handed over mid-hold


async def test_a_take_nobody_reads_is_given_back_on_job_in_progress_0(
    rp_gateway, client, endpoint
) -> None:
    await register(rp_gateway.store, endpoint)
    headers = {"Authorization": KEY}
    job_id = await submit(client, endpoint, {"output": 1})
    take = f"/v2/{endpoint}/job-take/lost-worker?gpu=x"
    first = await client.get(take + "&job_in_progress=1", headers=headers)
    assert first.status_code == 200 and first.json()["id"] == job_id
    record = await rp_gateway.store.get(job_id)
    assert record.status == "IN_PROGRESS" and record.attempt == 1
    # the worker says it holds nothing: the job it never got comes back to it at once
    again = await client.get(take + "&job_in_progress=0", headers=headers)
    assert again.status_code == 200 and again.json()["id"] == job_id
    record = await rp_gateway.store.get(job_id)
    assert record.attempt == 2 and record.tries == 1  # a lost hand-off is not a try


async def test_a_take_whose_client_left_keeps_the_job_queued(rp_gateway, client, endpoint) -> None:
    await register(rp_gateway.store, endpoint)
    headers = {"Authorization": KEY}
    with pytest.raises(httpx.ReadTimeout):
        await client.get(f"/v2/{endpoint}/job-take/gone?gpu=x&job_in_progress=0",
                         headers=headers, timeout=0.5)
    job_id = await submit(client, endpoint, {"output": 1})
    await asyncio.sleep(1.5)  # the held take wakes on the doorbell and sees its client is gone
    assert (await status(client, endpoint, job_id))["status"] == "IN_QUEUE"


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_cancel_stops_an_async_job_on_1_12_and_never_lets_a_late_result_in(
    kind, rp_gateway, client, start_worker, endpoint
) -> None:
    worker = start_worker("1.12.0", endpoint, kind=kind)
    await ready(rp_gateway.store, endpoint, worker)
    job_id = await submit(client, endpoint, {"sleep": 2.5, "output": "late"})
    await until(lambda: _running(client, endpoint, job_id), 15, "job start", worker.log)
    cancelled = await client.post(f"/v2/{endpoint}/cancel/{job_id}")
    assert cancelled.json()["status"] == "CANCELLED"
    # the next job still runs on the same worker
    answer = await client.post(f"/v2/{endpoint}/runsync", json={"input": {"output": "next"}})
    assert answer.json()["output"] == "next", worker.log()
    assert (await status(client, endpoint, job_id))["status"] == "CANCELLED"
    assert "output" not in await status(client, endpoint, job_id)
    if kind == "async":  # 1.10+: the stop reached the task before its 2.5 s were up
        assert answer.json()["delayTime"] < 2000


@pytest.mark.parametrize("version", VERSIONS)
async def test_cancel_on_every_version_keeps_cancelled(
    version, rp_gateway, client, start_worker, endpoint
) -> None:
    worker = start_worker(version, endpoint, kind="sync")
    await ready(rp_gateway.store, endpoint, worker)
    job_id = await submit(client, endpoint, {"sleep": 3, "output": "late"})
    await until(lambda: _running(client, endpoint, job_id), 15, "job start", worker.log)
    await client.post(f"/v2/{endpoint}/cancel/{job_id}")
    beat = await until(lambda: _stuck(rp_gateway, endpoint, worker.worker_id), 10,
                       "a ping listing the cancelled job", worker.log)
    assert beat.stuck_since > 0  # the scaler recycles it if this lasts past the grace
    answer = await client.post(f"/v2/{endpoint}/runsync", json={"input": {"output": "next"}})
    assert answer.json()["output"] == "next", worker.log()
    assert (await status(client, endpoint, job_id))["status"] == "CANCELLED"


@pytest.mark.parametrize("version", VERSIONS)
async def test_execution_timeout_is_enforced_by_podq(
    version, rp_gateway, client, start_worker, endpoint
) -> None:
    worker = start_worker(version, endpoint, kind="async")
    await ready(rp_gateway.store, endpoint, worker)
    job_id = await submit(client, endpoint, {"sleep": 4, "output": "late"},
                          policy={"executionTimeout": 1000})
    body = await finished(client, endpoint, job_id, timeout_s=15, worker=worker)
    assert body["status"] == "TIMED_OUT" and "1000 ms" in body["error"]
    assert body["executionTime"] < 2500
    await asyncio.sleep(3.5)  # the handler's own end (SDK < 1.10 cannot stop it) changes nothing
    assert (await status(client, endpoint, job_id))["status"] == "TIMED_OUT"


@pytest.mark.parametrize("version", VERSIONS)
async def test_sigkill_of_the_worker_group_mid_job_another_worker_finishes_it(
    version, rp_gateway, client, start_worker, endpoint
) -> None:
    victim = start_worker(version, endpoint)
    await ready(rp_gateway.store, endpoint, victim)
    job_id = await submit(client, endpoint, {"sleep": 3, "output": "done"})
    await until(lambda: _running(client, endpoint, job_id), 15, "job start", victim.log)
    victim.kill_group()
    rescuer = start_worker(version, endpoint)
    body = await finished(client, endpoint, job_id, timeout_s=40, worker=rescuer)
    assert body["status"] == "COMPLETED" and body["workerId"] == rescuer.worker_id
    health = (await client.get(f"/v2/{endpoint}/health")).json()
    assert health["jobs"]["retried"] == 1


@pytest.mark.parametrize("version", ["1.12.0", "1.7.13"])
async def test_sigterm_drains_the_job_in_flight(version, rp_gateway, client, start_worker, endpoint) -> None:
    worker = start_worker(version, endpoint, kind="async")
    await ready(rp_gateway.store, endpoint, worker)
    job_id = await submit(client, endpoint, {"progress": [{"step": 1}], "sleep": 2, "output": "drained"})

    async def handler_running() -> bool:  # not just taken: SDKs before 1.9.1 may hold a taken
        body = await status(client, endpoint, job_id)  # job in their local queue a while
        return body["status"] == "IN_PROGRESS" and body.get("output") == {"step": 1}

    await until(handler_running, 15, "the handler to run", worker.log)
    worker.signal(signal.SIGTERM)
    body = await finished(client, endpoint, job_id, timeout_s=20, worker=worker)
    assert body["status"] == "COMPLETED" and body["output"] == "drained"
    assert await worker.exited(15) is not None, "the worker did not exit after its drain"


@pytest.mark.slow
async def test_1_6_2_dies_at_once_on_sigterm_and_its_job_is_requeued(
    rp_gateway, client, start_worker, endpoint
) -> None:
    worker = start_worker("1.6.2", endpoint, kind="async")
    await ready(rp_gateway.store, endpoint, worker)
    job_id = await submit(client, endpoint, {"sleep": 2, "output": "x"})
    await until(lambda: _running(client, endpoint, job_id), 15, "job start", worker.log)
    worker.signal(signal.SIGTERM)
    assert await worker.exited(5) is not None
    worker.kill_group()  # its ping thread dies with it; nothing else is left
    await until(lambda: _queued(client, endpoint, job_id), 20, "the job back in the queue")


@pytest.mark.parametrize("version", ["1.12.0", "1.7.13"])
async def test_refresh_worker_posts_stop_pod_exits_and_is_marked_for_recycling(
    version, rp_gateway, client, start_worker, endpoint
) -> None:
    worker = start_worker(version, endpoint, refresh="1")
    await ready(rp_gateway.store, endpoint, worker)
    answer = await client.post(f"/v2/{endpoint}/runsync", json={"input": {"output": 1}})
    assert answer.json()["status"] == "COMPLETED"
    assert await worker.exited(20) is not None, worker.log()
    beat = await rp_gateway.store.worker(endpoint, worker.worker_id)
    assert beat.recycle


async def test_handler_refresh_worker_marks_it_and_it_gets_429_on_take(
    rp_gateway, client, start_worker, endpoint
) -> None:
    worker = start_worker("1.12.0", endpoint)
    await ready(rp_gateway.store, endpoint, worker)
    answer = await client.post(f"/v2/{endpoint}/runsync", json={"input": {"output": {"a": 1}, "refresh": True}})
    assert answer.json()["output"] == {"a": 1}
    assert (await rp_gateway.store.worker(endpoint, worker.worker_id)).recycle
    job_id = await submit(client, endpoint, {"output": 2})
    await asyncio.sleep(2)
    assert (await status(client, endpoint, job_id))["status"] == "IN_QUEUE"  # it takes no more
    take = await client.get(f"/v2/{endpoint}/job-take/{worker.worker_id}?gpu=x",
                            headers={"Authorization": KEY})
    assert take.status_code == 429 and take.headers["Retry-After"] == "5"


async def test_a_bad_key_gets_slow_401s_and_no_job(rp_gateway, client, start_worker, endpoint) -> None:
    await register(rp_gateway.store, endpoint)
    job_id = await submit(client, endpoint, {"output": 1})
    worker = start_worker("1.12.0", endpoint, key="wrong-key")
    await asyncio.sleep(4)
    assert (await status(client, endpoint, job_id))["status"] == "IN_QUEUE"
    failures = worker.log().count("Failed to get job")
    assert failures <= 8, f"{failures} failed takes in 4 s: the worker spins on 401s"


async def test_an_unhealthy_report_is_recorded_with_its_reason(rp_gateway, client, endpoint) -> None:
    answer = await client.get(
        f"/v2/{endpoint}/ping/sick-1?gpu=x&status=unhealthy&check=memory_check&"
        "reason=MemoryError: 1 GB available, 4 GB needed&runpod_version=1.12.0",
        headers={"Authorization": KEY},
    )
    assert answer.status_code == 200
    beat = await rp_gateway.store.worker(endpoint, "sick-1")
    assert beat.state is WorkerState.UNHEALTHY and beat.reason.startswith("memory_check: MemoryError")
    health = (await client.get(f"/v2/{endpoint}/health")).json()
    assert health["workers"]["unhealthy"] == 1


async def test_large_result_is_accepted(rp_gateway, client, start_worker, endpoint) -> None:
    worker = start_worker("1.12.0", endpoint)
    await ready(rp_gateway.store, endpoint, worker)
    size = 15 * 1024 * 1024  # over /run's 10 MB input cap: results have a cap of their own
    job_id = await submit(client, endpoint, {"big": size})
    body = await finished(client, endpoint, job_id, timeout_s=60, worker=worker)
    assert body["status"] == "COMPLETED" and len(body["output"]) == size


async def test_paused_endpoint_hands_out_nothing_until_resumed(
    rp_gateway, client, start_worker, endpoint
) -> None:
    registry = await register(rp_gateway.store, endpoint, paused=True)
    worker = start_worker("1.12.0", endpoint)
    await ready(rp_gateway.store, endpoint, worker)
    job_id = await submit(client, endpoint, {"output": 1})
    await asyncio.sleep(2)
    assert (await status(client, endpoint, job_id))["status"] == "IN_QUEUE"
    config = await registry.get_endpoint(endpoint)
    await registry.put_endpoint(msgspec.structs.replace(config, paused=False))
    body = await finished(client, endpoint, job_id, timeout_s=15, worker=worker)  # after its 5 s back-off
    assert body["status"] == "COMPLETED"


async def _running(client, endpoint, job_id) -> bool:
    return (await status(client, endpoint, job_id))["status"] == "IN_PROGRESS"


async def _queued(client, endpoint, job_id) -> bool:
    return (await status(client, endpoint, job_id))["status"] == "IN_QUEUE"


async def _stuck(gateway: RunningGateway, endpoint: str, worker_id: str):
    beat = await gateway.store.worker(endpoint, worker_id)
    return beat if beat is not None and beat.stuck_since else None


def test_keys_module_names_the_worker_keys() -> None:
    assert keys.held("ep", "w") == "podq:ep:ep:held:w"
    assert keys.stops("ep", "w") == "podq:ep:ep:stops:w"


async def test_gateway_shutdown_ends_held_polls_quickly(rp_settings, endpoint) -> None:
    from serverless.gateway import GatewayOptions, start_gateway

    settings = msgspec.structs.replace(rp_settings, runpod_hold_ms=20_000)
    gw = await start_gateway(settings, "127.0.0.1", 0, GatewayOptions(admin_key=KEY))
    await register(gw.store, endpoint)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30, headers={"Authorization": KEY}) as c:
        polls = [asyncio.create_task(c.get(f"/v2/{endpoint}/{route}/w1?gpu=x"))
                 for route in ("job-take", "job-stop")]
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await gw.close()
        assert time.monotonic() - started < 5, "held long-polls kept the gateway from stopping"
        for poll in polls:
            answer = await poll
            assert answer.status_code == 204
