"""podq's clients, with RunPod's names: Endpoint and Job (blocking, httpx), AsyncioEndpoint and
AsyncioJob (asyncio, aiohttp). The shared, I/O-free logic is in `protocol.py`."""

from __future__ import annotations

from serverless.client.aio import AsyncioEndpoint, AsyncioJob
from serverless.client.sync import Endpoint, Job

__all__ = ["AsyncioEndpoint", "AsyncioJob", "Endpoint", "Job"]
