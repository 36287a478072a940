"""Endpoint semantics RunPod-style clients rely on: upsert, label filters, the endpoint webhook's
checks, flashboot, and the template settings a backend must apply or refuse. Pure rules as
tables; the routes, admin functions and CLI over real HTTP against the real Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest

import serverless
from serverless.admin import label_query
from serverless.errors import BadRequest, Conflict
from serverless.gateway.webhooks import WebhookPolicy
from serverless.model import EndpointConfig, Template
from serverless.registry import (
    check_backend_fits,
    check_endpoint,
    check_template,
    labels_match,
    parse_label_filter,
    parse_ports,
)
from tests.admin.conftest import LiveGateway
from tests.admin.test_cli import ok, podq
from tests.admin.test_routes import make_endpoint, make_template
from tests.gateway.conftest import Gateway, GatewayFactory

# ---- pure rules ----------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("team:ml", ("team", "ml")),  # KEY:VALUE
    ("team", ("team", None)),  # KEY alone matches any value
    ("team:", ("team", "")),  # an empty value is a value
    ("url:http://x", ("url", "http://x")),  # only the first ':' splits
])
def test_a_label_filter_is_key_or_key_colon_value(text: str, expected: tuple[str, str | None]) -> None:
    assert parse_label_filter(text) == expected


@pytest.mark.parametrize("text", ["", ":ml"])
def test_a_label_filter_without_a_key_is_refused_naming_it(text: str) -> None:
    with pytest.raises(BadRequest, match=f"label filter {text!r} is invalid: write KEY:VALUE"):
        parse_label_filter(text)


@pytest.mark.parametrize("labels,filters,expected", [
    ({"team": "ml"}, [], True),  # no filter: every endpoint
    ({"team": "ml"}, [("team", "ml")], True),
    ({"team": "ml"}, [("team", "web")], False),
    ({"team": "ml"}, [("team", None)], True),  # key alone: any value
    ({}, [("team", None)], False),
    ({"team": "ml", "env": "prod"}, [("team", "ml"), ("env", "prod")], True),  # all must match
    ({"team": "ml", "env": "dev"}, [("team", "ml"), ("env", "prod")], False),
])
def test_every_label_filter_must_match(labels: dict[str, str], filters: list, expected: bool) -> None:
    assert labels_match(labels, filters) is expected


@pytest.mark.parametrize("labels,query", [
    (None, []),
    ({"team": "ml", "prod": None}, [("label", "team:ml"), ("label", "prod")]),
    (["team:ml", "prod"], [("label", "team:ml"), ("label", "prod")]),
    ("team:ml", [("label", "team:ml")]),
])
def test_the_admin_client_sends_labels_as_repeated_query_params(labels: Any, query: list) -> None:
    assert label_query(labels) == query


@pytest.mark.parametrize("spec,expected", [
    ("", []),
    ("8888/http", [(8888, "http")]),
    ("8888/http,22/tcp", [(8888, "http"), (22, "tcp")]),  # RunPod's example
    ("65535/tcp", [(65535, "tcp")]),
])
def test_ports_are_runpods_port_slash_kind_list(spec: str, expected: list) -> None:
    assert parse_ports(spec) == expected


@pytest.mark.parametrize("spec,message", [
    ("8888", "ports entry '8888' in '8888' is invalid: write PORT/http or PORT/tcp"),
    ("8888/udp", "ports entry '8888/udp' in '8888/udp' is invalid"),
    ("0/tcp", "ports entry '0/tcp'"),
    ("70000/tcp", "ports entry '70000/tcp'"),
    ("8888/http, 22/tcp", "ports entry ' 22/tcp'"),
    ("8888/http,,22/tcp", "ports entry ''"),
    ("22/tcp,22/http", "port 22 is given twice in ports '22/tcp,22/http'; list each port once"),
])
def test_malformed_ports_are_refused_quoting_the_entry(spec: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_ports(spec)


def _template(**fields: Any) -> Template:
    return Template(**{"id": "tpl-1", "name": "sd", "image_name": "me/sd:1", **fields})


@pytest.mark.parametrize("fields,message", [
    ({"ports": "8888"}, "ports entry '8888'"),
    ({"volume_mount_path": "/models"}, "template 'sd' has volume_mount_path '/models' but no volume: "
                                       "set volume_in_gb"),
    ({"volume_in_gb": 5, "volume_mount_path": "models"}, "volume_mount_path 'models' of template 'sd' "
                                                         "is not an absolute path"),
    ({"volume_in_gb": 5, "volume_mount_path": "/"}, "is not an absolute path"),
    ({"volume_in_gb": 5, "volume_mount_path": "/a:/b"}, "is not an absolute path"),
])
def test_template_settings_that_cannot_be_applied_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        check_template(_template(**fields))


# (backend, template fields, refused settings or None)
FITS = [
    ("process", {}, None),
    ("process", {"container_disk_in_gb": 10}, None),  # RunPod's default: process is not disk-limited
    ("process", {"volume_in_gb": 5}, "volume_in_gb"),
    ("process", {"ports": "8888/http"}, "ports"),
    ("process", {"volume_in_gb": 5, "ports": "22/tcp"}, "volume_in_gb and ports"),
    ("docker", {"volume_in_gb": 5, "ports": "22/tcp", "container_disk_in_gb": 50}, None),
    ("swarm", {"volume_in_gb": 5}, "volume_in_gb"),
    ("kubernetes", {"ports": "8888/http"}, "ports"),
]


@pytest.mark.parametrize("backend,fields,refused", FITS)
def test_a_backend_applies_the_template_or_the_endpoint_is_refused(
    backend: str, fields: dict, refused: str | None
) -> None:
    endpoint = EndpointConfig(id="ep-1", name="sd", template_id="tpl-1", backend=backend)
    runs = {"docker_start_cmd": "python -u handler.py"} if backend == "process" else {}
    if refused is None:
        check_backend_fits(endpoint, _template(**runs, **fields))
        return
    with pytest.raises(BadRequest, match=(
        f"template 'sd' \\(tpl-1\\) sets {refused}, which the {backend} backend of endpoint 'sd' "
        "cannot apply: use backend docker, or a template without")):
        check_backend_fits(endpoint, _template(**runs, **fields))


def test_an_image_only_template_is_refused_on_the_process_backend() -> None:
    endpoint = EndpointConfig(id="ep-1", name="sd", template_id="tpl-1", backend="process")
    with pytest.raises(BadRequest, match=(
            "template 'sd' \\(tpl-1\\) runs only the image 'me/sd:1', which the process backend "
            "of endpoint 'sd' cannot run")):
        check_backend_fits(endpoint, _template())
    check_backend_fits(endpoint, _template(handler="h.py"))  # the image is for container backends


def test_flashboot_is_refused_naming_what_to_use_instead() -> None:
    endpoint = EndpointConfig(id="ep-1", name="sd", template_id="tpl-1", flashboot=True)
    with pytest.raises(BadRequest, match="flashboot is not available: podq has no warm paused workers "
                                         "yet; keep workers warm with workers_min"):
        check_endpoint(endpoint, _template())


# ---- upsert over HTTP ---------------------------------------------------------------------


async def test_upsert_creates_when_absent_and_patches_by_name(gateway: Gateway) -> None:
    tpl = (await make_template(gateway))["id"]
    body = {"name": "sd", "template_id": tpl, "workers_max": 5, "labels": {"team": "ml"}}
    created = await gateway.call("POST", "/v1/endpoints?update_if_exists=true", json=body)
    assert created.status == 200 and created.body["workers_max"] == 5
    again = await gateway.call("POST", "/v1/endpoints?update_if_exists=true",
                               json={"name": "sd", "template_id": tpl, "workers_min": 2})
    assert again.status == 200
    assert again.body["id"] == created.body["id"]
    # the fields sent are applied; those left out keep their values, not the defaults
    assert (again.body["workers_min"], again.body["workers_max"], again.body["labels"]) == (2, 5, {"team": "ml"})
    assert again.body["version"] == 1  # no rolling field changed
    assert len((await gateway.call("GET", "/v1/endpoints")).body) == 1


async def test_upsert_by_id_renames_and_rolls_on_a_new_template(gateway: Gateway) -> None:
    first = await make_endpoint(gateway, id="ep-sd", name="old")
    other = (await make_template(gateway, name="other"))["id"]
    answer = await gateway.call("POST", "/v1/endpoints?update_if_exists=true",
                                json={"id": "ep-sd", "name": "new", "template_id": other})
    assert answer.status == 200
    assert (answer.body["name"], answer.body["template_id"]) == ("new", other)
    assert answer.body["version"] == first["version"] + 1  # rolled, as PATCH would
    assert answer.body["created_at"] == first["created_at"]


async def test_upsert_validates_like_update_and_refuses_an_ambiguous_name(gateway: Gateway) -> None:
    tpl = (await make_template(gateway))["id"]
    await make_endpoint(gateway, name="sd", template_id=tpl)
    bad = await gateway.call("POST", "/v1/endpoints?update_if_exists=true",
                             json={"name": "sd", "template_id": tpl, "workers_min": 9})
    assert bad.status == 400 and bad.body == {"error": "workers_min (9) is above workers_max (3)"}
    twin = await make_endpoint(gateway, name="sd", template_id=tpl)
    both = await gateway.call("POST", "/v1/endpoints?update_if_exists=true",
                              json={"name": "sd", "template_id": tpl})
    assert both.status == 409
    assert both.body["error"].startswith("2 endpoints are named 'sd' (")
    assert twin["id"] in both.body["error"] and both.body["error"].endswith("send the `id` of the one to update")
    flag = await gateway.call("POST", "/v1/endpoints?update_if_exists=yes", json={"name": "x", "template_id": tpl})
    assert flag.status == 400
    assert flag.body == {"error": "update_if_exists='yes' is not a flag; use ?update_if_exists=true "
                                  "or ?update_if_exists=false"}


async def test_without_the_flag_a_taken_id_is_still_a_conflict(gateway: Gateway) -> None:
    await make_endpoint(gateway, id="ep-sd")
    tpl = (await make_template(gateway))["id"]
    taken = await gateway.call("POST", "/v1/endpoints", json={"id": "ep-sd", "name": "x", "template_id": tpl})
    assert taken.status == 409 and "?update_if_exists=true" in taken.body["error"]


# ---- labels over HTTP ---------------------------------------------------------------------


async def test_endpoints_are_filtered_by_every_label(gateway: Gateway) -> None:
    tpl = (await make_template(gateway))["id"]
    a = await make_endpoint(gateway, name="a", template_id=tpl, labels={"team": "ml", "env": "prod"})
    b = await make_endpoint(gateway, name="b", template_id=tpl, labels={"team": "ml", "env": "dev"})
    await make_endpoint(gateway, name="c", template_id=tpl, labels={"team": "web"})

    async def ids(query: str) -> list[str]:
        answer = await gateway.call("GET", f"/v1/endpoints{query}")
        assert answer.status == 200, answer.body
        return [e["id"] for e in answer.body]

    assert await ids("?label=team:ml") == [a["id"], b["id"]]
    assert await ids("?label=team:ml&label=env:prod") == [a["id"]]
    assert await ids("?label=env") == [a["id"], b["id"]]
    assert await ids("?label=team:nobody") == []
    bad = await gateway.call("GET", "/v1/endpoints?label=:ml")
    assert bad.status == 400
    assert bad.body == {"error": "label filter ':ml' is invalid: write KEY:VALUE (e.g. team:ml) or KEY "
                                 "alone for any value"}


# ---- the endpoint's webhook, flashboot and template settings over HTTP -------------------


async def test_the_endpoint_webhook_is_checked_like_a_requests(make_gateway: GatewayFactory) -> None:
    strict = await make_gateway(webhooks=WebhookPolicy(allow_private=False))
    tpl = (await make_template(strict))["id"]
    made = await make_endpoint(strict, template_id=tpl, webhook="https://example.com/hook")
    assert made["webhook"] == "https://example.com/hook"
    private = await strict.call("PATCH", f"/v1/endpoints/{made['id']}", json={"webhook": "http://10.0.0.1/x"})
    assert private.status == 400
    assert private.body["error"].startswith("webhook 'http://10.0.0.1/x' points at a private or loopback address")
    bad = await strict.call("POST", "/v1/endpoints", json={"name": "x", "template_id": tpl, "webhook": "ftp://x"})
    assert bad.status == 400 and bad.body["error"].startswith("webhook 'ftp://x' is not an http(s) URL")
    cleared = await strict.call("PATCH", f"/v1/endpoints/{made['id']}", json={"webhook": None})
    assert cleared.status == 200 and cleared.body["webhook"] is None


async def test_template_settings_a_backend_cannot_apply_are_refused_at_every_write(gateway: Gateway) -> None:
    plain = (await make_template(gateway))["id"]
    ported = (await make_template(gateway, name="jupyter", ports="8888/http"))["id"]
    refused = await gateway.call("POST", "/v1/endpoints", json={"name": "j", "template_id": ported})
    assert refused.status == 400
    assert refused.body["error"].startswith(f"template 'jupyter' ({ported}) sets ports, which the process "
                                            "backend of endpoint 'j' cannot apply: use backend docker")
    docker = await make_endpoint(gateway, template_id=ported, backend="docker")
    assert docker["backend"] == "docker"
    # a template change that its process endpoints could not apply is refused, and not stored
    process = await make_endpoint(gateway, template_id=plain)
    changed = await gateway.call("PATCH", f"/v1/templates/{plain}", json={"volume_in_gb": 20})
    assert changed.status == 400 and "sets volume_in_gb, which the process backend" in changed.body["error"]
    assert (await gateway.call("GET", f"/v1/templates/{plain}")).body["volume_in_gb"] == 0
    moved = await gateway.call("PATCH", f"/v1/endpoints/{process['id']}", json={"backend": "docker"})
    assert moved.status == 200
    assert (await gateway.call("PATCH", f"/v1/templates/{plain}", json={"volume_in_gb": 20})).status == 200
    flash = await gateway.call("PATCH", f"/v1/endpoints/{process['id']}", json={"flashboot": True})
    assert flash.status == 400 and flash.body["error"].startswith("flashboot is not available")


# ---- the admin functions and the CLI -----------------------------------------------------


def test_admin_functions_upsert_and_filter_by_labels(live: LiveGateway) -> None:
    tpl = serverless.create_template("echo", None, handler="examples/echo.py")["id"]
    first = serverless.create_endpoint("sd", tpl, workers_max=2, labels={"team": "ml"})
    same = serverless.create_endpoint("sd", tpl, workers_max=4, update_if_exists=True)
    assert same.id == first.id and same["workers_max"] == 4 and same["labels"] == {"team": "ml"}
    serverless.create_endpoint("web", tpl, labels={"team": "web"})
    assert [e.id for e in serverless.get_endpoints(labels={"team": "ml"})] == [first.id]
    assert len(serverless.get_endpoints(labels=["team"])) == 2
    with pytest.raises(BadRequest, match="label filter ':x' is invalid"):
        serverless.get_endpoints(labels=[":x"])
    with pytest.raises(Conflict, match="already exists"):
        serverless.create_endpoint("sd", tpl, id=first.id)


def test_cli_upserts_and_lists_by_label(live: LiveGateway) -> None:
    ok(podq(live, "template", "create", "--name", "echo", "--handler", "examples/echo.py", "--id", "tpl-c"))
    args = ("endpoint", "create", "--name", "sd", "--template-id", "tpl-c", "--update-if-exists")
    first = json.loads(ok(podq(live, *args, "--labels", "team=ml")))
    again = json.loads(ok(podq(live, *args, "--workers-max", "7")))
    assert again["id"] == first["id"] and again["workers_max"] == 7 and again["labels"] == {"team": "ml"}
    ok(podq(live, "endpoint", "create", "--name", "web", "--template-id", "tpl-c", "--labels", "team=web"))
    listed = ok(podq(live, "endpoint", "list", "--label", "team:ml")).splitlines()
    assert len(listed) == 2 and listed[1].split()[:2] == [first["id"], "sd"]
    bad = podq(live, "endpoint", "list", "--label", ":ml")
    assert bad.returncode == 1 and "label filter ':ml' is invalid" in bad.stderr
