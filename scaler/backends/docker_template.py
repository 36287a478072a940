"""How a template's container settings become Docker Engine API fields (pure; docker.py applies them).

A template's container settings (WorkerSpec volume_gb, ports, disk_gb) are applied, or said
out loud where the engine cannot (docs/docker.md):

- volume: one named volume per endpoint, `podq-vol-<endpoint>`, shared by its workers and kept
  when they stop (a model cache survives scale-to-zero); created on the first start with the
  local driver's `size` option, which needs quota support (xfs with pquota). Where the engine
  refuses the size, the volume is created without it and a warning quotes the engine. It is
  mounted at the spec's volume_mount_path.
- ports: exposed as TCP; on a bridge or named network each is published to a host port the
  engine picks (`docker port <container> 8888`). On the host network (the default) the worker's
  ports are the host's own: nothing to publish, and a warning says a second worker on the same
  host cannot bind them.
- disk: `HostConfig.StorageOpt size` where the storage driver limits a container's writable
  layer (devicemapper, btrfs, zfs; overlay2 and vfs over xfs with pquota), read once from the
  engine's /info; elsewhere, or when the engine refuses it, the container starts without a
  limit and ONE warning per endpoint names the driver and why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from scaler.backends.base import WorkerSpec

VOLUME_PREFIX = "podq-vol-"
# storage drivers whose containers take `StorageOpt size` (Engine API, `docker run --storage-opt`)
DISK_LIMIT_DRIVERS = frozenset({"devicemapper", "btrfs", "zfs"})
QUOTA_DRIVERS = frozenset({"overlay2", "vfs"})  # only over xfs mounted with pquota
# what an engine answers when asked for a size it cannot enforce (volume or container)
_NO_QUOTA = ("quota", "storage-opt", "storage opt")


def volume_name(endpoint_id: str) -> str:
    """`podq-vol-<endpoint>`: the endpoint's volume (characters Docker refuses become `-`)."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"{VOLUME_PREFIX}{endpoint_id}")


def disk_limit_refusal(info: Mapping[str, Any]) -> str | None:
    """Why this engine cannot limit a container's disk, or None when it can (pure).

    Args:
        info: the engine's `GET /info` (its `Driver` and `DriverStatus` pairs).

    Returns:
        None for devicemapper, btrfs, zfs, and overlay2 / vfs over xfs (which also needs the
        pquota mount option: the engine's own refusal says so at create); else the reason.
    """
    driver = str(info.get("Driver") or "unknown")
    status = {str(k): str(v) for k, v in info.get("DriverStatus") or []}
    backing = status.get("Backing Filesystem", "")
    if driver in DISK_LIMIT_DRIVERS or (driver in QUOTA_DRIVERS and backing == "xfs"):
        return None
    over = f" over {backing}" if backing else ""
    return (f"storage driver {driver}{over} cannot limit a container's disk (that needs devicemapper, "
            "btrfs, zfs, or overlay2 on xfs mounted with pquota)")


def apply_template_settings(spec: WorkerSpec, network_mode: str, disk_limit: bool,
                            config: dict[str, Any]) -> None:
    """Add the spec's volume mount, ports and disk limit to a container create `config` (pure)."""
    host_config = config["HostConfig"]
    if spec.volume_gb:
        host_config["Mounts"] = [{"Type": "volume", "Source": volume_name(spec.endpoint_id),
                                  "Target": spec.volume_mount_path}]
    if spec.ports:
        config["ExposedPorts"] = {f"{port}/tcp": {} for port in spec.ports}
        if network_mode != "host":  # the engine discards bindings on the host network
            host_config["PortBindings"] = {f"{port}/tcp": [{"HostPort": ""}] for port in spec.ports}
    if disk_limit and spec.disk_gb:
        host_config["StorageOpt"] = {"size": f"{spec.disk_gb}G"}


def is_quota_refusal(engine_said: str) -> bool:
    """The engine refused a size (volume or container disk) it cannot enforce."""
    return any(word in engine_said.lower() for word in _NO_QUOTA)
