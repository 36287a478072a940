"""GraphQL fixtures: the real gateway of tests/gateway (real port, the suite's redis-server)
and a helper that posts one GraphQL request to it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.gateway.conftest import Answer, Gateway, gateway, make_gateway  # noqa: F401 (fixtures)

Post = Callable[..., Awaitable[Answer]]


@pytest.fixture
def graphql(gateway: Gateway) -> Post:
    """`await graphql(query, variables=None, **call_options)`: POST /graphql with the admin key."""

    async def post(query: str, variables: dict[str, Any] | None = None, **options: Any) -> Answer:
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        return await gateway.call("POST", "/graphql", json=body, **options)

    return post
