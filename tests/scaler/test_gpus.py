from __future__ import annotations

import pytest

from scaler.gpus import NoGpu, assign, room, same_model
from serverless.model import EndpointConfig, GpuInfo
from serverless.registry import GPU_POOLS

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


@pytest.mark.parametrize("endpoint, inventory, in_use, expected", [
    (ep("ANY"), H200, [], 2),
    (ep("ANY", 2), H200, [], 1),
    (ep("ANY"), H200, ["GPU-h1"], 1),
    (ep("ANY"), H200, ["GPU-h0", "GPU-h1"], 0),
    (ep("ANY", 2), H200, ["GPU-h0"], 0),
    (ep("AMPERE_80"), MIXED, [], 1),  # only the A100 matches
    (ep("AMPERE_80"), MIXED, ["GPU-b"], 0),
    (ep("HOPPER_141"), MIXED, [], 0),
    (ep("ANY"), [], [], None),  # a CPU worker: devices do not bound it
    (ep("AMPERE_24", gpu_count=0), H200, [], None),
])
def test_room_counts_workers_the_free_matching_devices_can_take(endpoint, inventory, in_use,
                                                                expected) -> None:
    assert room(endpoint, inventory, in_use) == expected


# Real device names: NVML's (nvidia-smi --query-gpu=name) and the nvidia.com/gpu.product labels
# GPU feature discovery writes on Kubernetes nodes (NVML's name with dashes).
DEVICES = {
    "NVIDIA RTX A4000": "AMPERE_16", "NVIDIA-RTX-A4000": "AMPERE_16",
    "NVIDIA RTX 4000 Ada Generation": "AMPERE_16", "NVIDIA RTX 2000 Ada Generation": "AMPERE_16",
    "NVIDIA RTX A4500": "AMPERE_24", "NVIDIA RTX A5000": "AMPERE_24",
    "NVIDIA GeForce RTX 3090": "AMPERE_24", "NVIDIA-GeForce-RTX-3090": "AMPERE_24",
    "NVIDIA L4": "ADA_24", "NVIDIA-L4": "ADA_24", "NVIDIA GeForce RTX 4090": "ADA_24",
    "NVIDIA GeForce RTX 5090": "ADA_32_PRO",
    "NVIDIA RTX A6000": "AMPERE_48", "NVIDIA A40": "AMPERE_48", "NVIDIA-A40": "AMPERE_48",
    "NVIDIA L40": "ADA_48_PRO", "NVIDIA L40S": "ADA_48_PRO", "NVIDIA-L40S": "ADA_48_PRO",
    "NVIDIA RTX 6000 Ada Generation": "ADA_48_PRO",
    "NVIDIA A100-SXM4-80GB": "AMPERE_80", "NVIDIA A100 80GB PCIe": "AMPERE_80",
    "NVIDIA A100-PCIE-40GB": "AMPERE_80", "A100-SXM4-40GB": "AMPERE_80",
    "NVIDIA H100 80GB HBM3": "ADA_80_PRO", "NVIDIA-H100-80GB-HBM3": "ADA_80_PRO",
    "NVIDIA H100 PCIe": "ADA_80_PRO", "NVIDIA H100 NVL": "ADA_80_PRO",
    "NVIDIA RTX PRO 6000 Blackwell Server Edition": "BLACKWELL_96",
    "NVIDIA RTX PRO 6000 Blackwell Workstation Edition": "BLACKWELL_96",
    "NVIDIA H200": "HOPPER_141", "NVIDIA-H200": "HOPPER_141", "NVIDIA H200 NVL": "HOPPER_141",
    "NVIDIA B200": "BLACKWELL_180",
    # in no pool: a MIG slice, other products whose names start like a pool's model
    "A100-SXM4-40GB-MIG-1g.5gb": None, "NVIDIA GeForce RTX 3090 Ti": None,
    "NVIDIA RTX 4000 SFF Ada Generation": None, "Quadro RTX 6000": None,
    "Tesla V100-SXM2-16GB": None, "NVIDIA GeForce GT 710": None, "GeForce-GT-710": None,
}


@pytest.mark.parametrize("device", sorted(DEVICES))
def test_every_pool_matches_exactly_its_own_devices(device: str) -> None:
    gpu = [GpuInfo(index=0, name=device, uuid="GPU-x")]
    matched = set()
    for pool in GPU_POOLS:
        try:
            assign(ep(pool), gpu, [])
            matched.add(pool)
        except NoGpu:
            pass
    expected = {DEVICES[device]} if DEVICES[device] else set()
    assert matched == expected, f"{device!r} matched {matched or 'no pool'}, not {expected or 'no pool'}"


def test_every_pool_has_a_device_in_the_table() -> None:
    assert set(GPU_POOLS) == {p for p in DEVICES.values() if p}


@pytest.mark.parametrize(("wanted", "device", "same"), [
    ("L4", "NVIDIA L40S", False),  # a substring test matched these
    ("A40", "NVIDIA RTX A4000", False),
    ("L40", "NVIDIA L40S", False),
    ("RTX 6000 Ada", "NVIDIA RTX PRO 6000 Blackwell Server Edition", False),
    ("H100", "NVIDIA H100 80GB HBM3", True),
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", False),
    ("NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3", True),
    ("rtx 4090", "NVIDIA GeForce RTX 4090", True),
    ("V100", "Tesla V100-SXM2-16GB", True),
    ("", "NVIDIA H200", False),
])
def test_same_model_reads_names_as_words(wanted: str, device: str, same: bool) -> None:
    assert same_model(wanted, device) is same
