"""The admin functions (RunPod's signatures) and ManagedEndpoint's lifecycle methods, blocking,
against a live gateway in a background thread over real HTTP and the real Redis."""

from __future__ import annotations

import json
import threading
import time

import pytest

import serverless
from serverless import admin
from serverless.errors import (
    BadRequest,
    Conflict,
    EndpointFailed,
    EndpointTimeout,
    Forbidden,
    NotFound,
    PodqError,
)
from serverless.model import EndpointStatus
from tests.admin.conftest import LiveGateway


def echo_template() -> dict:
    return serverless.create_template("echo", None, handler="examples/echo.py", env={"N": 1})


def test_create_template_takes_runpods_arguments(live: LiveGateway) -> None:
    template = serverless.create_template(
        "sd", "me/sd:1", docker_start_cmd="python -u handler.py", container_disk_in_gb=20,
        volume_in_gb=20, volume_mount_path="/models", ports="8888/http, 22/tcp",
        env={"MODEL": "sd15", "STEPS": 30}, is_serverless=True, registry_auth_id="",
    )
    assert template["id"].startswith("tpl-")
    assert {k: template[k] for k in ("image_name", "volume_in_gb", "ports", "env")} == {
        "image_name": "me/sd:1", "volume_in_gb": 20, "ports": "8888/http,22/tcp",
        "env": {"MODEL": "sd15", "STEPS": "30"},
    }
    assert serverless.get_template(template["id"]) == template
    assert serverless.get_templates() == [template]


def test_create_endpoint_returns_a_dict_with_runpods_fields(live: LiveGateway) -> None:
    template = echo_template()
    endpoint = serverless.create_endpoint(
        "echo", template["id"], gpu_ids="AMPERE_24", network_volume_id=None, locations="",
        idle_timeout=10, scaler_type="REQUEST_COUNT", scaler_value=2, workers_min=1,
        workers_max=4, flashboot=False, allowed_cuda_versions=None, gpu_count=2,
        id="ep-echo", labels={"team": "a"}, backend="docker",
    )
    assert isinstance(endpoint, dict) and endpoint["id"] == endpoint.id == "ep-echo"
    assert json.loads(json.dumps(endpoint))["scaler_type"] == "REQUEST_COUNT"
    assert (endpoint["workers_max"], endpoint["gpu_count"]) == (4, 2)
    assert endpoint["labels"] == {"team": "a"}
    assert endpoint.status == "pending"
    assert serverless.get_endpoints() == [endpoint]
    assert serverless.get_endpoint("ep-echo") == endpoint


@pytest.mark.parametrize("call, message", [
    (lambda t: serverless.create_endpoint("x", t, network_volume_id="vol-1"),
     "network_volume_id 'vol-1' cannot be applied: podq has no network volumes"),
    (lambda t: serverless.create_endpoint("x", t, locations="US"),
     "locations 'US' cannot be applied: podq places workers on its own backend"),
    (lambda t: serverless.create_endpoint("x", t, allowed_cuda_versions="12.1"),
     "allowed_cuda_versions '12.1' cannot be applied: podq does not pick hosts by CUDA version"),
    (lambda t: serverless.create_template("x", "me/x:1", registry_auth_id="auth-1"),
     "registry_auth_id 'auth-1' cannot be applied: podq keeps no registry credentials"),
])
def test_runpod_arguments_podq_cannot_apply_are_refused_not_dropped(live: LiveGateway, call,
                                                                    message) -> None:
    template = echo_template()
    with pytest.raises(ValueError, match=message):
        call(template["id"])
    assert serverless.get_endpoints() == [] and serverless.get_templates() == [template]


def test_update_functions_and_delete(live: LiveGateway) -> None:
    endpoint = serverless.create_endpoint("echo", echo_template()["id"])
    bigger = serverless.update_endpoint(endpoint.id, workers_max=8, idle_timeout=60)
    assert (bigger["workers_max"], bigger["idle_timeout"], bigger["version"]) == (8, 60, 1)
    other = serverless.create_template("other", None, handler="other.py")
    moved = serverless.update_endpoint_template(endpoint.id, other["id"])
    assert (moved["template_id"], moved["version"]) == (other["id"], 2)
    changed = serverless.update_template(other["id"], env={"A": "b"})
    assert changed["env"] == {"A": "b"} and serverless.get_endpoint(endpoint.id)["version"] == 3
    assert serverless.delete_endpoint(endpoint.id) == {"id": endpoint.id, "deleted": True}
    assert serverless.delete_template(other["id"])["deleted"] is True
    assert serverless.get_endpoints() == []


def test_errors_quote_the_gateways_message(live: LiveGateway) -> None:
    template = echo_template()
    with pytest.raises(BadRequest, match=r"HTTP 400 from POST http://.*/v1/endpoints: "
                                         r"workers_min \(4\) is above workers_max \(3\)"):
        serverless.create_endpoint("echo", template["id"], workers_min=4)
    with pytest.raises(BadRequest, match="Object contains unknown field `colour`"):
        serverless.create_endpoint("echo", template["id"], colour="red")
    with pytest.raises(NotFound, match="endpoint 'ep-nope' not found"):
        serverless.get_endpoint("ep-nope")
    serverless.create_endpoint("echo", template["id"])
    with pytest.raises(Conflict, match="is used by endpoint"):
        serverless.delete_template(template["id"])


def test_a_key_that_is_not_the_admin_key_is_forbidden(
    live: LiveGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serverless, "api_key", "user-key", raising=False)
    with pytest.raises(Forbidden, match="needs the admin key"):
        serverless.get_endpoints()


def test_an_unreachable_gateway_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODQ_ENDPOINT_BASE_URL", "http://127.0.0.1:9/v2")
    with pytest.raises(PodqError, match=r"cannot reach the podq gateway at http://127.0.0.1:9 "):
        serverless.get_templates()


@pytest.mark.parametrize("base,root", [
    ("http://h:1/v2", "http://h:1"),
    ("http://h:1/v2/", "http://h:1"),
    ("http://h:1", "http://h:1"),
    ("https://gw.example/podq/v2", "https://gw.example/podq"),
])
def test_the_admin_root_is_the_client_base_url_without_v2(base: str, root: str) -> None:
    assert admin.admin_base_url(base) == root


def test_the_admin_root_follows_serverless_endpoint_url_base(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serverless, "endpoint_url_base", "http://elsewhere:7/v2", raising=False)
    assert admin.AdminClient.create(api_key="k").base_url == "http://elsewhere:7"


# ---- lifecycle methods -------------------------------------------------------------------


def test_pause_resume_and_scale_to_zero_write_the_registry(live: LiveGateway) -> None:
    endpoint = serverless.create_endpoint("echo", echo_template()["id"], workers_min=1)
    assert endpoint.pause() is endpoint and endpoint["paused"] is True
    assert live.run(live.registry.require_endpoint(endpoint.id)).paused
    endpoint.scale_to_zero()
    assert live.run(live.registry.scale_to_zero_requested()) == {endpoint.id}
    endpoint.resume()
    assert endpoint["paused"] is False
    assert not live.run(live.registry.require_endpoint(endpoint.id)).paused
    assert live.run(live.registry.scale_to_zero_requested()) == set()


def test_update_refresh_and_delete(live: LiveGateway) -> None:
    endpoint = serverless.create_endpoint("echo", echo_template()["id"])
    endpoint.update(workers_max=5)
    assert endpoint["workers_max"] == 5
    live.run(live.registry.set_status(endpoint.id, EndpointStatus.INITIALIZING))
    assert endpoint.status == "pending"  # as last read
    assert endpoint.refresh().status == "initializing"
    endpoint.delete()
    with pytest.raises(NotFound):
        endpoint.refresh()


def _set_status_later(live: LiveGateway, endpoint_id: str, status: EndpointStatus,
                      reason: str = "") -> threading.Timer:
    def report() -> None:
        live.run(live.registry.set_status(endpoint_id, status, reason))

    timer = threading.Timer(0.3, report)
    timer.start()
    return timer


def test_wait_returns_once_the_scaler_reports_running(live: LiveGateway) -> None:
    endpoint = serverless.create_endpoint("echo", echo_template()["id"])
    timer = _set_status_later(live, endpoint.id, EndpointStatus.RUNNING)
    started = time.monotonic()
    assert endpoint.wait(timeout=10, fetch_every=0.05) is endpoint
    assert endpoint.status == "running" and time.monotonic() - started < 5
    timer.join()


def test_wait_raises_a_timeout_error_naming_the_status(live: LiveGateway) -> None:
    endpoint = serverless.create_endpoint("echo", echo_template()["id"])
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        endpoint.wait(timeout=0.3, fetch_every=0.1)
    assert 0.3 <= time.monotonic() - started < 2
    assert isinstance(info.value, EndpointTimeout)
    assert str(info.value) == (
        f"endpoint {endpoint.id} is still 'pending' after 0.3 s; wait again with a longer "
        "timeout, or check its workers (podq endpoint get)"
    )


def test_wait_raises_when_the_endpoint_failed(live: LiveGateway) -> None:
    endpoint = serverless.create_endpoint("echo", echo_template()["id"])
    timer = _set_status_later(live, endpoint.id, EndpointStatus.FAILED, "image 'x' not found")
    with pytest.raises(EndpointFailed, match=f"endpoint {endpoint.id} failed: image 'x' not found"):
        endpoint.wait(timeout=10, fetch_every=0.05)
    timer.join()
