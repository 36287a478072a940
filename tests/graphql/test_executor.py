"""How executor.error_out shapes graphql-core's errors: a podq error keeps its message, a bug
is named by its field with no detail, and Redis being down goes on to the gateway (503)."""

from __future__ import annotations

import pytest
from graphql import GraphQLError
from redis.exceptions import ConnectionError as RedisConnectionError

from serverless.errors import Conflict
from serverless.graphql.executor import error_out
from serverless.graphql.wire import GraphQLErrorOut


def _raised(cause: Exception) -> GraphQLError:
    return GraphQLError(str(cause), path=["saveEndpoint", "id"], original_error=cause)


def test_a_podq_error_keeps_its_message() -> None:
    assert error_out(_raised(Conflict("template 't' is used"))) == GraphQLErrorOut(
        "template 't' is used", path=["saveEndpoint", "id"])


def test_a_bug_is_named_by_its_field_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    out = error_out(_raised(KeyError("secret detail")))
    assert out.message == "internal error resolving saveEndpoint.id; the gateway log has the details"
    assert "GraphQL resolver failed at saveEndpoint.id" in caplog.text


def test_redis_down_is_raised_for_the_gateways_503() -> None:
    with pytest.raises(RedisConnectionError):
        error_out(_raised(RedisConnectionError("refused")))
