"""The /v1 admin handlers: templates and endpoints in the registry (admin key only).

The auth middleware lets only the admin key through (the route table marks these rows
`admin`). Validation is the registry's (`check_template`, `check_endpoint`), so every message a
user sees about a bad setting is written once. A handler decodes its body with a typed decoder,
calls the registry and answers the record with every field, defaults included.

Request bodies are derived from the records themselves (`Template`, `EndpointConfig`), so a
field added to a record is accepted here without a second list: a create body has the record's
fields and defaults plus an optional `id`; a patch body has the same fields, all optional.
Fields the server owns (version, status, timestamps) are never taken from a body.

Upsert (`POST /v1/endpoints?update_if_exists=true`, RunPod SDK's `update_if_exists`): the
existing endpoint is found by `id` when the body gives one, else by `name` (409 when several
share it); when there is none it is created, as without the flag. When there is one, the fields
the body *sends* are applied as a PATCH (same validation, same rolling rule: `version` bumps
only when a rolling field changed); fields left out keep their values, not the defaults.
Either way the answer is 200 with the record, as create always answers. The create body's
required fields (name, template_id) stay required, so the body is decoded twice: as the create
body (checked whole) and as a patch (to know which fields were sent).

`GET /v1/endpoints?label=team:ml&label=prod` keeps the endpoints every filter matches
(registry.parse_label_filter). An endpoint's `webhook` is checked like a request's
(webhooks.check_url with the gateway's private-address policy) before it is stored.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import NODEFAULT, UNSET, UnsetType

from serverless import keys
from serverless.errors import BadRequest, Conflict, NotFound
from serverless.gateway import state, webhooks
from serverless.gateway.limits import MB, decode_body, read_body
from serverless.gateway.query_params import query_flag
from serverless.gateway.replies import encode
from serverless.model import EndpointConfig, EndpointStatus, ScalerType, Template
from serverless.registry import (
    LABEL_FILTER_PATTERN, Registry, labels_match, new_id, parse_label_filter, parse_scaler_type,
)
from serverless.store import now_ms

ADMIN_MAX_BYTES = 1 * MB
# set by the server, never by a body
SERVER_FIELDS = frozenset({"id", "version", "status", "status_reason", "created_at", "updated_at"})
# a change to one of these means running workers are out of date: `version` is bumped and the
# scaler replaces them (a template's content counts too, see update_template)
ROLLING_FIELDS = ("template_id", "gpu_ids", "gpu_count", "backend", "cpus", "memory_gb")
# decoded as text, so an unknown value gets the registry's message (which lists the choices)
_AS_TEXT: dict[str, Any] = {
    "scaler_type": Annotated[str, msgspec.Meta(extra_json_schema={"enum": list(ScalerType)})],
}


class Deleted(msgspec.Struct):
    """What a DELETE answers."""

    id: str
    deleted: bool = True


def _field(info: msgspec.structs.FieldInfo, patch: bool) -> tuple[Any, ...]:
    kind = _AS_TEXT.get(info.name, info.type)
    if patch:
        return (info.name, kind | UnsetType, UNSET)
    if info.required:
        return (info.name, kind)
    if info.default_factory is not NODEFAULT:
        return (info.name, kind, msgspec.field(default_factory=info.default_factory))
    return (info.name, kind, info.default)


def body_type(
    record: type[msgspec.Struct], name: str, doc: str, *, patch: bool, with_id: bool = False
) -> type:
    """A request body Struct with `record`'s client-settable fields (all optional if `patch`),
    and an optional `id` unless it is a plain patch."""
    settable = (f for f in msgspec.structs.fields(record) if f.name not in SERVER_FIELDS)
    fields = [_field(f, patch) for f in settable]
    if with_id or not patch:
        fields.append(("id", str | None, None))
    return msgspec.defstruct(
        name, fields, kw_only=True, forbid_unknown_fields=True,
        module=__name__, namespace={"__doc__": doc},
    )


TemplateBody = body_type(
    Template, "TemplateBody", "POST /v1/templates: RunPod's create_template fields.", patch=False
)
TemplatePatch = body_type(
    Template, "TemplatePatch", "PATCH /v1/templates/{template_id}: the fields to change.",
    patch=True,
)
EndpointBody = body_type(
    EndpointConfig, "EndpointBody", "POST /v1/endpoints: RunPod's create_endpoint fields.",
    patch=False,
)
EndpointPatch = body_type(
    EndpointConfig, "EndpointPatch", "PATCH /v1/endpoints/{endpoint_id}: the fields to change.",
    patch=True,
)
# an upsert's body read as a patch: which fields it sends (never in the route table)
_EndpointUpsert = body_type(
    EndpointConfig, "EndpointUpsert", "The fields an upsert sends.", patch=True, with_id=True
)
_decoders = {
    kind: msgspec.json.Decoder(kind)
    for kind in (TemplateBody, TemplatePatch, EndpointBody, EndpointPatch, _EndpointUpsert)
}


# ---- pure: bodies to records -------------------------------------------------------------


def fields_of(body: msgspec.Struct) -> dict[str, Any]:
    """The fields a body sets (UNSET left out), with scaler_type parsed; `id` left out."""
    out = {
        name: value for name in body.__struct_fields__
        if name != "id" and (value := getattr(body, name)) is not UNSET
    }
    if "scaler_type" in out:
        out["scaler_type"] = parse_scaler_type(out["scaler_type"])
    return out


def patched_endpoint(current: EndpointConfig, changes: dict[str, Any], now: int) -> EndpointConfig:
    """`current` with `changes`; `version` bumped when a rolling field changed.

    The status is reset to its default, so it is not written into the config: it lives apart
    (Registry.set_status) and is merged back on every read.
    """
    new = msgspec.structs.replace(
        current, **changes, updated_at=now, status=EndpointStatus.PENDING, status_reason=""
    )
    if any(getattr(new, f) != getattr(current, f) for f in ROLLING_FIELDS):
        new = msgspec.structs.replace(new, version=current.version + 1)
    return new


def rolled(endpoint: EndpointConfig, now: int) -> EndpointConfig:
    """`endpoint` with its version bumped (its template changed)."""
    return msgspec.structs.replace(
        endpoint, version=endpoint.version + 1, updated_at=now,
        status=EndpointStatus.PENDING, status_reason="",
    )


def label_filters(values: list[str]) -> list[tuple[str, str | None]]:
    """Every ?label= of a request, parsed (pure; 400 naming a malformed one)."""
    return [parse_label_filter(value) for value in values]


# ---- I/O helpers -------------------------------------------------------------------------


def _reply(value: Any) -> web.Response:
    if isinstance(value, list):
        value = [msgspec.structs.asdict(v) for v in value]
    elif isinstance(value, (Template, EndpointConfig)):
        value = msgspec.structs.asdict(value)  # every field, defaults included
    return web.Response(body=encode(value), content_type="application/json")


def _registry(request: web.Request) -> Registry:
    return request.app[state.REGISTRY]


async def _decode(request: web.Request, body_kind: type) -> Any:
    return decode_body(_decoders[body_kind], await read_body(request, ADMIN_MAX_BYTES))


def _new_id(given: str | None, kind: str, prefix: str) -> str:
    if given is None:
        return new_id(prefix)
    if not keys.valid_id(given):
        raise BadRequest(f"{kind} id {given!r} is invalid: use 1-128 letters, digits, '_.:-'")
    return given


async def _require_template(registry: Registry, template_id: str) -> Template:
    template = await registry.get_template(template_id)
    if template is None:
        raise NotFound(f"template {template_id!r} not found; list them with `podq template list`")
    return template


async def _endpoint_reply(registry: Registry, endpoint_id: str) -> web.Response:
    # read back, so the reply carries the registry's status
    return _reply(await registry.require_endpoint(endpoint_id))


# ---- templates ---------------------------------------------------------------------------


async def create_template(request: web.Request) -> web.Response:
    """POST /v1/templates: store a new template (409 if its `id` is taken)."""
    body = await _decode(request, TemplateBody)
    registry = _registry(request)
    template_id = _new_id(body.id, "template", "tpl")
    if await registry.get_template(template_id) is not None:
        raise Conflict(
            f"template {template_id!r} already exists; change it with "
            f"PATCH /v1/templates/{template_id} or leave `id` out to get a new one"
        )
    template = Template(id=template_id, created_at=now_ms(), **fields_of(body))
    return _reply(await registry.put_template(template))


async def list_templates(request: web.Request) -> web.Response:
    """GET /v1/templates: every template, by name."""
    return _reply(await _registry(request).templates())


async def get_template(request: web.Request) -> web.Response:
    """GET /v1/templates/{template_id}."""
    return _reply(await _require_template(_registry(request), request.match_info["template_id"]))


async def update_template(request: web.Request) -> web.Response:
    """PATCH /v1/templates/{template_id}: change fields; endpoints using it are rolled."""
    registry = _registry(request)
    current = await _require_template(registry, request.match_info["template_id"])
    new = msgspec.structs.replace(current, **fields_of(await _decode(request, TemplatePatch)))
    await registry.put_template(new)
    if new != current:
        now = now_ms()
        for endpoint in await registry.endpoints():
            if endpoint.template_id == current.id:
                await registry.put_endpoint(rolled(endpoint, now))
    return _reply(new)


async def delete_template(request: web.Request) -> web.Response:
    """DELETE /v1/templates/{template_id} (409 while an endpoint uses it)."""
    template_id = request.match_info["template_id"]
    await _registry(request).delete_template(template_id)
    return _reply(Deleted(template_id))


# ---- endpoints ---------------------------------------------------------------------------


async def _put_endpoint(request: web.Request, endpoint: EndpointConfig) -> web.Response:
    """Check the endpoint's webhook as a request's is checked, store it, answer it."""
    if endpoint.webhook is not None:
        webhooks.check_url(endpoint.webhook, request.app[state.WEBHOOK_POLICY].allow_private)
    registry = _registry(request)
    await registry.put_endpoint(endpoint)
    return await _endpoint_reply(registry, endpoint.id)


async def _upsert_target(registry: Registry, body: Any) -> EndpointConfig | None:
    """The endpoint an upsert changes: by `id` when given, else the one named `name`."""
    if body.id is not None:
        return await registry.get_endpoint(body.id)
    named = await registry.endpoints_named(body.name)
    if len(named) > 1:
        raise Conflict(
            f"{len(named)} endpoints are named {body.name!r} ({', '.join(e.id for e in named)}); "
            "send the `id` of the one to update"
        )
    return named[0] if named else None


async def create_endpoint(request: web.Request) -> web.Response:
    """POST /v1/endpoints[?update_if_exists=true]: store a new endpoint (409 if its `id` is
    taken), or with the flag update the existing one (see the module docstring)."""
    raw = await read_body(request, ADMIN_MAX_BYTES)
    body = decode_body(_decoders[EndpointBody], raw)
    registry = _registry(request)
    if query_flag(request.query, "update_if_exists"):
        current = await _upsert_target(registry, body)
        if current is not None:
            sent = fields_of(decode_body(_decoders[_EndpointUpsert], raw))
            return await _put_endpoint(request, patched_endpoint(current, sent, now_ms()))
    endpoint_id = _new_id(body.id, "endpoint", "ep")
    if await registry.get_endpoint(endpoint_id) is not None:
        raise Conflict(
            f"endpoint {endpoint_id!r} already exists; change it with "
            f"PATCH /v1/endpoints/{endpoint_id}, POST with ?update_if_exists=true, "
            "or leave `id` out to get a new one"
        )
    now = now_ms()
    endpoint = EndpointConfig(id=endpoint_id, created_at=now, updated_at=now, **fields_of(body))
    return await _put_endpoint(request, endpoint)


async def list_endpoints(request: web.Request) -> web.Response:
    """GET /v1/endpoints[?label=KEY[:VALUE]...]: the endpoints with their status, by name;
    with labels, only those every filter matches."""
    filters = label_filters(request.query.getall("label", []))
    found = await _registry(request).endpoints()
    return _reply([e for e in found if labels_match(e.labels, filters)])


async def get_endpoint(request: web.Request) -> web.Response:
    """GET /v1/endpoints/{endpoint_id}: the endpoint with its status."""
    return await _endpoint_reply(_registry(request), request.match_info["endpoint_id"])


async def _change(request: web.Request, changes: dict[str, Any]) -> web.Response:
    current = await _registry(request).require_endpoint(request.match_info["endpoint_id"])
    return await _put_endpoint(request, patched_endpoint(current, changes, now_ms()))


async def update_endpoint(request: web.Request) -> web.Response:
    """PATCH /v1/endpoints/{endpoint_id}: change any field (version bumps on rolling ones)."""
    return await _change(request, fields_of(await _decode(request, EndpointPatch)))


async def pause_endpoint(request: web.Request) -> web.Response:
    """POST /v1/endpoints/{endpoint_id}/pause: no workers; jobs stay queued."""
    return await _change(request, {"paused": True})


async def resume_endpoint(request: web.Request) -> web.Response:
    """POST /v1/endpoints/{endpoint_id}/resume: unpause, and drop a scale-to-zero request."""
    response = await _change(request, {"paused": False})
    await _registry(request).clear_scale_to_zero(request.match_info["endpoint_id"])
    return response


async def scale_to_zero(request: web.Request) -> web.Response:
    """POST /v1/endpoints/{endpoint_id}/scale-to-zero: zero workers until the next job."""
    registry = _registry(request)
    endpoint_id = request.match_info["endpoint_id"]
    await registry.request_scale_to_zero(endpoint_id)
    return await _endpoint_reply(registry, endpoint_id)


async def delete_endpoint(request: web.Request) -> web.Response:
    """DELETE /v1/endpoints/{endpoint_id}: the scaler stops its workers; queued jobs stay."""
    registry = _registry(request)
    endpoint_id = request.match_info["endpoint_id"]
    await registry.delete_endpoint(endpoint_id)
    await registry.clear_scale_to_zero(endpoint_id)
    return _reply(Deleted(endpoint_id))
