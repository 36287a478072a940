from __future__ import annotations

import pytest

from scaler.gpus import NoGpu, assign
from serverless.model import EndpointConfig, GpuInfo

H200 = [GpuInfo(index=i, name="NVIDIA H200", uuid=f"GPU-h{i}") for i in range(2)]
MIXED = [GpuInfo(index=0, name="NVIDIA GeForce RTX 4090", uuid="GPU-a"),
         GpuInfo(index=1, name="NVIDIA A100-SXM4-80GB", uuid="GPU-b")]


def ep(gpu_ids: str = "ANY", gpu_count: int = 1) -> EndpointConfig:
    return EndpointConfig(id="e", name="e", template_id="t", gpu_ids=gpu_ids, gpu_count=gpu_count)


def test_pools_and_names_match_nvml_names() -> None:
    assert assign(ep("HOPPER_141"), H200, []) == ["GPU-h0"]
    assert assign(ep("AMPERE_80"), MIXED, []) == ["GPU-b"]
    assert assign(ep("ADA_24,AMPERE_80"), MIXED, ["GPU-a"]) == ["GPU-b"]
    assert assign(ep("RTX 4090"), MIXED, []) == ["GPU-a"]


def test_each_worker_gets_its_own_devices() -> None:
    assert assign(ep("ANY", 2), H200, []) == ["GPU-h0", "GPU-h1"]
    assert assign(ep("ANY"), H200, ["GPU-h0"]) == ["GPU-h1"]
    with pytest.raises(NoGpu, match="needs 1 free GPU"):
        assign(ep("ANY"), H200, ["GPU-h0", "GPU-h1"])


def test_cpu_host() -> None:
    assert assign(ep("ANY"), [], []) == []  # ANY runs on CPU where there is no GPU
    assert assign(ep("AMPERE_24", gpu_count=0), [], []) == []  # gpu_count 0 is a CPU worker
    with pytest.raises(NoGpu, match="this host has no GPU"):
        assign(ep("HOPPER_141"), [], [])
