"""GPU facts: NVML absent means no GPUs; NVML is faked at its boundary (the pynvml module)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from serverless import nvml


@pytest.fixture(autouse=True)
def fresh_nvml() -> Iterator[None]:
    nvml.reset()
    yield
    nvml.reset()


def fake_pynvml(devices: list[dict]) -> types.ModuleType:
    """A stand-in for the pynvml module with the calls podq makes, answering like NVML."""
    mod = types.ModuleType("pynvml")
    mod.nvmlInit = lambda: None
    mod.nvmlDeviceGetCount = lambda: len(devices)
    mod.nvmlDeviceGetHandleByIndex = lambda i: devices[i]
    mod.nvmlDeviceGetName = lambda h: h["name"].encode()
    mod.nvmlDeviceGetUUID = lambda h: h["uuid"]
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=h["total"], used=h["used"])
    mod.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=h["util"], memory=0)
    return mod


def test_no_nvml_library_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = types.ModuleType("pynvml")

    def fail() -> None:
        raise OSError("NVML Shared Library Not Found")

    broken.nvmlInit = fail
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    assert nvml.gpus() == []


def test_real_pynvml_on_this_machine_never_raises() -> None:
    assert isinstance(nvml.gpus(), list)


def test_devices_reported_and_filtered_by_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [
        {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-aaa", "total": 80 << 30, "used": 1 << 30, "util": 7},
        {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-bbb", "total": 80 << 30, "used": 0, "util": 0},
    ]
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(devices))
    found = nvml.gpus()
    assert [(g.index, g.name, g.uuid, g.memory_total_mb, g.utilization_pct) for g in found] == [
        (0, "NVIDIA H100 80GB HBM3", "GPU-aaa", 81920, 7),
        (1, "NVIDIA H100 80GB HBM3", "GPU-bbb", 81920, 0),
    ]
    assert [g.uuid for g in nvml.gpus("1")] == ["GPU-bbb"]
    assert [g.index for g in nvml.gpus("GPU-aaa")] == [0]


def test_a_swarm_tasks_assigned_gpus_become_cuda_visible_devices() -> None:
    from serverless.nvml import adopt_swarm_gpus

    env = {"DOCKER_RESOURCE_NVIDIA-GPU": "GPU-aaa,GPU-bbb"}
    assert adopt_swarm_gpus(env) == "GPU-aaa,GPU-bbb"
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-aaa,GPU-bbb"
    explicit = {"DOCKER_RESOURCE_NVIDIA-GPU": "GPU-aaa", "CUDA_VISIBLE_DEVICES": "0"}
    assert adopt_swarm_gpus(explicit) is None and explicit["CUDA_VISIBLE_DEVICES"] == "0"
    other_kind = {"PODQ_SWARM_GPU_KIND": "gpu", "DOCKER_RESOURCE_gpu": "GPU-ccc"}
    assert adopt_swarm_gpus(other_kind) == "GPU-ccc"
    assert adopt_swarm_gpus({}) is None
