"""POST /graphql: RunPod's admin GraphQL API (issue 14), on podq's registry, admin key only.

What RUNPOD_API_BASE_URL points at: the public `runpod` package's create_template,
create_endpoint, get_endpoints and update_endpoint_template (and RunPod's documented
deleteEndpoint / deleteTemplate) run unchanged against the gateway. The package sends
`Authorization: Bearer <key>`, which the auth middleware reads as on every route; RunPod's curl
examples send `?api_key=<key>`, which this route takes too (auth.QUERY_KEY_ROUTES).

A body that is not a GraphQL-over-HTTP request (bad JSON, no `query`, an unknown member) is a
400 `{"error": ...}`; anything the GraphQL layer refuses is a 200 with `errors`
(serverless/graphql/executor.py), which is what RunPod's client parses.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from serverless.gateway import state
from serverless.gateway.limits import decode_body, read_body
from serverless.gateway.openapi import Param, Route
from serverless.graphql import executor, resolvers
from serverless.graphql.wire import GraphQLReply, GraphQLRequest

GRAPHQL_MAX_BYTES = 256 * 1024
_decoder = msgspec.json.Decoder(GraphQLRequest)
_encode = msgspec.json.Encoder().encode


async def graphql(request: web.Request) -> web.Response:
    """POST /graphql: run one query or mutation."""
    body = decode_body(_decoder, await read_body(request, GRAPHQL_MAX_BYTES))
    context = resolvers.Context(request.app[state.REGISTRY])
    reply = await executor.answer(resolvers.SCHEMA, body, context)
    return web.Response(body=_encode(reply), content_type="application/json")


ROUTES: tuple[Route, ...] = (
    Route("graphql", ("POST",), "/graphql", graphql,
          "RunPod's admin GraphQL API: templates and endpoints (the `runpod` package's subset)",
          GraphQLRequest, GraphQLReply, (413,), admin=True,
          params=(Param("api_key", "query", "the admin key, as RunPod's curl examples send it "
                        "(the Authorization header wins when both are sent)"),)),
)
