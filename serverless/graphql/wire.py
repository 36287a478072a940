"""GraphQL over HTTP on the wire: the POST body and the reply, as msgspec Structs.

The body is the GraphQL-over-HTTP request (`query`, optional `variables` and
`operationName`; anything else is refused with 400 by the typed decoder). The reply is 200 with
`data` and/or `errors` for every request the gateway could decode: that is the convention
RunPod's client parses (it raises QueryError on `errors[0].message`).
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType


class GraphQLRequest(msgspec.Struct, forbid_unknown_fields=True):
    """POST /graphql: one GraphQL operation (RunPod's package sends `{"query": ...}`)."""

    query: str
    variables: dict[str, Any] | None = None
    operationName: str | None = None


class Location(msgspec.Struct):
    """Where in the query an error is (1-based)."""

    line: int
    column: int


class GraphQLErrorOut(msgspec.Struct, omit_defaults=True):
    """One GraphQL error: its message names the field, argument or setting at fault."""

    message: str
    locations: list[Location] | UnsetType = UNSET
    path: list[str | int] | UnsetType = UNSET


class GraphQLReply(msgspec.Struct, omit_defaults=True):
    """The answer: `data` when the operation ran (fields that failed are null), `errors` when
    anything was refused."""

    data: dict[str, Any] | None | UnsetType = UNSET
    errors: list[GraphQLErrorOut] | UnsetType = UNSET
