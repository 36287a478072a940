"""Every /v1 admin route over real HTTP against the real Redis: replies, errors, auth."""

from __future__ import annotations

from typing import Any

import pytest

from serverless import keys
from serverless.model import EndpointStatus
from serverless.registry import Registry
from serverless.store import JobStore
from tests.conftest import register
from tests.gateway.conftest import Gateway, GatewayFactory

TEMPLATE = {"name": "echo", "handler": "examples/echo.py", "env": {"MODEL": "tiny"}}


async def make_template(gateway: Gateway, **fields: Any) -> dict[str, Any]:
    answer = await gateway.call("POST", "/v1/templates", json={**TEMPLATE, **fields})
    assert answer.status == 200, answer.body
    return answer.body


async def make_endpoint(gateway: Gateway, **fields: Any) -> dict[str, Any]:
    template_id = fields.pop("template_id", None) or (await make_template(gateway))["id"]
    body = {"name": "echo", "template_id": template_id, **fields}
    answer = await gateway.call("POST", "/v1/endpoints", json=body)
    assert answer.status == 200, answer.body
    return answer.body


# ---- templates ---------------------------------------------------------------------------


async def test_create_template_answers_every_field_with_defaults(gateway: Gateway) -> None:
    body = await make_template(gateway)
    assert body["id"].startswith("tpl-") and body["created_at"] > 0
    assert body | {"id": "x", "created_at": 0} == {
        "id": "x", "name": "echo", "image_name": "", "docker_start_cmd": None,
        "handler": "examples/echo.py", "protocol": "podq", "env": {"MODEL": "tiny"},
        "container_disk_in_gb": 10,
        "volume_in_gb": 0, "volume_mount_path": None, "ports": None, "is_serverless": True,
        "created_at": 0,
    }


async def test_templates_can_be_listed_fetched_and_deleted(gateway: Gateway) -> None:
    first = await make_template(gateway, name="b-second")
    second = await make_template(gateway, name="a-first", id="tpl-mine")
    listed = await gateway.call("GET", "/v1/templates")
    assert [t["id"] for t in listed.body] == ["tpl-mine", first["id"]]  # by name
    assert (await gateway.call("GET", "/v1/templates/tpl-mine")).body == second
    deleted = await gateway.call("DELETE", "/v1/templates/tpl-mine")
    assert deleted.status == 200 and deleted.body == {"id": "tpl-mine", "deleted": True}
    gone = await gateway.call("GET", "/v1/templates/tpl-mine")
    assert gone.status == 404
    assert gone.body == {
        "error": "template 'tpl-mine' not found; list them with `podq template list`"
    }


@pytest.mark.parametrize("body,message", [
    ({"name": "x"}, "template 'x' runs nothing: give image_name (docker), handler (a handler "
                    "file) or docker_start_cmd"),
    ({"name": "x", "handler": "h.py", "docker_start_cmd": "python -u other.py"},
     "template 'x' sets both handler and docker_start_cmd: the command replaces `python -m worker "
     "<handler>`, so the handler would never run; drop one (a command that starts a podq worker "
     "names its handler itself)"),
    ({"name": "x", "handler": "h.py", "volume_in_gb": -1},
     "volume_in_gb of template 'x' is -1; use 0 or more"),
    ({"name": "bad/name", "handler": "h.py"},
     "template name 'bad/name' is invalid: use 1-128 letters, digits, ' _.:-'"),
    ({"name": "x", "handler": "h.py", "id": "no spaces"},
     "template id 'no spaces' is invalid: use 1-128 letters, digits, '_.:-'"),
    ({"name": "x", "handler": "h.py", "image": "typo"},
     "invalid request body: Object contains unknown field `image`"),
    ({"handler": "h.py"}, "invalid request body: Object missing required field `name`"),
    ({"name": "x", "handler": "h.py", "env": {"N": 1}},
     "invalid request body: Expected `str`, got `int` - at `$.env[...]`"),
])
async def test_invalid_templates_get_400_with_a_clear_message(
    gateway: Gateway, body: dict[str, Any], message: str
) -> None:
    answer = await gateway.call("POST", "/v1/templates", json=body)
    assert (answer.status, answer.body) == (400, {"error": message})
    assert (await gateway.call("GET", "/v1/templates")).body == []


async def test_a_taken_template_id_is_409(gateway: Gateway) -> None:
    await make_template(gateway, id="tpl-1")
    again = await gateway.call("POST", "/v1/templates", json={**TEMPLATE, "id": "tpl-1"})
    assert again.status == 409
    assert again.body["error"] == (
        "template 'tpl-1' already exists; change it with PATCH /v1/templates/tpl-1 "
        "or leave `id` out to get a new one"
    )


async def test_deleting_a_template_in_use_is_409_and_unknown_is_404(gateway: Gateway) -> None:
    endpoint = await make_endpoint(gateway, id="ep-user")
    answer = await gateway.call("DELETE", f"/v1/templates/{endpoint['template_id']}")
    assert answer.status == 409
    assert answer.body["error"] == (
        f"template '{endpoint['template_id']}' is used by endpoint(s) ep-user; "
        "delete them or move them to another template first"
    )
    missing = await gateway.call("DELETE", "/v1/templates/tpl-nope")
    assert missing.status == 404 and missing.body == {"error": "template 'tpl-nope' not found"}


async def test_changing_a_template_rolls_the_endpoints_that_use_it(gateway: Gateway) -> None:
    template = await make_template(gateway)
    user = await make_endpoint(gateway, template_id=template["id"], name="user")
    other = await make_endpoint(gateway, name="other")
    path = f"/v1/templates/{template['id']}"
    changed = await gateway.call("PATCH", path, json={"env": {"MODEL": "big"}})
    assert changed.status == 200 and changed.body["env"] == {"MODEL": "big"}
    assert changed.body["handler"] == "examples/echo.py"  # fields not given are kept
    same = await gateway.call("PATCH", path, json={"env": {"MODEL": "big"}})  # no change
    assert same.status == 200
    versions = {e["name"]: e["version"] for e in (await gateway.call("GET", "/v1/endpoints")).body}
    assert versions == {"user": user["version"] + 1, "other": other["version"]}


async def test_template_patch_errors(gateway: Gateway) -> None:
    template = await make_template(gateway)
    path = f"/v1/templates/{template['id']}"
    bad = await gateway.call("PATCH", path, json={"container_disk_in_gb": -5})
    assert bad.status == 400
    assert bad.body == {"error": "container_disk_in_gb of template 'echo' is -5; use 0 or more"}
    assert (await gateway.call("GET", path)).body == template  # nothing was written
    missing = await gateway.call("PATCH", "/v1/templates/tpl-nope", json={"name": "x"})
    assert missing.status == 404


# ---- endpoints ---------------------------------------------------------------------------


async def test_create_endpoint_answers_every_field_with_runpods_defaults(gateway: Gateway) -> None:
    body = await make_endpoint(gateway)
    assert body["id"].startswith("ep-") and body["created_at"] == body["updated_at"] > 0
    assert body | {"id": "x", "template_id": "t", "created_at": 0, "updated_at": 0} == {
        "id": "x", "name": "echo", "template_id": "t", "gpu_ids": "ANY", "gpu_count": 1,
        "workers_min": 0, "workers_max": 3, "idle_timeout": 5, "scaler_type": "QUEUE_DELAY",
        "scaler_value": 4.0, "execution_timeout_ms": 600000, "cpus": 0.0, "memory_gb": 0.0,
        "flashboot": False, "labels": {},
        "backend": "process", "paused": False, "rate_limits": None, "access": "protected", "webhook": None,
        "version": 1,
        "status": "pending", "status_reason": "", "created_at": 0, "updated_at": 0,
    }


async def test_create_endpoint_with_its_own_id_and_settings(
    gateway: Gateway, registry: Registry
) -> None:
    body = await make_endpoint(
        gateway, id="ep-mine", scaler_type="REQUEST_COUNT", scaler_value=2, workers_min=1,
        gpu_ids="AMPERE_24,L4", labels={"team": "a"}, backend="docker", cpus=0.5, memory_gb=8,
    )
    stored = await registry.require_endpoint("ep-mine")
    assert (stored.cpus, stored.memory_gb) == (0.5, 8.0)
    assert stored.scaler_type == "REQUEST_COUNT" and stored.gpu_ids == "AMPERE_24,L4"
    assert (body["id"], body["workers_min"], body["labels"]) == ("ep-mine", 1, {"team": "a"})
    again = await gateway.call("POST", "/v1/endpoints", json={
        "name": "x", "template_id": body["template_id"], "id": "ep-mine"})
    assert again.status == 409
    assert again.body["error"].startswith("endpoint 'ep-mine' already exists; change it with PATCH")


@pytest.mark.parametrize("fields,message", [
    ({"workers_min": 5, "workers_max": 2}, "workers_min (5) is above workers_max (2)"),
    ({"scaler_type": "FASTEST"}, "unknown scaler_type 'FASTEST'; use QUEUE_DELAY or REQUEST_COUNT"),
    ({"idle_timeout": -1}, "idle_timeout is -1; it cannot be negative"),
    ({"scaler_value": 0}, "scaler_value is 0.0; it must be above 0"),
    ({"execution_timeout_ms": 0}, "execution_timeout_ms is 0; use 1..604800000 (7 days; RunPod's "
                                  "default is 600000). podq has no disabled timeout: 0 would end "
                                  "every job at once, so for a long-running endpoint set the 7-day "
                                  "maximum"),
    ({"execution_timeout_ms": 604_800_001}, "execution_timeout_ms is 604800001; use "
                                            "1..604800000 (7 days; RunPod's default is 600000). "
                                            "podq has no disabled timeout: 0 would end every job "
                                            "at once, so for a long-running endpoint set the "
                                            "7-day maximum"),
    ({"template_id": "tpl-nope"},
     "template 'tpl-nope' does not exist; create it first (create_template)"),
    ({"gpu_ids": "AMPERE_99"}, "unknown GPU pool 'AMPERE_99' in gpu_ids; use ANY, a GPU name or "
                               "one of ADA_24, ADA_32_PRO, ADA_48_PRO, ADA_80_PRO, AMPERE_16, "
                               "AMPERE_24, AMPERE_48, AMPERE_80, BLACKWELL_180, BLACKWELL_96, "
                               "HOPPER_141"),
    ({"cpus": -1}, "cpus is -1.0; use 0 (no limit) or more"),
    ({"memory_gb": 4}, "cpus and memory_gb limit a worker's container; the process backend cannot "
                       "apply them: set backend to docker, swarm or kubernetes, or set them to 0"),
    ({"id": "a b"}, "endpoint id 'a b' is invalid: use 1-128 letters, digits, '_.:-'"),
    ({"workers_max": "3"}, "invalid request body: Expected `int`, got `str` - at `$.workers_max`"),
    ({"version": 7}, "invalid request body: Object contains unknown field `version`"),
    ({"status": "running"}, "invalid request body: Object contains unknown field `status`"),
])
async def test_invalid_endpoint_settings_get_400_with_the_registrys_message(
    gateway: Gateway, fields: dict[str, Any], message: str
) -> None:
    template = await make_template(gateway)
    body = {"name": "echo", "template_id": template["id"], **fields}
    answer = await gateway.call("POST", "/v1/endpoints", json=body)
    assert (answer.status, answer.body) == (400, {"error": message})
    assert (await gateway.call("GET", "/v1/endpoints")).body == []


async def test_missing_and_malformed_bodies_are_400(gateway: Gateway) -> None:
    missing = await gateway.call("POST", "/v1/endpoints", json={"name": "x"})
    assert missing.body == {
        "error": "invalid request body: Object missing required field `template_id`"
    }
    broken = await gateway.call("POST", "/v1/endpoints", data=b"{not json")
    assert broken.status == 400
    assert broken.body["error"].startswith("invalid request body: JSON is malformed")


async def test_list_and_get_show_the_registrys_status(gateway: Gateway, registry: Registry) -> None:
    a = await make_endpoint(gateway, name="a")
    b = await make_endpoint(gateway, name="b", template_id=a["template_id"])
    await registry.set_status(a["id"], EndpointStatus.FAILED, "image 'x' not found")
    listed = (await gateway.call("GET", "/v1/endpoints")).body
    assert [(e["id"], e["status"]) for e in listed] == [(a["id"], "failed"), (b["id"], "pending")]
    got = (await gateway.call("GET", f"/v1/endpoints/{a['id']}")).body
    assert (got["status"], got["status_reason"]) == ("failed", "image 'x' not found")
    missing = await gateway.call("GET", "/v1/endpoints/ep-nope")
    assert missing.status == 404
    assert missing.body == {
        "error": "endpoint 'ep-nope' not found; list them with `podq endpoint list`"
    }


async def test_patch_changes_fields_and_bumps_version_only_for_a_new_template(
    gateway: Gateway, registry: Registry
) -> None:
    endpoint = await make_endpoint(gateway)
    await registry.set_status(endpoint["id"], EndpointStatus.RUNNING)
    path = f"/v1/endpoints/{endpoint['id']}"
    scaled = (await gateway.call("PATCH", path, json={"workers_max": 6, "labels": {"a": "b"}})).body
    assert (scaled["workers_max"], scaled["labels"], scaled["version"]) == (6, {"a": "b"}, 1)
    assert scaled["status"] == "running" and scaled["updated_at"] >= endpoint["updated_at"]
    other = await make_template(gateway, name="other")
    moved = (await gateway.call("PATCH", path, json={"template_id": other["id"]})).body
    assert (moved["template_id"], moved["version"]) == (other["id"], 2)
    raw = await registry.redis.hget(keys.REGISTRY_ENDPOINTS, endpoint["id"])
    assert b'"status"' not in raw  # the status lives apart and is merged on reads


async def test_patch_errors_leave_the_endpoint_as_it_was(gateway: Gateway) -> None:
    endpoint = await make_endpoint(gateway)
    path = f"/v1/endpoints/{endpoint['id']}"
    bad = await gateway.call("PATCH", path, json={"workers_min": 9})
    assert (bad.status, bad.body) == (400, {"error": "workers_min (9) is above workers_max (3)"})
    unknown = await gateway.call("PATCH", path, json={"template_id": "tpl-nope"})
    assert unknown.status == 400
    assert (await gateway.call("GET", path)).body == endpoint
    missing = await gateway.call("PATCH", "/v1/endpoints/ep-nope", json={"workers_max": 1})
    assert missing.status == 404


async def test_pause_resume_and_scale_to_zero_write_the_registry(
    gateway: Gateway, registry: Registry
) -> None:
    endpoint = await make_endpoint(gateway, workers_min=1)
    base = f"/v1/endpoints/{endpoint['id']}"
    paused = await gateway.call("POST", f"{base}/pause")
    assert paused.status == 200 and paused.body["paused"] is True
    assert (await registry.require_endpoint(endpoint["id"])).paused
    zero = await gateway.call("POST", f"{base}/scale-to-zero")
    assert zero.status == 200 and zero.body["id"] == endpoint["id"]
    assert await registry.scale_to_zero_requested() == {endpoint["id"]}
    resumed = await gateway.call("POST", f"{base}/resume")
    assert resumed.body["paused"] is False and resumed.body["version"] == 1
    assert await registry.scale_to_zero_requested() == set()
    for action in ("pause", "resume", "scale-to-zero"):
        missing = await gateway.call("POST", f"/v1/endpoints/ep-nope/{action}")
        assert missing.status == 404, action


async def test_delete_endpoint(gateway: Gateway, registry: Registry) -> None:
    endpoint = await make_endpoint(gateway)
    await gateway.call("POST", f"/v1/endpoints/{endpoint['id']}/scale-to-zero")
    logs, recent = keys.logs(endpoint["id"]), keys.RECENT.format(endpoint["id"])
    await registry.redis.xadd(logs, {"line": "hello"})
    await registry.redis.zadd(recent, {"job-1": 1})
    deleted = await gateway.call("DELETE", f"/v1/endpoints/{endpoint['id']}")
    assert deleted.body == {"id": endpoint["id"], "deleted": True}
    assert await registry.get_endpoint(endpoint["id"]) is None
    assert await registry.redis.exists(logs, recent) == 0  # its log lines and recent-jobs list went too
    assert await registry.scale_to_zero_requested() == set()
    again = await gateway.call("DELETE", f"/v1/endpoints/{endpoint['id']}")
    assert again.status == 404
    # its template is free again
    assert (await gateway.call("DELETE", f"/v1/templates/{endpoint['template_id']}")).status == 200


# ---- auth and the API description --------------------------------------------------------


async def test_admin_routes_need_the_admin_key(make_gateway: GatewayFactory, store: JobStore) -> None:
    await register(store, "ep-x")
    gateway = await make_gateway(api_keys=("user-key",))
    none = await gateway.call("GET", "/v1/endpoints", auth=False)
    assert none.status == 401
    wrong = await gateway.call(
        "GET", "/v1/endpoints", headers={"Authorization": "Bearer nope"}, auth=False
    )
    assert wrong.status == 401
    user = await gateway.call("POST", "/v1/templates", json=TEMPLATE,
                              headers={"Authorization": "Bearer user-key"}, auth=False)
    assert user.status == 403
    assert user.body == {"error": "POST /v1/templates needs the admin key (the gateway's "
                                  "PODQ_API_KEY); this key is valid for the /v2 job routes only"}
    job_route = await gateway.call("GET", "/v2/ep-x/health", auth=False,
                                   headers={"Authorization": "user-key"})
    assert job_route.status == 200  # the same key still works where it should


async def test_without_an_admin_key_the_admin_api_is_off(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(admin_key="", api_keys=("user-key",))
    answer = await gateway.call("GET", "/v1/templates", auth=False,
                                headers={"Authorization": "Bearer user-key"})
    assert answer.status == 403
    assert answer.body == {"error": "GET /v1/templates is off: this gateway has no admin key; "
                                    "start it with PODQ_API_KEY set to enable the /v1 admin API"}


async def test_openapi_documents_the_admin_routes(gateway: Gateway) -> None:
    spec = (await gateway.call("GET", "/openapi.json", auth=False)).body
    paths = spec["paths"]
    assert {
        "/v1/templates": {"get", "post"}, "/v1/templates/{template_id}": {"get", "patch", "delete"},
        "/v1/endpoints": {"get", "post"},
        "/v1/endpoints/{endpoint_id}": {"get", "patch", "delete"},
        "/v1/endpoints/{endpoint_id}/pause": {"post"},
        "/v1/endpoints/{endpoint_id}/resume": {"post"},
        "/v1/endpoints/{endpoint_id}/scale-to-zero": {"post"},
        "/v1/endpoints/{endpoint_id}/logs": {"get"},
        "/v1/keys": {"get", "post"}, "/v1/keys/{digest}": {"delete"},
        # Scale Launch's model bundles (serverless/gateway/bundle_routes.py)
        "/v1/bundles": {"get", "post"}, "/v1/bundles/{bundle_id}": {"get", "delete"},
        "/v1/bundles/{bundle_id}/archive": {"get"},
        # batch jobs (serverless/gateway/batch_routes.py)
        "/v1/batches": {"get", "post"}, "/v1/batches/{batch_id}": {"get", "delete"},
        "/v1/batches/{batch_id}/results": {"get"}, "/v1/batches/{batch_id}/cancel": {"post"},
        "/v1/batches/{batch_id}/retry": {"post"},
    } == {p: set(ops) for p, ops in paths.items() if p.startswith("/v1")}
    create = paths["/v1/endpoints"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EndpointBody"}
    assert {"200", "400", "401", "403", "409"} <= set(create["responses"])
    body = spec["components"]["schemas"]["EndpointBody"]
    assert body["required"] == ["name", "template_id"]
    assert body["properties"]["scaler_type"]["enum"] == ["QUEUE_DELAY", "REQUEST_COUNT"]
    # a key scoped to other endpoints gets 403 on /v2 routes too
    assert "403" in paths["/v2/{endpoint_id}/run"]["post"]["responses"]
    assert "403" not in paths["/healthz"]["get"]["responses"]
