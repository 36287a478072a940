"""The resolvers of podq's RunPod GraphQL schema: templates and endpoints in the registry.

Each mutation maps RunPod's input to podq fields (mapping.py), then goes through the /v1 admin
API's own body types (`TemplateBody`, `EndpointPatch`, ...), `fields_of`, `patched_endpoint`
and `rolled`, and the registry's validation: one set of defaults and rules, one message for
each bad setting, whichever API sent it. A PodqError raised here becomes the GraphQL error's
message unchanged (executor.py).

Two choices follow RunPod rather than /v1:
- a template made through saveTemplate has `protocol: runpod`: RunPod's clients deploy RunPod
  worker images, whose own CMD (or dockerArgs) runs unchanged and speaks RunPod's worker
  protocol to the gateway. A template changed with saveTemplate(id) keeps its protocol.
- template names are unique on saveTemplate (RunPod refuses a taken name), since
  deleteTemplate picks a template by name.

Resolver arguments keep their GraphQL names (`input`, `id`, `templateName`): graphql-core
passes them as keywords.
"""

from __future__ import annotations

from typing import Any

import msgspec
from graphql import GraphQLResolveInfo

from serverless.errors import BadRequest, Conflict, NotFound
from serverless.gateway import admin_routes as admin
from serverless.graphql import mapping
from serverless.graphql.schema import Resolver, build
from serverless.model import EndpointConfig, Template, WorkerProtocol
from serverless.registry import Registry, new_id
from serverless.store import now_ms


class Context(msgspec.Struct, frozen=True):
    """What every resolver reads (graphql-core's context_value)."""

    registry: Registry


def _registry(info: GraphQLResolveInfo) -> Registry:
    return info.context.registry


def _as(kind: type, fields: dict[str, Any]) -> Any:
    """`fields` through a /v1 body type: its defaults, its types, its scaler_type parsing."""
    try:
        return admin.fields_of(msgspec.convert(fields, kind))
    except msgspec.ValidationError as e:
        raise BadRequest(f"invalid input: {e}") from None


# ---- queries -----------------------------------------------------------------------------


def myself(_root: None, _info: GraphQLResolveInfo) -> dict[str, Any]:
    """The admin: podq has one, and `User`'s fields are resolved below."""
    return {}


async def endpoints(_user: dict[str, Any], info: GraphQLResolveInfo) -> list[dict[str, Any]]:
    registry = _registry(info)
    env = {t.id: t.env for t in await registry.templates()}
    return [mapping.endpoint_fields(e, env.get(e.template_id, {})) for e in await registry.endpoints()]


async def pod_templates(_user: dict[str, Any], info: GraphQLResolveInfo) -> list[dict[str, Any]]:
    return [mapping.template_fields(t) for t in await _registry(info).templates()]


def gpu_types(
    _root: None, _info: GraphQLResolveInfo, input: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    return mapping.gpu_types((input or {}).get("id"))


# ---- templates ---------------------------------------------------------------------------


async def _check_name_free(registry: Registry, name: str, template_id: str | None) -> None:
    for t in await registry.templates():
        if t.name == name and t.id != template_id:
            raise Conflict(f"template name {name!r} is taken by template {t.id!r}: pick another "
                           f'name, or pass id: "{t.id}" to change that template')


async def _change_template(registry: Registry, template_id: str, changes: dict[str, Any]) -> Template:
    """As PATCH /v1/templates/{id}: endpoints using a changed template roll their workers."""
    current = await registry.get_template(template_id)
    if current is None:
        raise NotFound(f"template {template_id!r} not found; leave `id` out to create one")
    new = msgspec.structs.replace(current, **_as(admin.TemplatePatch, changes))
    await registry.put_template(new)
    if new != current:
        now = now_ms()
        for endpoint in await registry.endpoints():
            if endpoint.template_id == template_id:
                await registry.put_endpoint(admin.rolled(endpoint, now))
    return new


async def save_template(_root: None, info: GraphQLResolveInfo, input: dict[str, Any]) -> dict[str, Any]:
    """saveTemplate: create a template, or change the one `input.id` names."""
    registry = _registry(info)
    changes = mapping.template_changes(input)
    await _check_name_free(registry, changes["name"], input.get("id"))
    if input.get("id"):
        return mapping.template_fields(await _change_template(registry, input["id"], changes))
    fields = _as(admin.TemplateBody, {**changes, "protocol": WorkerProtocol.RUNPOD.value})
    template = Template(id=new_id("tpl"), created_at=now_ms(), **fields)
    return mapping.template_fields(await registry.put_template(template))


async def delete_template(_root: None, info: GraphQLResolveInfo, templateName: str) -> None:
    """deleteTemplate: RunPod picks the template by name (refused while an endpoint uses it)."""
    registry = _registry(info)
    ids = [t.id for t in await registry.templates() if t.name == templateName]
    if not ids:
        raise NotFound(f"no template is named {templateName!r}; list them with "
                       "`myself { podTemplates { id name } }`")
    if len(ids) > 1:
        raise Conflict(f"{len(ids)} templates are named {templateName!r} ({', '.join(ids)}); "
                       "delete one by id with DELETE /v1/templates/{id}")
    await registry.delete_template(ids[0])


# ---- endpoints ---------------------------------------------------------------------------


async def _endpoint_reply(registry: Registry, endpoint_id: str) -> dict[str, Any]:
    endpoint = await registry.require_endpoint(endpoint_id)  # read back: with its status
    template = await registry.get_template(endpoint.template_id)
    return mapping.endpoint_fields(endpoint, template.env if template else {})


async def _change_endpoint(registry: Registry, endpoint_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """As PATCH /v1/endpoints/{id}: a new template or GPUs bump the version (workers roll)."""
    current = await registry.require_endpoint(endpoint_id)
    await registry.put_endpoint(admin.patched_endpoint(current, changes, now_ms()))
    return await _endpoint_reply(registry, endpoint_id)


async def save_endpoint(_root: None, info: GraphQLResolveInfo, input: dict[str, Any]) -> dict[str, Any]:
    """saveEndpoint: create an endpoint, or change the one `input.id` names."""
    registry = _registry(info)
    changes = mapping.endpoint_changes(input)
    if input.get("id"):
        return await _change_endpoint(registry, input["id"], _as(admin.EndpointPatch, changes))
    now = now_ms()
    fields = _as(admin.EndpointBody, changes)
    endpoint = EndpointConfig(id=new_id("ep"), created_at=now, updated_at=now, **fields)
    await registry.put_endpoint(endpoint)
    return await _endpoint_reply(registry, endpoint.id)


async def update_endpoint_template(
    _root: None, info: GraphQLResolveInfo, input: dict[str, Any]
) -> dict[str, Any]:
    """updateEndpointTemplate: point an endpoint at another template (its workers roll)."""
    changes = {"template_id": input["templateId"]}
    return await _change_endpoint(_registry(info), input["endpointId"], changes)


async def delete_endpoint(_root: None, info: GraphQLResolveInfo, id: str) -> None:
    """deleteEndpoint: as DELETE /v1/endpoints/{id}; the scaler stops its workers."""
    registry = _registry(info)
    await registry.delete_endpoint(id)
    await registry.clear_scale_to_zero(id)


RESOLVERS: dict[tuple[str, str], Resolver] = {
    ("Query", "myself"): myself,
    ("Query", "gpuTypes"): gpu_types,
    ("User", "endpoints"): endpoints,
    ("User", "podTemplates"): pod_templates,
    ("Mutation", "saveTemplate"): save_template,
    ("Mutation", "deleteTemplate"): delete_template,
    ("Mutation", "saveEndpoint"): save_endpoint,
    ("Mutation", "updateEndpointTemplate"): update_endpoint_template,
    ("Mutation", "deleteEndpoint"): delete_endpoint,
}
# the executable schema the gateway serves
SCHEMA = build(RESOLVERS)
