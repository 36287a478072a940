"""GPU facts from NVML; the only module that imports pynvml (from the nvidia-ml-py package).

No NVML (no driver, no library, a CPU host) means "no GPUs": every function returns [] and
never raises, so workers and the scaler run unchanged on machines without a GPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from typing import Any

from serverless.model import GpuInfo

log = logging.getLogger("podq.nvml")

_state: dict[str, Any] = {"initialized": None}


def _nvml() -> Any | None:
    """The pynvml module, initialised once; None when NVML is not available here."""
    if _state["initialized"] is None:
        try:
            import pynvml

            pynvml.nvmlInit()
            _state["module"] = pynvml
            _state["initialized"] = True
        except Exception as e:  # ImportError, NVMLError_LibraryNotFound, driver errors...
            log.debug("NVML not available (%s): reporting no GPUs", e)
            _state["initialized"] = False
    return _state.get("module") if _state["initialized"] else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _device(nvml: Any, index: int) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    info = GpuInfo(index=index, name=_text(nvml.nvmlDeviceGetName(handle)),
                   uuid=_text(nvml.nvmlDeviceGetUUID(handle)))
    try:
        mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        info.memory_total_mb, info.memory_used_mb = mem.total >> 20, mem.used >> 20
        info.utilization_pct = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception as e:  # some devices (MIG, vGPU) refuse these queries
        log.debug("NVML could not read memory/utilization of GPU %d: %s", index, e)
    return info


def gpus(visible: str | None = None) -> list[GpuInfo]:
    """Every GPU NVML sees, or only those named in `visible` (CUDA_VISIBLE_DEVICES syntax:
    indices or UUIDs, comma-separated). [] without NVML."""
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        found = [_device(nvml, i) for i in range(nvml.nvmlDeviceGetCount())]
    except Exception as e:
        log.warning("NVML query failed (%s): reporting no GPUs", e)
        return []
    if visible is None:
        return found
    wanted = [v.strip() for v in visible.split(",") if v.strip()]
    return [g for g in found if str(g.index) in wanted or g.uuid in wanted]


def adopt_swarm_gpus(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Make the GPUs Docker Swarm assigned this worker's container the ones CUDA uses.

    Swarm hands a task its generic resources as `DOCKER_RESOURCE_<kind>` (kind NVIDIA-GPU, or
    PODQ_SWARM_GPU_KIND): the device uuids. Unless the node's NVIDIA runtime is configured to
    expose only those, the container sees every GPU, so the worker sets CUDA_VISIBLE_DEVICES to
    them itself, before the handler loads CUDA (soft isolation: NVML still lists all GPUs). An
    explicit CUDA_VISIBLE_DEVICES is left alone.

    Returns:
        The value set, or None when nothing was changed.
    """
    env = os.environ if environ is None else environ
    kind = env.get("PODQ_SWARM_GPU_KIND") or "NVIDIA-GPU"
    assigned = env.get(f"DOCKER_RESOURCE_{kind}", "").strip()
    if not assigned or "CUDA_VISIBLE_DEVICES" in env:
        return None
    env["CUDA_VISIBLE_DEVICES"] = assigned
    return assigned


def reset() -> None:
    """Forget the cached NVML state (tests, or after a driver reload)."""
    _state.clear()
    _state["initialized"] = None
