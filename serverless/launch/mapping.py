"""Pure: Launch's endpoint arguments -> podq's template and endpoint fields, and back.

A Launch endpoint is one podq endpoint whose id is its name, running its own template
`launch-<name>` (the bundle's runner env plus the endpoint's `per_worker`, type and hooks), so
that `per_worker` (a worker's concurrency) and the endpoint type live with the endpoint.

    Launch                      podq
    cpus, memory ("4Gi")        cpus, memory_gb (container backends; not limited on `process`)
    gpus, gpu_type              gpu_count, gpu_ids (GPU_TYPES)
    min_workers, max_workers    workers_min, workers_max
    per_worker                  REQUEST_COUNT scaler_value, and each worker's concurrency
    endpoint_type               sync / async / streaming (how predict calls; kept in the template)
    post_inference_hooks        ["callback"] -> the endpoint's webhook (default_callback_url)
    labels                      labels
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from serverless import keys
from serverless.errors import BadRequest

TEMPLATE_PREFIX = "launch-"
ENDPOINT_TYPES = ("sync", "async", "streaming")
HOOKS = ("callback",)
# Launch's gpu_type -> podq's gpu_ids: a RunPod pool id where one holds exactly that GPU, else
# the GPU's model name (matched against NVML / node labels by scaler/gpus.py)
GPU_TYPES: dict[str, str] = {
    "nvidia-tesla-t4": "T4",
    "nvidia-ampere-a10": "A10",
    "nvidia-ampere-a100": "AMPERE_80",
    "nvidia-ampere-a100e": "AMPERE_80",
    "nvidia-hopper-h100": "ADA_80_PRO",
}
# Launch types podq cannot schedule, and why
REFUSED_GPU_TYPES: dict[str, str] = {
    "nvidia-hopper-h100-1g20gb": "a MIG slice of an H100",
    "nvidia-hopper-h100-3g40gb": "a MIG slice of an H100",
}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T)?\s*$")
_UNIT_BYTES = {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
               "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
# the env keys a Launch endpoint's template carries besides its bundle's
ENV_TYPE = "PODQ_LAUNCH_ENDPOINT_TYPE"
ENV_HOOKS = "PODQ_LAUNCH_HOOKS"
ENV_CONCURRENCY = "PODQ_BUNDLE_CONCURRENCY"
ENV_BUNDLE = "PODQ_BUNDLE_ID"
ENV_BATCH = "PODQ_LAUNCH_BATCH"  # set on batch endpoints' templates: list_model_endpoints skips them
PROCESS_NOTE = ("cpus={cpus} and memory={memory} are not applied: the process backend cannot "
                "limit a worker; use LaunchClient(..., backend='docker') (or swarm, kubernetes) "
                "to have them applied as container limits")


@dataclass(frozen=True)
class EndpointArgs:
    """create_model_endpoint's arguments, Launch's names and defaults."""

    endpoint_name: str
    bundle_name: str
    cpus: float = 3
    memory: str | int | float = "8Gi"
    gpus: int = 0
    min_workers: int = 1
    max_workers: int = 1
    per_worker: int = 1
    gpu_type: str | None = None
    endpoint_type: str = "sync"
    post_inference_hooks: list[str] = field(default_factory=list)
    default_callback_url: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    batch: bool = False  # the endpoint runs a bundle's batches (serverless/launch/batch.py)


def memory_gb(memory: str | int | float) -> float:
    """Kubernetes' quantity ("4Gi", "512Mi", "8G"; a bare number is bytes) -> GiB, podq's unit."""
    match = _MEMORY.match(str(memory))
    if not match or float(match.group(1)) <= 0:
        raise BadRequest(f"memory {memory!r} is not a positive amount; use e.g. '4Gi' or '512Mi'")
    return float(match.group(1)) * _UNIT_BYTES[match.group(2)] / 2**30


def gpu_ids(gpus: int, gpu_type: str | None) -> str:
    """podq's gpu_ids for Launch's gpus and gpu_type."""
    if gpu_type is None:
        return "ANY"
    if gpu_type in REFUSED_GPU_TYPES:
        raise BadRequest(f"gpu_type {gpu_type!r} is {REFUSED_GPU_TYPES[gpu_type]}, which podq does not "
                         "schedule; ask for a whole GPU, e.g. 'nvidia-hopper-h100'")
    if gpu_type not in GPU_TYPES:
        raise BadRequest(f"unknown gpu_type {gpu_type!r}; use one of {', '.join(GPU_TYPES)}")
    if gpus < 1:
        raise BadRequest(f"gpu_type {gpu_type!r} is set but gpus is {gpus}; set gpus to 1 or more")
    return GPU_TYPES[gpu_type]


def gpu_type_of(gpu_ids_value: str, gpu_count: int) -> str | None:
    """Back from podq's gpu_ids to Launch's gpu_type (the first type that maps to it)."""
    if not gpu_count:
        return None
    return next((t for t, ids in GPU_TYPES.items() if ids == gpu_ids_value), None)


def check_hooks(hooks: list[str], callback_url: str | None) -> None:
    unknown = [h for h in hooks if h not in HOOKS]
    if unknown:
        raise BadRequest(f"unknown post_inference_hooks {', '.join(map(repr, unknown))}; podq has "
                         f"{', '.join(HOOKS)} (a POST of each result to default_callback_url)")
    if "callback" in hooks and not callback_url:
        raise BadRequest("the 'callback' post_inference_hook needs default_callback_url (where each "
                         "result is POSTed)")


def check_args(a: EndpointArgs) -> None:
    """Launch's own rules, refused before anything is written."""
    if not keys.valid_id(a.endpoint_name) or len(a.endpoint_name) > 128 - len(TEMPLATE_PREFIX):
        raise BadRequest(f"endpoint_name {a.endpoint_name!r} is invalid: use 1-{128 - len(TEMPLATE_PREFIX)} "
                         "letters, digits, '_.:-', starting with a letter or digit")
    if a.endpoint_type not in ENDPOINT_TYPES:
        raise BadRequest(f"endpoint_type {a.endpoint_type!r} is unknown; use sync, async or streaming")
    if a.endpoint_type != "async" and a.min_workers < 1:
        raise BadRequest(f"{a.endpoint_type} endpoints require at least 1 min_worker (Launch's rule); "
                         "set min_workers=1 or use endpoint_type='async'")
    if a.per_worker < 1:
        raise BadRequest(f"per_worker is {a.per_worker}; use 1 or more requests per worker")
    if a.cpus <= 0:
        raise BadRequest(f"cpus is {a.cpus}; use a positive number of CPUs")
    check_hooks(a.post_inference_hooks, a.default_callback_url)


def resources(a: EndpointArgs, backend: str) -> tuple[float, float, str | None]:
    """(cpus, memory_gb, note): what podq applies; the note says what the backend cannot."""
    gb = memory_gb(a.memory)
    if backend == "process":
        return 0.0, 0.0, PROCESS_NOTE.format(cpus=a.cpus, memory=a.memory)
    return float(a.cpus), gb, None


def template_fields(a: EndpointArgs, bundle: dict[str, Any]) -> dict[str, Any]:
    """The endpoint's own template: the bundle's runner and env, plus per_worker, type, hooks
    (and the batch mark)."""
    env = {**bundle["env"], ENV_CONCURRENCY: str(a.per_worker), ENV_TYPE: a.endpoint_type,
           ENV_HOOKS: ",".join(a.post_inference_hooks)}
    if a.batch:
        env[ENV_BATCH] = "1"
    return {"name": f"launch {a.endpoint_name}"[:128], "handler": bundle["handler"], "env": env,
            "image_name": ""}


def endpoint_fields(a: EndpointArgs, backend: str) -> dict[str, Any]:
    """podq endpoint fields (the body of POST /v1/endpoints without `id`)."""
    cpus, gb, _note = resources(a, backend)
    fields: dict[str, Any] = {
        "name": a.endpoint_name, "template_id": TEMPLATE_PREFIX + a.endpoint_name,
        "gpu_count": a.gpus, "gpu_ids": gpu_ids(a.gpus, a.gpu_type),
        "workers_min": a.min_workers, "workers_max": a.max_workers,
        "scaler_type": "REQUEST_COUNT", "scaler_value": a.per_worker,
        "cpus": cpus, "memory_gb": gb, "labels": dict(a.labels), "backend": backend,
        "webhook": a.default_callback_url if "callback" in a.post_inference_hooks else None,
    }
    return fields


def launch_status(endpoint_status: str) -> str:
    """podq's endpoint status -> Launch's (READY, UPDATE_PENDING, UPDATE_IN_PROGRESS,
    UPDATE_FAILED; podq's paused endpoints say PAUSED)."""
    return {
        "pending": "UPDATE_PENDING", "initializing": "UPDATE_IN_PROGRESS", "running": "READY",
        "scaledToZero": "READY", "paused": "PAUSED", "failed": "UPDATE_FAILED",
    }.get(endpoint_status, endpoint_status.upper())


def resource_settings(record: dict[str, Any]) -> dict[str, Any]:
    """Launch's resource_settings() from podq's endpoint record (None: not limited)."""
    gb = record.get("memory_gb") or 0
    return {
        "cpus": record.get("cpus") or None, "memory": f"{gb:g}Gi" if gb else None,
        "gpus": record.get("gpu_count", 0),
        "gpu_type": gpu_type_of(record.get("gpu_ids", "ANY"), record.get("gpu_count", 0)),
    }


def worker_settings(record: dict[str, Any]) -> dict[str, Any]:
    """Launch's worker_settings() from podq's endpoint record."""
    return {"min_workers": record.get("workers_min"), "max_workers": record.get("workers_max"),
            "per_worker": int(record.get("scaler_value", 1))}
