"""The seed's Launch examples, end to end: LaunchClient against a real gateway, a real scaler
(process backend) and real bundle workers (worker/bundle.py) that unpack the uploaded zip.

One gateway, scaler and set of endpoints serve the whole module (workers take seconds to start).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from serverless.errors import BadRequest, Conflict, NotFound
from serverless.launch import (
    AsyncEndpoint, EndpointRequest, EndpointResponseFuture, LaunchClient, StreamingEndpoint,
    SyncEndpoint,
)
from serverless.redis_server import RedisProcess
from tests.gateway.conftest import ADMIN_KEY, ThreadedGateway
from tests.launch.conftest import DEMO, file_server, scaled_gateway

pytestmark = pytest.mark.timeout(120)
ENV = {"framework_type": "pytorch", "pytorch_image_tag": "1.10.0-cuda11.3-cudnn8-runtime"}
LABELS = {"team": "MY_TEAM", "product": "MY_PRODUCT"}


@pytest.fixture(scope="module")
def gateway(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    with scaled_gateway(redis_server, tmp_path_factory.mktemp("launch")) as gw:
        yield gw


@pytest.fixture(scope="module")
def client(gateway: ThreadedGateway) -> Iterator[LaunchClient]:
    client = LaunchClient(api_key=ADMIN_KEY, endpoint=gateway.url, self_hosted=True)
    for name, predict in (("test-bundle", "demo.inference.load_predict"),
                          ("test-streaming-bundle", "demo.inference.load_stream")):
        client.create_model_bundle_from_dirs(
            model_bundle_name=name, base_paths=[str(DEMO)], requirements_path=None, env_params=ENV,
            load_predict_fn_module_path=predict, load_model_fn_module_path="demo.inference.load_model")
    yield client
    client.close()


def create(client: LaunchClient, name: str, endpoint_type: str, **kw: object):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        endpoint = client.create_model_endpoint(
            endpoint_name=name, model_bundle=kw.pop("model_bundle", "test-bundle"), cpus=1,
            endpoint_type=endpoint_type, update_if_exists=True, labels=LABELS, **kw)
    assert [str(w.message) for w in caught] == [
        "cpus=1 and memory=8Gi are not applied: the process backend cannot limit a worker; use "
        "LaunchClient(..., backend='docker') (or swarm, kubernetes) to have them applied as "
        "container limits"]
    return endpoint


@pytest.fixture(scope="module")
def sync_endpoint(client: LaunchClient) -> SyncEndpoint:
    return create(client, "demo-endpoint-sync", "sync", min_workers=1)


@pytest.fixture(scope="module")
def async_endpoint(client: LaunchClient) -> AsyncEndpoint:
    return create(client, "demo-endpoint-async", "async", min_workers=0)


@pytest.fixture(scope="module")
def streaming_endpoint(client: LaunchClient) -> StreamingEndpoint:
    return create(client, "demo-endpoint-streaming", "streaming", min_workers=1, per_worker=1,
                  model_bundle="test-streaming-bundle")


@pytest.fixture(scope="module")
def files() -> Iterator[str]:
    """An HTTP server whose files a url request points at."""
    with file_server({"/input.txt": b"hello launch"}) as url:
        yield url


def test_sync_predict_returns_the_result_as_json(sync_endpoint: SyncEndpoint) -> None:
    response = sync_endpoint.predict(EndpointRequest(args={"x": 2, "y": 3}, return_pickled=False))
    assert response.status == "SUCCESS"
    assert json.loads(response.result) == {"sum": 10, "loads": 1}  # load_model_fn ran once
    again = sync_endpoint.predict(EndpointRequest(args={"x": 1}))
    assert json.loads(again.result) == {"sum": 2, "loads": 1}


def test_a_url_request_passes_the_files_bytes(sync_endpoint: SyncEndpoint, files: str) -> None:
    response = sync_endpoint.predict(EndpointRequest(url=f"{files}/input.txt", return_pickled=False))
    assert json.loads(response.result) == {"length": 12, "text": "hello launch"}
    missing = sync_endpoint.predict(EndpointRequest(url=f"{files}/missing.txt"))
    assert missing.status == "FAILURE"
    assert "answered HTTP 404" in missing.traceback


def test_an_exception_is_a_failure_with_its_traceback(sync_endpoint: SyncEndpoint) -> None:
    response = sync_endpoint.predict(EndpointRequest(args={"x": "boom"}))
    assert (response.status, response.result) == ("FAILURE", None)
    assert "Traceback" in response.traceback and "ValueError: boom was asked for" in response.traceback


def test_a_bad_request_fails_with_a_clear_error(sync_endpoint: SyncEndpoint, client: LaunchClient) -> None:
    response = sync_endpoint.predict(EndpointRequest(args={"nope": 1}))  # no `x`: one positional dict
    assert response.status == "FAILURE" and "TypeError" in response.traceback
    task = client.transport.run_sync("demo-endpoint-sync", {"args": 1, "url": "http://x"})
    assert "exactly one of `url` and `args` must be given" in task["error"]


def test_async_predict_returns_a_future(async_endpoint: AsyncEndpoint, client: LaunchClient) -> None:
    future = async_endpoint.predict(EndpointRequest(args={"x": 5}, return_pickled=False))
    assert isinstance(future, EndpointResponseFuture)
    response = future.get(timeout=60)  # the scaler starts a worker for it (min_workers=0)
    assert (response.status, json.loads(response.result)["sum"]) == ("SUCCESS", 10)
    task_id = client.async_request("demo-endpoint-async", args={"x": 1, "y": 1})
    EndpointResponseFuture(client, "demo-endpoint-async", task_id).get(timeout=60)
    assert client.get_async_response(task_id) == {"state": "SUCCESS", "result": '{"sum": 4, "loads": 1}'}


def test_predict_batch_tracks_every_request(async_endpoint: AsyncEndpoint) -> None:
    requests = [EndpointRequest(args={"x": i}, request_id=f"r{i}") for i in range(3)]
    batch = async_endpoint.predict_batch(requests)
    while not batch.is_done():
        pass
    results = {k: json.loads(v.result)["sum"] for k, v in batch.get_responses().items()}
    assert results == {"r0": 0, "r1": 2, "r2": 4}


def test_streaming_yields_a_response_per_chunk(streaming_endpoint: StreamingEndpoint) -> None:
    chunks = [json.loads(r.result) for r in streaming_endpoint.predict(EndpointRequest(args={"n": 2}))]
    assert chunks == [{"i": 0}, {"i": 2}]
    broken = list(streaming_endpoint.predict(EndpointRequest(args={"n": 3})))
    assert [r.status for r in broken] == ["SUCCESS"] * 3 + ["FAILURE"]
    assert "RuntimeError: stream broke after 3" in broken[-1].traceback


def test_endpoints_are_listed_read_and_described(
        client: LaunchClient, sync_endpoint: SyncEndpoint, async_endpoint: AsyncEndpoint) -> None:
    names = {e.name: type(e) for e in client.list_model_endpoints()}
    assert names["demo-endpoint-sync"] is SyncEndpoint and names["demo-endpoint-async"] is AsyncEndpoint
    got = client.get_model_endpoint("demo-endpoint-sync")
    assert isinstance(got, SyncEndpoint) and got.model_endpoint.labels == LABELS
    assert got.resource_settings() == {"cpus": None, "memory": None, "gpus": 0, "gpu_type": None}
    assert got.worker_settings() == {"min_workers": 1, "max_workers": 1, "per_worker": 1}
    # the scaler's view of the moment, in Launch's words
    assert got.status() == "READY"  # its one worker serves (min_workers=max_workers=1)
    assert client.get_model_endpoint("no-such-endpoint") is None
    logs = client.read_endpoint_creation_logs("demo-endpoint-sync")
    assert "podq bundle: test-bundle loaded; serving with concurrency 1" in logs


def test_edit_changes_only_what_is_given(client: LaunchClient, async_endpoint: AsyncEndpoint) -> None:
    client.edit_model_endpoint(model_endpoint="demo-endpoint-async", max_workers=2, per_worker=3)
    assert async_endpoint.worker_settings() == {"min_workers": 0, "max_workers": 2, "per_worker": 3}
    template = client.transport.admin.template("launch-demo-endpoint-async")
    assert template["env"]["PODQ_BUNDLE_CONCURRENCY"] == "3"


def test_an_endpoint_is_created_and_deleted(client: LaunchClient) -> None:
    endpoint = create(client, "demo-endpoint-tmp", "async", min_workers=0,
                      post_inference_hooks=["callback"], default_callback_url="https://example.com/hook")
    assert endpoint.model_endpoint.raw["webhook"] == "https://example.com/hook"
    assert endpoint.model_endpoint.post_inference_hooks == ["callback"]
    with pytest.raises(Conflict, match="endpoint 'demo-endpoint-tmp' already exists; pass update_if_exists=True"):
        client.create_model_endpoint("demo-endpoint-tmp", "test-bundle", cpus=1, min_workers=0,
                                     endpoint_type="async")
    with pytest.raises(BadRequest, match="is async; its type cannot change to sync"):
        client.create_model_endpoint("demo-endpoint-tmp", "test-bundle", update_if_exists=True)
    with pytest.raises(Conflict, match="bundle 'test-bundle' is run by template"):
        client.delete_model_bundle("test-bundle")
    assert client.delete_model_endpoint(model_endpoint="demo-endpoint-tmp") is True
    assert client.get_model_endpoint("demo-endpoint-tmp") is None


def test_bundles_are_read_listed_and_deleted(client: LaunchClient, tmp_path: Path) -> None:
    bundle = client.get_model_bundle("test-bundle")
    assert (bundle.name, bundle.packaging_type, bundle.requirements) == ("test-bundle", "zip", [])
    assert {"test-bundle", "test-streaming-bundle"} <= {b.name for b in client.list_model_bundles()}
    (tmp_path / "requirements.txt").write_text("")
    made = client.create_model_bundle_from_dirs(
        "tmp-bundle", [str(DEMO)], str(tmp_path / "requirements.txt"), ENV,
        "demo.inference.load_predict", "demo.inference.load_model", app_config={"offset": 1})
    assert made.app_config == {"offset": 1}
    client.delete_model_bundle(made)
    with pytest.raises(NotFound, match="model bundle 'tmp-bundle' does not exist"):
        client.get_model_bundle("tmp-bundle")


def test_refusals_name_the_fix(client: LaunchClient) -> None:
    with pytest.raises(BadRequest, match="podq never does; put the code in a folder and use "
                                         "create_model_bundle_from_dirs"):
        client.create_model_bundle("pickled", ENV, load_predict_fn=lambda m: m, model=object())
    with pytest.raises(BadRequest, match="return_pickled=True is not supported: podq never pickles"):
        EndpointRequest(args={"x": 1}, return_pickled=True)
    with pytest.raises(NotFound, match="model bundle 'no-such-bundle' does not exist"):
        client.create_model_endpoint("ep-x", "no-such-bundle", min_workers=0, endpoint_type="async")
    with pytest.raises(BadRequest, match="unknown post_inference_hooks 'logging'"):
        client.create_model_endpoint("ep-x", "test-bundle", post_inference_hooks=["logging"])
    with pytest.raises(BadRequest, match="unknown gpu_type 'nvidia-voodoo'"):
        client.create_model_endpoint("ep-x", "test-bundle", gpus=1, gpu_type="nvidia-voodoo")
    assert client.get_model_endpoint("ep-x") is None  # nothing was written
