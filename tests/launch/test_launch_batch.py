"""Launch's batch jobs on podq's: batch_async_request / get_batch_async_response end to end
(LaunchClient, a real gateway with its batch supervisor, a real scaler with process-backend
bundle workers), and table tests of the pure mapping (serverless/launch/batch.py).

One gateway, scaler and bundle serve the module; the batches are a few inputs each.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from serverless.errors import BadRequest, NotFound
from serverless.launch import LaunchClient
from serverless.launch import batch as launch_batch
from serverless.redis_server import RedisProcess
from tests.gateway.conftest import ADMIN_KEY, ThreadedGateway
from tests.launch.conftest import DEMO, file_server, scaled_gateway

BUNDLE = "batch-bundle"
ENDPOINT = "launch-batch-batch-bundle"


def counts(**given: int) -> dict[str, int]:
    return {"completed": 0, "failed": 0, "cancelled": 0, "timed_out": 0, "in_flight": 0,
            "pending": 0, **given}


# ---- pure ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("state", "given", "round_", "expected"), [
    ("RUNNING", counts(in_flight=3), 0, "PENDING"),
    ("RUNNING", counts(pending=2, in_flight=1), 0, "PENDING"),
    ("RUNNING", counts(completed=1, in_flight=2), 0, "RUNNING"),
    ("RUNNING", counts(failed=1, in_flight=2), 0, "RUNNING"),
    ("RUNNING", counts(in_flight=1), 1, "RUNNING"),  # a retry round: it ran before
    ("CANCELLING", counts(in_flight=2), 0, "RUNNING"),
    ("COMPLETED", counts(completed=3), 0, "SUCCESS"),
    ("COMPLETED", counts(completed=2, failed=1), 0, "FAILURE"),
    ("COMPLETED", counts(completed=2, timed_out=1), 0, "FAILURE"),
    ("COMPLETED", counts(completed=2, cancelled=1), 0, "FAILURE"),
    ("CANCELLED", counts(completed=1, pending=5), 0, "CANCELLED"),
])
def test_batch_status_in_launchs_words(state: str, given: dict[str, int], round_: int, expected: str) -> None:
    assert launch_batch.launch_batch_status(state, given, round_) == expected


@pytest.mark.parametrize(("batch", "expected"), [
    ({"state": "RUNNING", "counts": counts(completed=1, in_flight=1, pending=2), "created_at": 1_000,
      "finished_at": None},
     {"status": "RUNNING", "result": None, "duration": "0:00:02", "num_tasks_pending": 3,
      "num_tasks_completed": 1, "num_tasks_failed": 0}),
    ({"state": "COMPLETED", "counts": counts(completed=2, failed=1), "created_at": 1_000,
      "finished_at": 62_500},
     {"status": "FAILURE", "result": "URL", "duration": "0:01:01.500000", "num_tasks_pending": 0,
      "num_tasks_completed": 2, "num_tasks_failed": 1}),
    ({"state": "CANCELLED", "counts": counts(completed=1, cancelled=1, pending=4), "created_at": 0,
      "finished_at": 500},
     {"status": "CANCELLED", "result": "URL", "duration": "0:00:00.500000", "num_tasks_pending": 4,
      "num_tasks_completed": 1, "num_tasks_failed": 1}),
])
def test_the_response_has_launchs_shape(batch: dict[str, Any], expected: dict[str, Any]) -> None:
    assert launch_batch.response(batch, "URL", now_ms=3_000) == expected


@pytest.mark.parametrize(("line", "expected"), [
    ({"index": 0, "id": "b-0", "status": "COMPLETED", "output": {"sum": 2}},
     {"index": 0, "state": "SUCCESS", "result": '{"sum": 2}'}),
    ({"index": 1, "id": "b-1", "status": "FAILED",
      "error": json.dumps({"error_message": "boom", "error_traceback": "Traceback: boom"})},
     {"index": 1, "state": "FAILURE", "traceback": "Traceback: boom"}),
    ({"index": 2, "id": None, "status": "FAILED", "error": "line 3 is not valid JSON"},
     {"index": 2, "state": "FAILURE", "traceback": "line 3 is not valid JSON"}),
    ({"index": 3, "id": "b-3", "status": "TIMED_OUT", "error": "timed_out"},
     {"index": 3, "state": "FAILURE", "traceback": "timed_out"}),
])
def test_each_result_line_is_a_launch_response(line: dict[str, Any], expected: dict[str, Any]) -> None:
    assert launch_batch.input_result(line) == expected


def test_urls_and_inputs_become_job_inputs() -> None:
    assert launch_batch.job_inputs(["https://a/1", "http://b/2"], None) == [
        {"url": "https://a/1"}, {"url": "http://b/2"}]
    assert launch_batch.job_inputs(None, [{"x": 1}, 5]) == [{"args": {"x": 1}}, {"args": 5}]
    for urls, inputs in ((None, None), (["https://a"], [{"x": 1}]), ([], [])):
        with pytest.raises(BadRequest, match="exactly one of urls and inputs must be given"):
            launch_batch.job_inputs(urls, inputs)
    with pytest.raises(BadRequest, match="'s3://bucket/x' is not"):
        launch_batch.job_inputs(["s3://bucket/x"], None)


def test_settings_come_from_arguments_or_batch_task_options() -> None:
    none = dict.fromkeys(launch_batch.OPTIONS)
    assert launch_batch.settings(None, none) == launch_batch.DEFAULTS
    chosen = launch_batch.settings({"max_workers": 3, "memory": "1Gi"}, {**none, "per_worker": 2})
    assert chosen == {**launch_batch.DEFAULTS, "max_workers": 3, "memory": "1Gi", "per_worker": 2}
    with pytest.raises(BadRequest, match="max_workers is 2 but batch_task_options says 3; give it once"):
        launch_batch.settings({"max_workers": 3}, {**none, "max_workers": 2})
    with pytest.raises(BadRequest, match="'pyspark_partition_size' is not supported: podq feeds"):
        launch_batch.settings({"pyspark_partition_size": 10}, none)
    with pytest.raises(BadRequest, match="unknown batch_task_options key 'colour'; podq applies cpus"):
        launch_batch.settings({"colour": "red"}, none)
    with pytest.raises(BadRequest, match="use a bundle name of at most"):
        launch_batch.endpoint_name("b" * 120)


# ---- end to end ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gateway(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    with scaled_gateway(redis_server, tmp_path_factory.mktemp("launch-batch")) as gw:
        yield gw


@pytest.fixture(scope="module")
def client(gateway: ThreadedGateway) -> Iterator[LaunchClient]:
    client = LaunchClient(api_key=ADMIN_KEY, endpoint=gateway.url, self_hosted=True)
    client.create_model_bundle_from_dirs(
        model_bundle_name=BUNDLE, base_paths=[str(DEMO)], requirements_path=None, env_params={},
        load_predict_fn_module_path="demo.inference.load_predict",
        load_model_fn_module_path="demo.inference.load_model")
    yield client
    client.close()


@pytest.fixture(scope="module")
def files() -> Iterator[str]:
    """An HTTP server whose files the url inputs point at."""
    with file_server({"/a.txt": b"alpha", "/b.txt": b"bee"}) as url:
        yield url


def wait_ended(client: LaunchClient, batch_job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get_batch_async_response(batch_job_id)
        if response["status"] in launch_batch.ENDED:
            return response
        assert time.monotonic() < deadline, f"batch still {response}"
        time.sleep(0.1)


@pytest.mark.timeout(120)
def test_a_batch_of_inputs_runs_the_bundle(client: LaunchClient) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cpus/memory given: no warning about them
        job_id = client.batch_async_request(BUNDLE, inputs=[{"x": 1}, {"x": 2, "y": 1}, {"x": "boom"}],
                                            labels={"team": "ml"}, max_workers=2,
                                            batch_task_options={"per_worker": 2})
    first = client.get_batch_async_response(job_id)
    assert first["status"] in ("PENDING", "RUNNING", "FAILURE") and first["num_tasks_failed"] <= 1
    done = wait_ended(client, job_id)
    assert (done["status"], done["num_tasks_completed"], done["num_tasks_failed"],
            done["num_tasks_pending"]) == ("FAILURE", 2, 1, 0)
    assert done["result"] == f"{client.transport.base_url}/v1/batches/{job_id}/results"
    assert done["duration"].startswith("0:00:")
    results = client.get_batch_async_results(job_id)
    assert [r["state"] for r in results] == ["SUCCESS", "SUCCESS", "FAILURE"]
    assert [json.loads(r["result"])["sum"] for r in results[:2]] == [2, 6]
    assert "ValueError: boom was asked for" in results[2]["traceback"]
    # the batch endpoint: the settings given, scaled to zero between batches, not listed
    endpoint = client.read_model_endpoint(ENDPOINT)
    assert (endpoint.bundle_name, endpoint.endpoint_type, endpoint.labels) == (BUNDLE, "async", {"team": "ml"})
    assert (endpoint.raw["workers_min"], endpoint.raw["workers_max"], endpoint.raw["scaler_value"]) == (0, 2, 2)
    assert ENDPOINT not in {e.name for e in client.list_model_endpoints()}


@pytest.mark.timeout(120)
def test_a_batch_of_urls_succeeds_and_its_results_url_answers(client: LaunchClient, files: str) -> None:
    job_id = client.batch_async_request(BUNDLE, urls=[f"{files}/a.txt", f"{files}/b.txt"])
    done = wait_ended(client, job_id)
    assert (done["status"], done["num_tasks_completed"]) == ("SUCCESS", 2)
    reply = httpx.get(done["result"], headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    lines = [json.loads(line) for line in reply.text.splitlines()]
    assert [(line["index"], line["status"], line["output"]) for line in lines] == [
        (0, "COMPLETED", {"length": 5, "text": "alpha"}), (1, "COMPLETED", {"length": 3, "text": "bee"})]
    # defaults again: the endpoint is back to one worker, one request each
    assert client.read_model_endpoint(ENDPOINT).raw["workers_max"] == 1


def test_refusals_name_the_fix(client: LaunchClient) -> None:
    with pytest.raises(BadRequest, match="serialization_format='pickle' is not supported: podq never pickles"):
        client.batch_async_request(BUNDLE, inputs=[{"x": 1}], serialization_format="pickle")
    with pytest.raises(BadRequest, match="batch_url_file_location='s3://b/k' is not used by podq"):
        client.batch_async_request(BUNDLE, inputs=[{"x": 1}], batch_url_file_location="s3://b/k")
    with pytest.raises(BadRequest, match="exactly one of urls and inputs"):
        client.batch_async_request(BUNDLE, urls=["https://a"], inputs=[{"x": 1}])
    with pytest.raises(BadRequest, match="'timeout_seconds' is not supported"):
        client.batch_async_request(BUNDLE, inputs=[{"x": 1}], batch_task_options={"timeout_seconds": 60})
    with pytest.raises(NotFound, match="model bundle 'no-such-bundle' does not exist"):
        client.batch_async_request("no-such-bundle", inputs=[{"x": 1}])
    assert client.get_model_endpoint("launch-batch-no-such-bundle") is None  # nothing was written
    with pytest.raises(NotFound, match="batch job 'batch-nope' does not exist"):
        client.get_batch_async_response("batch-nope")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(BadRequest, match="unknown gpu_type 'nvidia-voodoo'"):
            client.batch_async_request(BUNDLE, inputs=[{"x": 1}], cpus=1, gpus=1, gpu_type="nvidia-voodoo")
    assert caught == []
