"""The one interface every backend implements: start, stop, list (like httpx transports).

A backend only acts; the scaler decides. `list()` is the truth the scaler reconciles against
after its own restart, so every backend must find its workers again from the outside (process
environment, container labels, pod labels), never from memory.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

# Labels every backend puts on the workers it starts.
LABEL_MANAGED = "podq.managed"
LABEL_ENDPOINT = "podq.endpoint"
LABEL_WORKER = "podq.worker"
LABEL_VERSION = "podq.version"


class BackendError(Exception):
    """A backend could not do what it was asked; the message names the cause and the fix."""


class WorkerSpec(msgspec.Struct, kw_only=True):
    """Everything needed to start one worker."""

    endpoint_id: str
    worker_id: str
    version: int
    redis_url: str
    image: str = ""
    # argv to run; empty means the backend's default (`python -m worker <handler>`)
    command: list[str] = []
    handler: str | None = None
    env: dict[str, str] = {}
    gpu_uuids: list[str] = []
    labels: dict[str, str] = {}
    # "runpod": an unmodified RunPod worker (its own command / the image's CMD, RunPod's env in
    # `env`); each start must be a fresh process or container, never a restart of the old one
    protocol: str = "podq"


class WorkerHandle(msgspec.Struct, kw_only=True):
    """A worker as a backend lists it."""

    worker_id: str
    endpoint_id: str
    version: int
    ref: str  # pid, container id, pod name
    running: bool = True
    gpu_uuids: list[str] = []
    started_at: int = 0


class Backend(Protocol):
    name: str

    async def start(self, spec: WorkerSpec) -> WorkerHandle: ...

    async def stop(self, handle: WorkerHandle, grace_s: float) -> None: ...

    async def list(self) -> list[WorkerHandle]: ...

    async def close(self) -> None: ...
