"""One GraphQL request, start to end, with graphql-core: parse, validate, execute, shape errors.

- parse: bounded (MAX_TOKENS), so a huge query is refused before any work is done;
- validate: the specification's rules, with refusals.RunpodFieldsRule naming the RunPod fields
  podq does not serve;
- execute: the schema's resolvers, with a resolvers.Context.

Every error becomes a GraphQL error in a 200 reply (wire.GraphQLReply), the GraphQL-over-HTTP
convention RunPod's client reads. A PodqError from a resolver (the registry's BadRequest,
NotFound, Conflict) keeps its message. Redis being down is re-raised, so the gateway answers
503 as on every route; any other exception is a bug: logged with its traceback, answered with a
message that names the field and no detail.
"""

from __future__ import annotations

import logging
from inspect import isawaitable
from typing import Any

from graphql import ExecutionResult, GraphQLError, GraphQLSchema, execute, parse, validate
from redis.exceptions import RedisError

from serverless.errors import PodqError
from serverless.graphql.refusals import RULES
from serverless.graphql.wire import GraphQLErrorOut, GraphQLReply, GraphQLRequest, Location

log = logging.getLogger("podq.gateway")

# far above any query RunPod's package sends (a template with 100 env vars is about 700 tokens)
MAX_TOKENS = 20_000


def error_out(error: GraphQLError) -> GraphQLErrorOut:
    """A graphql-core error as the reply shows it; a resolver's bug keeps its detail in the log.

    Raises:
        RedisError: the job store is down (the gateway answers 503).
    """
    cause = error.original_error
    if isinstance(cause, RedisError):
        raise cause
    message = error.message
    if cause is not None and not isinstance(cause, (PodqError, GraphQLError)):
        where = ".".join(map(str, error.path or []))
        log.error("GraphQL resolver failed at %s", where, exc_info=cause)
        message = f"internal error resolving {where}; the gateway log has the details"
    out = GraphQLErrorOut(message)
    if error.locations:
        out.locations = [Location(loc.line, loc.column) for loc in error.locations]
    if error.path:
        out.path = list(error.path)
    return out


def _errors(errors: list[GraphQLError]) -> list[GraphQLErrorOut]:
    return [error_out(e) for e in errors]


async def answer(schema: GraphQLSchema, request: GraphQLRequest, context: Any) -> GraphQLReply:
    """Run one GraphQL request.

    Args:
        schema: the executable schema (resolvers.SCHEMA).
        request: the decoded POST body.
        context: what resolvers read (resolvers.Context).

    Returns:
        `data` when the operation ran, `errors` for what was refused or failed.
    """
    try:
        document = parse(request.query, max_tokens=MAX_TOKENS)
    except GraphQLError as e:
        return GraphQLReply(errors=[error_out(e)])
    if problems := validate(schema, document, RULES):
        return GraphQLReply(errors=_errors(problems))
    result = execute(schema, document, context_value=context,
                     variable_values=request.variables, operation_name=request.operationName)
    if isawaitable(result):
        result = await result
    assert isinstance(result, ExecutionResult), "no @defer or @stream in podq's schema"
    if result.errors:
        return GraphQLReply(data=result.data, errors=_errors(list(result.errors)))
    return GraphQLReply(data=result.data)
