"""podq's HTTP gateway: RunPod's /v2 API over the Redis job store (aiohttp, stateless)."""

from __future__ import annotations

from serverless.gateway.app import GatewayOptions, create_app
from serverless.gateway.server import RunningGateway, run_gateway, serve, start_gateway

__all__ = [
    "GatewayOptions",
    "RunningGateway",
    "create_app",
    "run_gateway",
    "serve",
    "start_gateway",
]
