"""RunPod's GraphQL fields <-> podq's registry fields (serverless/graphql/mapping.py): tables."""

from __future__ import annotations

from typing import Any

import pytest

from serverless.errors import BadRequest
from serverless.graphql.mapping import (
    endpoint_changes, endpoint_fields, env_dict, gpu_types, iso_time, template_changes,
    template_fields,
)
from serverless.model import EndpointConfig, ScalerType, Template

# what runpod.create_template("sd", "me/sd:1") sends (runpod/api/mutations/templates.py)
RUNPOD_TEMPLATE = {
    "name": "sd", "imageName": "me/sd:1", "dockerArgs": "", "containerDiskInGb": 10,
    "volumeInGb": 0, "ports": "", "env": [], "isServerless": False,
    "containerRegistryAuthId": "", "startSsh": True, "isPublic": False, "readme": "",
}
# what runpod.create_endpoint("sd", "tpl-1") sends (runpod/api/mutations/endpoints.py)
RUNPOD_ENDPOINT = {
    "name": "sd", "templateId": "tpl-1", "gpuIds": "AMPERE_16", "networkVolumeId": "",
    "locations": "", "idleTimeout": 5, "scalerType": "QUEUE_DELAY", "scalerValue": 4,
    "workersMin": 0, "workersMax": 3, "gpuCount": 1,
}


@pytest.mark.parametrize("given,expected", [
    # the package's defaults: "" means not set, the pod-only flags ask for nothing
    (RUNPOD_TEMPLATE, {"name": "sd", "image_name": "me/sd:1", "docker_start_cmd": None,
                       "container_disk_in_gb": 10, "volume_in_gb": 0, "ports": None, "env": {},
                       "is_serverless": False}),
    # dockerArgs is the command the worker runs; env pairs become a dict
    ({"name": "a", "imageName": "i", "dockerArgs": "python -u handler.py",
      "env": [{"key": "MODEL", "value": "sd"}, {"key": "X", "value": ""}]},
     {"name": "a", "image_name": "i", "docker_start_cmd": "python -u handler.py",
      "env": {"MODEL": "sd", "X": ""}}),
    # ports and the volume path are kept as given; null is "not given"; id is not a setting
    ({"id": "tpl-1", "name": "a", "imageName": "i", "ports": "8888/http", "volumeMountPath": "/data",
      "volumeInGb": None},
     {"name": "a", "image_name": "i", "ports": "8888/http", "volume_mount_path": "/data"}),
    # startSsh has no effect on serverless workers, true or false
    ({"name": "a", "imageName": "i", "startSsh": False}, {"name": "a", "image_name": "i"}),
])
def test_template_input_becomes_podq_fields(given: dict[str, Any], expected: dict[str, Any]) -> None:
    assert template_changes(given) == expected


@pytest.mark.parametrize("given,message", [
    ({"containerRegistryAuthId": "ra-1"},
     "containerRegistryAuthId 'ra-1' cannot be applied: podq keeps no registry credentials"),
    ({"isPublic": True}, "isPublic True cannot be applied: podq templates are private to this "
                         "installation; leave isPublic out or set it to false"),
    ({"readme": "# hi"}, "readme '# hi' cannot be applied: podq templates carry no readme; "
                         "leave readme out or set it to an empty string"),
    ({"env": [{"key": "A", "value": "1"}, {"key": "A", "value": "2"}]},
     "env key 'A' is given twice; give each variable once"),
])
def test_template_settings_podq_cannot_apply_are_refused(given: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest, match="^" + message.replace("(", r"\(")):
        template_changes({"name": "a", "imageName": "i", **given})


@pytest.mark.parametrize("given,expected", [
    (RUNPOD_ENDPOINT, {"name": "sd", "template_id": "tpl-1", "gpu_ids": "AMPERE_16",
                       "idle_timeout": 5, "scaler_type": "QUEUE_DELAY", "scaler_value": 4,
                       "workers_min": 0, "workers_max": 3, "gpu_count": 1}),
    # flashboot=True sends the enum FLASHBOOT; RunPod's OFF turns it off
    ({"name": "a", "templateId": "t", "flashBootType": "FLASHBOOT"},
     {"name": "a", "template_id": "t", "flashboot": True}),
    ({"name": "a", "templateId": "t", "flashBootType": "OFF", "executionTimeoutMs": 5000},
     {"name": "a", "template_id": "t", "flashboot": False, "execution_timeout_ms": 5000}),
    # an update names the endpoint by id; it is not a field to set
    ({"id": "ep-1", "name": "a", "templateId": "t", "workersMax": 0},
     {"name": "a", "template_id": "t", "workers_max": 0}),
])
def test_endpoint_input_becomes_podq_fields(given: dict[str, Any], expected: dict[str, Any]) -> None:
    assert endpoint_changes(given) == expected


@pytest.mark.parametrize("field,value,why", [
    ("networkVolumeId", "vol-1", "podq has no network volumes"),
    ("locations", "US", "podq places workers on its own backend"),
    ("allowedCudaVersions", "12.4", "podq does not pick hosts by CUDA version"),
])
def test_endpoint_settings_podq_cannot_apply_are_refused(field: str, value: str, why: str) -> None:
    with pytest.raises(BadRequest, match=f"^{field} '{value}' cannot be applied: {why}.*"
                                         f"leave {field} out or set it to an empty string$"):
        endpoint_changes({**RUNPOD_ENDPOINT, field: value})


def test_env_pairs_become_a_dict() -> None:
    assert env_dict([{"key": "B", "value": "2"}, {"key": "A", "value": "1"}]) == {"B": "2", "A": "1"}


def test_a_template_reads_as_runpods_pod_template() -> None:
    t = Template(id="tpl-1", name="sd", image_name="me/sd:1", env={"B": "2", "A": "1"})
    assert template_fields(t) == {
        "id": "tpl-1", "name": "sd", "imageName": "me/sd:1", "dockerArgs": "",
        "containerDiskInGb": 10, "volumeInGb": 0, "volumeMountPath": None, "ports": "",
        "env": [{"key": "A", "value": "1"}, {"key": "B", "value": "2"}], "isServerless": True,
    }


def test_an_endpoint_reads_as_runpods_endpoint() -> None:
    e = EndpointConfig(id="ep-1", name="sd", template_id="tpl-1", gpu_ids="ADA_24", workers_max=2,
                       scaler_type=ScalerType.REQUEST_COUNT, scaler_value=2, flashboot=True,
                       version=3, created_at=1_700_000_000_123)
    assert endpoint_fields(e, {"K": "v"}) == {
        "id": "ep-1", "name": "sd", "templateId": "tpl-1", "gpuIds": "ADA_24", "gpuCount": 1,
        "idleTimeout": 5, "scalerType": "REQUEST_COUNT", "scalerValue": 2, "workersMin": 0,
        "workersMax": 2, "executionTimeoutMs": 600_000, "flashBootType": "FLASHBOOT",
        "version": 3, "env": [{"key": "K", "value": "v"}], "createdAt": "2023-11-14T22:13:20.123Z",
    }


@pytest.mark.parametrize("ms,expected", [(0, None), (1_000, "1970-01-01T00:00:01.000Z")])
def test_timestamps_are_iso_utc(ms: int, expected: str | None) -> None:
    assert iso_time(ms) == expected


@pytest.mark.parametrize("gpu_id,expected", [
    ("H200", [{"id": "H200", "displayName": "H200", "manufacturer": "Nvidia", "memoryInGb": 141}]),
    ("RTX 5090", [{"id": "RTX 5090", "displayName": "RTX 5090", "manufacturer": "Nvidia", "memoryInGb": 32}]),
    ("NVIDIA GeForce RTX 3070", []),  # not a model of any pool: RunPod answers an empty list
])
def test_gpu_types_come_from_the_pools(gpu_id: str, expected: list[dict[str, Any]]) -> None:
    assert gpu_types(gpu_id) == expected


def test_every_pool_model_is_one_gpu_type() -> None:
    ids = [g["id"] for g in gpu_types()]
    assert ids == sorted(set(ids)) and {"A100", "H100", "L4", "RTX 4090"} <= set(ids)
