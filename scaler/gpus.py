"""Which GPUs a new worker gets: match an endpoint's gpu_ids and gpu_count against the free
devices of this host (pure; the inventory comes from serverless/nvml.py).

gpu_ids is a comma-separated list of RunPod pool ids (AMPERE_24, HOPPER_141, ...), GPU names
("H100", "RTX 4090"; matched as a case-insensitive substring of NVML's name) or ANY.
gpu_count 0 means a CPU worker. ANY on a host without GPUs also gives a CPU worker, so an
endpoint runs on a laptop or CI unchanged; any other gpu_ids there is a clear error.
"""

from __future__ import annotations

from collections.abc import Iterable

from serverless.model import EndpointConfig, GpuInfo
from serverless.registry import ANY_GPU, GPU_POOLS


class NoGpu(Exception):
    """The endpoint needs GPUs this host does not have (free); the message says which."""


def wanted_names(gpu_ids: str) -> list[str] | None:
    """GPU name fragments `gpu_ids` accepts; None means any GPU."""
    names: list[str] = []
    for part in (p.strip() for p in gpu_ids.split(",")):
        if part.upper() == ANY_GPU:
            return None
        names.extend(GPU_POOLS.get(part, (part,)))
    return names


def matches(gpu: GpuInfo, names: list[str] | None) -> bool:
    return names is None or any(n.lower() in gpu.name.lower() for n in names)


def assign(endpoint: EndpointConfig, inventory: list[GpuInfo], in_use: Iterable[str]) -> list[str]:
    """UUIDs of the GPUs a new worker of `endpoint` gets ([] for a CPU worker).

    Raises:
        NoGpu: when the endpoint needs GPUs that are missing or all taken.
    """
    if endpoint.gpu_count == 0:
        return []
    names = wanted_names(endpoint.gpu_ids)
    if not inventory:
        if names is None:
            return []
        raise NoGpu(
            f"endpoint {endpoint.id!r} needs {endpoint.gpu_count} GPU(s) of {endpoint.gpu_ids} "
            "but this host has no GPU (NVML found none); set gpu_ids to ANY or gpu_count to 0 "
            "to run on CPU, or run the scaler on a GPU host"
        )
    taken = set(in_use)
    free = [g for g in inventory if g.uuid not in taken and matches(g, names)]
    if len(free) < endpoint.gpu_count:
        have = ", ".join(sorted({g.name for g in inventory})) or "none"
        raise NoGpu(
            f"endpoint {endpoint.id!r} needs {endpoint.gpu_count} free GPU(s) of "
            f"{endpoint.gpu_ids}; {len(free)} free match (this host has: {have})"
        )
    return [g.uuid for g in free[: endpoint.gpu_count]]
