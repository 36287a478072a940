"""POST /graphql on a real gateway: what it answers, refuses, and writes into the registry.

GraphQL errors are 200 with `errors` (what RunPod's client parses); a body that is not a
GraphQL request is a 400, a missing or wrong key a 401, a non-admin key a 403, all JSON.
"""

from __future__ import annotations

import pytest

from serverless.model import EndpointConfig, Template, WorkerProtocol
from serverless.registry import Registry
from serverless.store import JobStore
from tests.gateway.conftest import ADMIN_KEY, GatewayFactory
from tests.graphql.conftest import Post

SAVE_TEMPLATE = """mutation { saveTemplate(input: {
  name: "sd", imageName: "me/sd:1", dockerArgs: "python -u handler.py", containerDiskInGb: 10,
  volumeInGb: 0, ports: "", env: [{ key: "MODEL", value: "sd" }], isServerless: true,
  containerRegistryAuthId: "", startSsh: true, isPublic: false, readme: "" })
  { id name imageName dockerArgs env { key value } isServerless } }"""
SAVE_ENDPOINT = """mutation($input: EndpointInput!) { saveEndpoint(input: $input)
  { id name templateId gpuIds workersMin workersMax scalerType scalerValue flashBootType version } }"""


async def _template(graphql: Post) -> str:
    answer = await graphql(SAVE_TEMPLATE)
    assert answer.status == 200 and "errors" not in answer.body, answer.body
    return answer.body["data"]["saveTemplate"]["id"]


def _message(answer) -> str:
    assert answer.status == 200, answer.body
    return answer.body["errors"][0]["message"]


async def test_save_template_and_endpoint_write_the_registry(graphql: Post, store: JobStore) -> None:
    answer = await graphql(SAVE_TEMPLATE)
    saved = answer.body["data"]["saveTemplate"]
    assert saved == {"id": saved["id"], "name": "sd", "imageName": "me/sd:1",
                     "dockerArgs": "python -u handler.py", "env": [{"key": "MODEL", "value": "sd"}],
                     "isServerless": True}
    template = await Registry(store.redis).get_template(saved["id"])
    assert template.protocol is WorkerProtocol.RUNPOD and template.env == {"MODEL": "sd"}
    endpoint = {"name": "sd", "templateId": saved["id"], "gpuIds": "ANY", "workersMax": 2,
                "scalerType": "REQUEST_COUNT", "scalerValue": 2, "flashBootType": "OFF"}
    answer = await graphql(SAVE_ENDPOINT, {"input": endpoint})
    assert "errors" not in answer.body, answer.body
    made = answer.body["data"]["saveEndpoint"]
    assert made == {"id": made["id"], "name": "sd", "templateId": saved["id"], "gpuIds": "ANY",
                    "workersMin": 0, "workersMax": 2, "scalerType": "REQUEST_COUNT",
                    "scalerValue": 2.0, "flashBootType": "OFF", "version": 1}
    stored = await Registry(store.redis).get_endpoint(made["id"])
    assert (stored.workers_max, stored.scaler_value, stored.flashboot) == (2, 2.0, False)


async def test_save_endpoint_with_an_id_changes_it_and_a_new_template_rolls_it(
    graphql: Post, store: JobStore
) -> None:
    registry = Registry(store.redis)
    await registry.put_template(Template(id="t-a", name="a", handler="a.py"))
    await registry.put_template(Template(id="t-b", name="b", handler="b.py"))
    await registry.put_endpoint(EndpointConfig(id="ep-x", name="x", template_id="t-a"))
    answer = await graphql(SAVE_ENDPOINT, {"input": {"id": "ep-x", "name": "x", "templateId": "t-a",
                                                     "workersMax": 5}})
    assert answer.body["data"]["saveEndpoint"]["workersMax"] == 5
    assert answer.body["data"]["saveEndpoint"]["version"] == 1
    answer = await graphql('mutation { updateEndpointTemplate(input: {templateId: "t-b", '
                           'endpointId: "ep-x"}) { id templateId version } }')
    assert answer.body["data"] == {"updateEndpointTemplate": {"id": "ep-x", "templateId": "t-b", "version": 2}}


async def test_get_endpoints_query_answers_every_field_the_package_selects(graphql: Post, store: JobStore) -> None:
    registry = Registry(store.redis)
    await registry.put_template(Template(id="t-a", name="a", handler="a.py", env={"K": "v"}))
    await registry.put_endpoint(EndpointConfig(id="ep-x", name="x", template_id="t-a", created_at=1000))
    from runpod.api.queries.endpoints import QUERY_ENDPOINT  # the package's own query

    answer = await graphql(QUERY_ENDPOINT)
    [endpoint] = answer.body["data"]["myself"]["endpoints"]
    assert endpoint["id"] == "ep-x" and endpoint["env"] == [{"key": "K", "value": "v"}]
    assert endpoint["createdAt"] == "1970-01-01T00:00:01.000Z"
    assert {endpoint[k] for k in ("aiKey", "networkVolume", "networkVolumeId", "userId")} == {None}


async def test_registry_validation_becomes_a_graphql_error_with_its_message(graphql: Post) -> None:
    template_id = await _template(graphql)
    answer = await graphql(SAVE_ENDPOINT, {"input": {"name": "x", "templateId": template_id,
                                                     "workersMin": 5, "workersMax": 1}})
    assert answer.body["data"] == {"saveEndpoint": None}
    assert answer.body["errors"] == [{"message": "workers_min (5) is above workers_max (1)",
                                      "locations": [{"line": 1, "column": 36}], "path": ["saveEndpoint"]}]
    answer = await graphql(SAVE_ENDPOINT, {"input": {"name": "x", "templateId": "nope"}})
    assert _message(answer) == "template 'nope' does not exist; create it first (create_template)"
    answer = await graphql(SAVE_ENDPOINT, {"input": {"name": "x", "templateId": template_id,
                                                     "scalerType": "FAST"}})
    assert _message(answer) == "unknown scaler_type 'FAST'; use QUEUE_DELAY or REQUEST_COUNT"
    # runpod.create_endpoint(..., flashboot=True) sends flashBootType: FLASHBOOT
    answer = await graphql(SAVE_ENDPOINT, {"input": {"name": "x", "templateId": template_id,
                                                     "flashBootType": "FLASHBOOT"}})
    assert _message(answer).startswith("flashboot is not available: podq has no warm paused workers")


async def test_settings_podq_cannot_apply_are_graphql_errors_naming_them(graphql: Post) -> None:
    template_id = await _template(graphql)
    answer = await graphql(SAVE_ENDPOINT, {"input": {"name": "x", "templateId": template_id,
                                                     "networkVolumeId": "vol-1"}})
    assert _message(answer).startswith("networkVolumeId 'vol-1' cannot be applied: podq has no network volumes")


@pytest.mark.parametrize("query,message", [
    ("{ myself { pods { id } } }", "User.pods is not served: podq serves no pods: it runs "
     "serverless endpoints only; create one with create_template and create_endpoint, then call "
     "runpod.Endpoint(id)"),
    ('mutation { podStop(input: {podId: "p"}) { id } }', "Mutation.podStop is not served: podq serves no pods"),
    ("{ myself { id pubKey networkVolumes { id } } }", "User.id is not served: podq has no user accounts"),
    ('mutation { deleteRegistryAuth(registryAuthId: "r") }',
     "Mutation.deleteRegistryAuth is not served: podq keeps no container registry credentials"),
    ("{ myself { endpoints { id podsCount } } }", "Cannot query field 'podsCount' on type 'Endpoint'."),
    ('mutation { saveEndpoint(input: {name: "a", templateId: "t", colour: "red"}) { id } }',
     "Expected value of type 'EndpointInput' not to include unknown field 'colour'"),
    ("{ myself { endpoints { id } }", "Syntax Error: Expected Name, found <EOF>."),
])
async def test_unsupported_fields_get_a_graphql_error_that_names_them(
    graphql: Post, query: str, message: str
) -> None:
    answer = await graphql(query)
    assert "data" not in answer.body
    assert _message(answer).startswith(message)


async def test_delete_endpoint_and_delete_template_by_name(graphql: Post, store: JobStore) -> None:
    template_id = await _template(graphql)
    answer = await graphql(SAVE_ENDPOINT, {"input": {"name": "x", "templateId": template_id}})
    endpoint_id = answer.body["data"]["saveEndpoint"]["id"]
    in_use = await graphql('mutation { deleteTemplate(templateName: "sd") }')
    assert _message(in_use) == (f"template {template_id!r} is used by endpoint(s) {endpoint_id}; "
                                "delete them or move them to another template first")
    assert (await graphql(f'mutation {{ deleteEndpoint(id: "{endpoint_id}") }}')).body == {
        "data": {"deleteEndpoint": None}}
    assert (await graphql('mutation { deleteTemplate(templateName: "sd") }')).body == {
        "data": {"deleteTemplate": None}}
    registry = Registry(store.redis)
    assert await registry.endpoints() == [] and await registry.templates() == []
    gone = await graphql(f'mutation {{ deleteEndpoint(id: "{endpoint_id}") }}')
    assert _message(gone) == f"endpoint {endpoint_id!r} not found"


async def test_template_names_are_unique_as_on_runpod(graphql: Post) -> None:
    template_id = await _template(graphql)
    assert _message(await graphql(SAVE_TEMPLATE)) == (
        f"template name 'sd' is taken by template {template_id!r}: pick another name, or pass "
        f'id: "{template_id}" to change that template')
    changed = await graphql(SAVE_TEMPLATE.replace('name: "sd"', f'id: "{template_id}", name: "sd"')
                            .replace("python -u handler.py", "python -u other.py"))
    assert changed.body["data"]["saveTemplate"]["dockerArgs"] == "python -u other.py"


async def test_gpu_types_list_the_pools_models(graphql: Post) -> None:
    from runpod.api.queries.gpus import generate_gpu_query  # the package's own get_gpu query

    answer = await graphql(generate_gpu_query("H100", 2))
    [gpu] = answer.body["data"]["gpuTypes"]
    assert (gpu["id"], gpu["memoryInGb"], gpu["securePrice"], gpu["lowestPrice"]) == ("H100", 80, None, None)


@pytest.mark.parametrize("body,message", [
    (b"not json", "invalid request body: JSON is malformed: invalid character (byte 4)"),
    (b"{}", "invalid request body: Object missing required field `query`"),
    (b'{"query": "{ myself { endpoints { id } } }", "extra": 1}',
     "invalid request body: Object contains unknown field `extra`"),
    (b'{"query": 5}', "invalid request body: Expected `str`, got `int` - at `$.query`"),
])
async def test_a_body_that_is_not_a_graphql_request_is_a_400(gateway, body: bytes, message: str) -> None:
    answer = await gateway.call("POST", "/graphql", data=body)
    assert (answer.status, answer.body) == (400, {"error": message})


async def test_a_body_over_the_cap_is_a_413(gateway) -> None:
    answer = await gateway.call("POST", "/graphql", json={"query": "{" + " " * 300_000 + "}"})
    assert answer.status == 413 and "over the 262144 bytes limit of /graphql" in answer.body["error"]


async def test_keys_missing_wrong_and_not_admin_are_refused_as_json(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(api_keys=("user-key",))
    body = {"query": "{ myself { endpoints { id } } }"}
    missing = await gw.call("POST", "/graphql", json=body, auth=False)
    assert missing.status == 401 and missing.body["error"].startswith("missing API key")
    wrong = await gw.call("POST", "/graphql", json=body, auth=False, headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401 and wrong.body["error"].startswith("invalid API key")
    user = await gw.call("POST", "/graphql", json=body, auth=False, headers={"Authorization": "Bearer user-key"})
    assert user.status == 403 and user.body["error"].startswith("POST /graphql needs the admin key")
    admin = await gw.call("POST", "/graphql", json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert admin.status == 200 and admin.body == {"data": {"myself": {"endpoints": []}}}
    # RunPod's curl form: the key in the query string, on this route only
    query_key = await gw.call("POST", f"/graphql?api_key={ADMIN_KEY}", json=body, auth=False)
    assert query_key.status == 200 and query_key.body == {"data": {"myself": {"endpoints": []}}}
    query_user = await gw.call("POST", "/graphql?api_key=user-key", json=body, auth=False)
    assert query_user.status == 403
    elsewhere = await gw.call("GET", f"/v1/endpoints?api_key={ADMIN_KEY}", auth=False)
    assert elsewhere.status == 401
