"""RunPod's admin GraphQL API (the subset the public `runpod` package sends), on podq's registry.

    wire.py       the POST /graphql body and reply (msgspec Structs)
    schema.py     the SDL: RunPod's names, input types and fields; resolvers bound to it
    refusals.py   RunPod fields podq does not serve (pods, users, ...): the validation rule
    mapping.py    RunPod fields <-> podq registry fields (pure)
    resolvers.py  queries and mutations on serverless.registry, through the /v1 API's rules
    executor.py   parse, validate, execute with graphql-core; errors as GraphQL errors

The gateway route is serverless/gateway/graphql_routes.py.
"""

from __future__ import annotations

from serverless.graphql.wire import GraphQLReply, GraphQLRequest

__all__ = ["GraphQLReply", "GraphQLRequest"]
