"""Scale Launch's client against podq: `LaunchClient` and Launch's classes, with Launch's names.

    from serverless.launch import EndpointRequest, LaunchClient

    client = LaunchClient(api_key=KEY, endpoint="http://podq:8000", self_hosted=True)

Only the client's construction differs from Launch; docs/launch.md maps every call.
"""

from __future__ import annotations

from serverless.launch.client import LaunchClient
from serverless.launch.endpoints import AsyncEndpoint, Endpoint, StreamingEndpoint, SyncEndpoint
from serverless.launch.model import (
    AsyncEndpointBatchResponse, EndpointRequest, EndpointResponse, EndpointResponseFuture,
    ModelBundle, ModelEndpoint,
)

__all__ = [
    "AsyncEndpoint",
    "AsyncEndpointBatchResponse",
    "Endpoint",
    "EndpointRequest",
    "EndpointResponse",
    "EndpointResponseFuture",
    "LaunchClient",
    "ModelBundle",
    "ModelEndpoint",
    "StreamingEndpoint",
    "SyncEndpoint",
]
