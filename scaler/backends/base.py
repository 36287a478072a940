"""The one interface every backend implements: start, stop, list (like httpx transports).

A backend only acts; the scaler decides. `list()` is the truth the scaler reconciles against
after its own restart, so every backend must find its workers again from the outside (process
environment, container labels, pod labels), never from memory.

GPUs: a backend on one host (`places_gpus = False`: process, Docker) is handed the devices the
scaler picked from this host's NVML (`WorkerSpec.gpu_uuids`). A cluster backend
(`places_gpus = True`) gets the request instead (`gpu_count`, `gpu_names`) and its engine's
scheduler picks the node and devices; until it can, the worker is listed with `pending` set to
the engine's reason, and the scaler neither counts it unhealthy nor restarts it.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from serverless.model import Template
from serverless.registry import DEFAULT_VOLUME_MOUNT_PATH, parse_ports

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
    gpu_uuids: list[str] = []  # the devices to use (backends that do not place GPUs)
    gpu_count: int = 0  # GPUs the worker needs (0: a CPU worker)
    # the GPU models it may get (exact names, scaler/gpus.same_model); None: any model
    gpu_names: list[str] | None = None
    labels: dict[str, str] = {}
    cpus: float = 0.0  # CPU cores the worker may use (0: no limit; container backends only)
    memory_mb: int = 0  # its memory limit in MiB (0: no limit; container backends only)
    # "runpod": an unmodified RunPod worker (its own command / the image's CMD, RunPod's env in
    # `env`); each start must be a fresh process or container, never a restart of the old one
    protocol: str = "podq"
    # the template's container settings (registry.BACKEND_FEATURES says which backend applies
    # which; the registry refuses the others before a spec is ever built):
    volume_gb: int = 0  # a volume of this size for the endpoint (0: none)
    volume_mount_path: str = ""  # where it is mounted in the worker
    ports: list[int] = []  # TCP ports the worker listens on, to publish
    disk_gb: int = 0  # the container's writable layer limit (0: none)


def container_settings(template: Template) -> dict[str, Any]:
    """The WorkerSpec fields a template's container settings become (pure).

    Args:
        template: a stored (so valid) template.

    Returns:
        volume_gb, volume_mount_path (RunPod's /runpod-volume when a volume names no path),
        ports (the TCP port numbers of RunPod's "8888/http,22/tcp") and disk_gb.
    """
    path = (template.volume_mount_path or DEFAULT_VOLUME_MOUNT_PATH) if template.volume_in_gb else ""
    return {"volume_gb": template.volume_in_gb, "volume_mount_path": path,
            "ports": [port for port, _ in parse_ports(template.ports or "")],
            "disk_gb": template.container_disk_in_gb}


def refuse_volume_and_ports(spec: WorkerSpec, backend: str) -> None:
    """For backends that apply neither a template's volume nor its ports (the registry refuses
    such endpoints first; this guards a spec built some other way).

    Raises:
        BackendError: naming the settings and the fix.
    """
    given = [name for name, value in (("volume_in_gb", spec.volume_gb), ("ports", spec.ports)) if value]
    if given:
        raise BackendError(f"worker {spec.worker_id}: the {backend} backend cannot apply the template's "
                           f"{' and '.join(given)}: use the docker backend, or a template without them")


class WorkerHandle(msgspec.Struct, kw_only=True):
    """A worker as a backend lists it."""

    worker_id: str
    endpoint_id: str
    version: int
    ref: str  # pid, container id, pod name
    running: bool = True
    gpu_uuids: list[str] = []
    # when it was started, or placed by a cluster engine (the ready timeout counts from here)
    started_at: int = 0
    # not placed yet, and the engine's reason ("0/3 nodes have a free nvidia.com/gpu"); '' once
    # placed (only backends that place GPUs report it)
    pending: str = ""
    # placed, but the engine says its container cannot start (ImagePullBackOff, ...) or why it
    # ended (OOMKilled, an exit code); shown in the endpoint's status_reason and the stop's log
    problem: str = ""


class Backend(Protocol):
    name: str
    places_gpus: bool  # True: the engine picks nodes and GPUs (WorkerSpec.gpu_count/gpu_names)

    async def start(self, spec: WorkerSpec) -> WorkerHandle: ...

    async def stop(self, handle: WorkerHandle, grace_s: float) -> None: ...

    async def list(self) -> list[WorkerHandle]: ...

    async def close(self) -> None: ...
