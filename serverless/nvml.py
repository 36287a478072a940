"""GPU facts from NVML; the only module that imports pynvml (from the nvidia-ml-py package).

No NVML (no driver, no library, a CPU host) means "no GPUs": every function returns [] and
never raises, so workers and the scaler run unchanged on machines without a GPU.
"""

from __future__ import annotations

import logging
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


def reset() -> None:
    """Forget the cached NVML state (tests, or after a driver reload)."""
    _state.clear()
    _state["initialized"] = None
