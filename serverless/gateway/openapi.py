"""GET /openapi.json: the API description, built from the route table and the Structs.

Nothing here is written by hand twice: paths, methods and names come from `Route`s (the table
create_app registers), schemas from msgspec's JSON Schema of each request and reply Struct.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from serverless import keys
from serverless.gateway import state
from serverless.gateway.error_responses import ErrorReply

_REF = "#/components/schemas/{name}"
# component name -> property name -> extra JSON Schema keywords
Refinements = Mapping[str, Mapping[str, Mapping[str, Any]]]
# what serverless.keys.valid_id accepts (endpoint, template ids), as a JSON Schema pattern
ID_PATTERN: str = keys.ID_PATTERN
_PATH_PARAM = re.compile(r"\{(\w+)\}")
_ERROR_TEXT = {
    400: "Malformed request (bad JSON, a missing or mistyped field, a bad parameter or setting)",
    401: "Missing or invalid API key",
    403: "A valid key that may not use this route: a key scoped to other endpoints, or a key "
         "that is not the admin key on an admin route",
    404: "Unknown endpoint (not registered, no live worker serves it, no queued or running "
         "job), template, or unknown or expired job",
    409: "Conflict: the job's state does not allow this, an id is taken, or a template is in use",
    413: "Request body too large",
    429: "Rate limit of the endpoint or of the API key exceeded; see Retry-After",
    503: "The job store (Redis) is unavailable; retry shortly",
}


@dataclass(frozen=True)
class Param:
    """A query or header parameter of a route."""

    name: str
    where: str  # "query" | "header"
    description: str
    type: str = "string"
    bounds: tuple[int, int] | None = None  # minimum, maximum of an integer
    pattern: str | None = None  # a string's ECMA regular expression


@dataclass(frozen=True)
class Route:
    """One row of the route table: what create_app registers and what the spec documents."""

    name: str
    methods: tuple[str, ...]
    path: str
    handler: Handler
    summary: str
    body: type | None = None
    reply: type | None = None
    errors: tuple[int, ...] = ()
    params: tuple[Param, ...] = ()
    public: bool = False
    admin: bool = False  # needs the admin key (403 for any other valid key)
    empty: str = ""  # when set, the route may answer 204 No Content, for this reason
    # the body of the errors the handler answers itself (the middlewares' 401, 403, 413, 429 and
    # 503 are always ErrorReply): OpenAI's shape on the /openai/v1 routes
    error_reply: type = ErrorReply


def _version() -> str:
    try:
        return metadata.version("podq")
    except metadata.PackageNotFoundError:
        return "0"


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _parameters(route: Route) -> list[dict[str, Any]]:
    path = [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
        for n in _PATH_PARAM.findall(route.path)
    ]
    extra = [
        {"name": p.name, "in": p.where, "description": p.description, "schema": _param_schema(p)}
        for p in route.params
    ]
    return path + extra


def _param_schema(p: Param) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": p.type}
    if p.bounds is not None:
        schema["minimum"], schema["maximum"] = p.bounds
    if p.pattern is not None:
        schema["pattern"] = p.pattern
    return schema


_MIDDLEWARE_ERRORS = frozenset({401, 403, 413, 429, 503})  # answered before a route's handler


def _responses(route: Route, refs: dict[type, dict[str, Any]]) -> dict[str, Any]:
    ok = {"description": "OK"}
    if route.reply is not None:
        ok["content"] = _json_content(refs[route.reply])
    out: dict[str, Any] = {"200": ok}
    if route.empty:
        out["204"] = {"description": route.empty}
    codes = route.errors if route.public else (400, 401, 403, 404, 429, 503, *route.errors)
    for code in sorted(set(codes)):
        body = ErrorReply if code in _MIDDLEWARE_ERRORS else route.error_reply
        out[str(code)] = {"description": _ERROR_TEXT[code], "content": _json_content(refs[body])}
    return out


def _operation(route: Route, method: str, refs: dict[type, dict[str, Any]]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{route.name}_{method.lower()}".replace("-", "_"),
        "summary": route.summary,
        "parameters": _parameters(route),
        "responses": _responses(route, refs),
    }
    if route.body is not None and method != "GET":
        op["requestBody"] = {"required": True, "content": _json_content(refs[route.body])}
    if route.public:
        op["security"] = []
    return op


def _schemas(routes: Iterable[Route]) -> tuple[dict[type, dict[str, Any]], dict[str, Any]]:
    types = {t for r in routes for t in (r.body, r.reply, r.error_reply) if t is not None}
    ordered = sorted(types | {ErrorReply}, key=lambda t: t.__name__)
    refs, components = msgspec.json.schema_components(ordered, ref_template=_REF)
    return dict(zip(ordered, refs)), components


def _refine(components: dict[str, Any], refinements: Refinements) -> None:
    for name, properties in refinements.items():
        for prop, extra in properties.items():
            components[name]["properties"][prop].update(extra)


def build_spec(routes: Iterable[Route], refinements: Refinements | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document for `routes`.

    Args:
        routes: the route table.
        refinements: JSON Schema keywords to add to properties of component schemas, for the
            rules a handler checks that the Struct's types cannot say (ranges, patterns);
            `{"Policy": {"ttl": {"minimum": 1}}}`.

    Returns:
        The document as plain JSON-able data.
    """
    routes = list(routes)
    refs, components = _schemas(routes)
    _refine(components, refinements or {})
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        for method in route.methods:
            paths.setdefault(route.path, {})[method.lower()] = _operation(route, method, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "podq gateway", "version": _version()},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


async def openapi_json(request: web.Request) -> web.Response:
    """GET /openapi.json."""
    return web.Response(body=request.app[state.OPENAPI], content_type="application/json")
