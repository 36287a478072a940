"""InferenceEndpoint against a live gateway with no scaler: the statuses are written by hand
(Registry.set_status, as the scaler writes them), so each rule of wait(), update()'s
`updating` and the client properties is tested without a race."""

from __future__ import annotations

import time

import pytest
from huggingface_hub import AsyncInferenceClient, InferenceClient

import serverless
from serverless.errors import BadRequest
from serverless.hf import (
    InferenceEndpointError, InferenceEndpointTimeoutError, create_inference_endpoint,
    list_inference_endpoints,
)
from serverless.hf.endpoint import ROLL_SETTLE_S, InferenceEndpoint
from serverless.model import EndpointStatus
from tests.admin.conftest import LiveGateway, live  # noqa: F401 (fixture)
from tests.gateway.conftest import ADMIN_KEY


def create(name: str = "hf-e", **kw) -> InferenceEndpoint:
    fields = dict(repository="gpt2", framework="pytorch", accelerator="cpu", vendor="aws",
                  region="us-east-1", instance_size="x1", instance_type="intel-icl", handler="h.py")
    return create_inference_endpoint(name, **{**fields, **kw})


def set_status(live: LiveGateway, status: EndpointStatus, reason: str = "") -> None:
    live.run(live.registry.set_status("hf-e", status, reason))


def test_wait_raises_on_failed_quoting_the_reason_and_on_timeout(live: LiveGateway) -> None:
    endpoint = create()
    set_status(live, EndpointStatus.FAILED, "image 'me/w:1' not found")
    with pytest.raises(InferenceEndpointError, match="Inference Endpoint hf-e failed to deploy: "
                                                     "image 'me/w:1' not found"):
        endpoint.wait(timeout=5, refresh_every=0.05)
    set_status(live, EndpointStatus.INITIALIZING)
    with pytest.raises(InferenceEndpointTimeoutError, match="still initializing after 0.2 s") as caught:
        endpoint.wait(timeout=0.2, refresh_every=0.05)
    assert isinstance(caught.value, TimeoutError)
    with pytest.raises(ValueError, match="`refresh_every` must be positive"):
        endpoint.wait(refresh_every=0)


@pytest.mark.parametrize("status", [EndpointStatus.RUNNING, EndpointStatus.SCALED_TO_ZERO])
def test_wait_returns_once_the_endpoint_takes_requests(live: LiveGateway, status) -> None:
    endpoint = create()
    set_status(live, status)
    assert endpoint.wait(timeout=5, refresh_every=0.05).status is status
    assert endpoint.url == f"{live.url}/v2/hf-e/hf"


def test_a_running_endpoint_just_updated_is_updating_until_the_scaler_says_otherwise(live: LiveGateway) -> None:
    endpoint = create()
    set_status(live, EndpointStatus.RUNNING)
    assert endpoint.update(repository="gpt2-large").status == "updating"
    assert endpoint.fetch().status == "updating"  # the scaler's `running` is from before
    with pytest.raises(InferenceEndpointTimeoutError):
        endpoint.wait(timeout=0.2, refresh_every=0.05)
    set_status(live, EndpointStatus.UPDATING)  # the scaler saw the new version
    assert endpoint.fetch().status == "updating"
    set_status(live, EndpointStatus.RUNNING)  # and rolled it
    assert endpoint.wait(timeout=5, refresh_every=0.05).status == "running"
    assert endpoint.update(max_replica=3).status == "running"  # no new version: no roll


def test_a_silent_scaler_is_trusted_after_the_settle_time(live: LiveGateway) -> None:
    endpoint = create()
    set_status(live, EndpointStatus.RUNNING)
    endpoint.update(revision="r2")
    started = time.monotonic()
    assert endpoint.wait(timeout=10, refresh_every=0.2).status == "running"
    assert ROLL_SETTLE_S <= time.monotonic() - started < ROLL_SETTLE_S + 1


def test_the_clients_are_huggingface_hubs_on_the_hf_route(live: LiveGateway) -> None:
    endpoint = create()
    with pytest.raises(InferenceEndpointError, match="hf-e: it is pending, not serving yet"):
        endpoint.async_client
    set_status(live, EndpointStatus.SCALED_TO_ZERO)  # a request would wake it: it has a URL
    endpoint.fetch()
    client, aclient = endpoint.client, endpoint.async_client
    assert isinstance(client, InferenceClient) and isinstance(aclient, AsyncInferenceClient)
    assert (client.model, client.token) == (f"{live.url}/v2/hf-e/hf", ADMIN_KEY)
    assert (aclient.model, aclient.token) == (f"{live.url}/v2/hf-e/hf", ADMIN_KEY)


def test_arguments_podq_cannot_honour_create_nothing(live: LiveGateway) -> None:
    with pytest.raises(BadRequest, match="domain='x.example.com' is not supported"):
        create(domain="x.example.com")
    with pytest.raises(BadRequest, match=r"workers_min \(3\) is above workers_max \(1\)"):
        create(min_replica=3)  # refused by the registry: the template made first is removed
    assert list_inference_endpoints() == [] and serverless.get_templates() == []


def test_endpoints_made_by_podq_are_listed_too(live: LiveGateway) -> None:
    template = serverless.create_template("plain", None, handler="h.py", env={"HF_MODEL_ID": "bert"})
    serverless.create_endpoint("plain", template["id"], id="plain", gpu_ids="AMPERE_24", gpu_count=2)
    [plain] = list_inference_endpoints("*")
    assert (plain.name, plain.namespace, plain.repository, plain.framework) == ("plain", "*", "bert", "custom")
    assert plain.raw["compute"]["instanceType"] == "ampere_24"
    with pytest.raises(BadRequest, match="endpoint 'plain' was not made by create_inference_endpoint"):
        plain.update(instance_size="x4")


def test_the_public_names_are_sorted_and_importable() -> None:
    import serverless.hf

    assert serverless.hf.__all__ == sorted(serverless.hf.__all__)
    assert all(getattr(serverless.hf, name) for name in serverless.hf.__all__)


def test_a_cpu_size_the_process_backend_cannot_apply_warns(live: LiveGateway) -> None:
    with pytest.warns(UserWarning, match="instance_size='x1' is not applied: the process backend"):
        create("hf-warned")
