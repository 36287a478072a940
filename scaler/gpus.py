"""Which GPUs a new worker gets: match an endpoint's gpu_ids and gpu_count against the free
devices of this host (pure; the inventory comes from serverless/nvml.py).

gpu_ids is a comma-separated list of RunPod pool ids (AMPERE_24, HOPPER_141, ...), GPU models
("H100", "RTX 4090", "NVIDIA H100 80GB HBM3") or ANY. A model matches a device name exactly, not
as a substring (`same_model`): "L4" is not an L40S and "A40" is not an RTX A4000.
gpu_count 0 means a CPU worker. ANY on a host without GPUs also gives a CPU worker, so an
endpoint runs on a laptop or CI unchanged; any other gpu_ids there is a clear error.
"""

from __future__ import annotations

import re
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


# Words a device name may carry after its model: memory, form factor, interconnect, edition.
# "ti", "super", "sff", "ada" or "mig" are not among them: those are other products (or a MIG
# slice, which is not the pool's whole GPU).
_VARIANT = re.compile(
    r"^(\d+gb|sxm\d*|pcie|hbm\d*e?|nvl|generation|server|workstation|edition|max-q|blackwell)$")
_MAKERS = frozenset({"nvidia", "geforce", "tesla", "quadro"})


def _words(name: str) -> list[str]:
    """A GPU name as lower-case words without the maker's prefixes: NVML's "NVIDIA GeForce RTX
    4090" and the nvidia.com/gpu.product label "NVIDIA-GeForce-RTX-4090" both give
    ["rtx", "4090"]."""
    words = [w for w in re.split(r"[\s_-]+", name.lower()) if w]
    while words and words[0] in _MAKERS:
        words.pop(0)
    return words


def same_model(wanted: str, device: str) -> bool:
    """Whether `device` (an NVML name or a gpu.product label) is the model `wanted` names:
    the same words, then only variant words (memory, form factor, edition)."""
    want, have = _words(wanted), _words(device)
    if not want or have[:len(want)] != want:
        return False
    return all(_VARIANT.match(w) for w in have[len(want):])


def matches(gpu: GpuInfo, names: list[str] | None) -> bool:
    return names is None or any(same_model(n, gpu.name) for n in names)


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
    free = _free(inventory, names, in_use)
    if len(free) < endpoint.gpu_count:
        have = ", ".join(sorted({g.name for g in inventory})) or "none"
        raise NoGpu(
            f"endpoint {endpoint.id!r} needs {endpoint.gpu_count} free GPU(s) of "
            f"{endpoint.gpu_ids}; {len(free)} free match (this host has: {have})"
        )
    return [g.uuid for g in free[: endpoint.gpu_count]]


def room(endpoint: EndpointConfig, inventory: list[GpuInfo], in_use: Iterable[str]) -> int | None:
    """How many more workers of `endpoint` the free devices can take; None when devices do not
    bound it (a CPU worker: gpu_count 0, or ANY on a host without GPUs)."""
    if endpoint.gpu_count == 0 or not inventory:
        return None
    return len(_free(inventory, wanted_names(endpoint.gpu_ids), in_use)) // endpoint.gpu_count


def _free(inventory: list[GpuInfo], names: list[str] | None, in_use: Iterable[str]) -> list[GpuInfo]:
    taken = set(in_use)
    return [g for g in inventory if g.uuid not in taken and matches(g, names)]
