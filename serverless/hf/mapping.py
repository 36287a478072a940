"""Hugging Face Inference Endpoints' arguments -> podq's template and endpoint fields (pure).

One HF endpoint is one podq endpoint (id and name = the HF name) and its own template
(`hf-<name>`). Each HF argument goes to the podq field that applies it:

    repository, revision, task     template env HF_MODEL_ID, HF_MODEL_REVISION, HF_TASK (the names
                                   Hugging Face's inference containers read)
    custom_image {"url", "env",    template image_name; its env joins the template env;
      "health_route"}              health_route may only be /health (podq checks workers by
                                   heartbeat; GET /v2/{id}/health reports them). `port` is refused:
                                   workers take jobs from a queue, no port is routed to
    container_command (+ args)     template docker_start_cmd
    env, secrets                   template env (secrets: names kept in the label hf.secrets so
                                   `raw` does not show their values as env)
    accelerator, instance_type,    gpu_ids and gpu_count (GPU_TYPES; cpu: gpu_count 0), and
      instance_size                on a CPU with a container backend, cpus and memory_gb
    min_replica, max_replica       workers_min, workers_max
    scale_to_zero_timeout (min)    idle_timeout (s): needs min_replica 0, as on Hugging Face
    scaling_metric pendingRequests REQUEST_COUNT, scaler_value = scaling_threshold
    type                           access (public / protected = authenticated / private)
    framework, vendor, region,     endpoint labels hf.* (what `raw` answers), with the
      accelerator, instance_*      instance fields above

Arguments podq cannot honour are refused (BadRequest naming the argument and the fix), never
stored and ignored: a neuron accelerator, hardwareUsage scaling, private links, custom domains,
registry credentials, engine image variants (vLLM, TGI: podq runs worker images), tensor or
data parallel sizes.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

import msgspec

from serverless.errors import BadRequest
from serverless.model import EndpointAccess, EndpointConfig, Template
from serverless.registry import ANY_GPU, GPU_POOLS

LABEL = "hf."
MODEL_ID, MODEL_REVISION, TASK = "HF_MODEL_ID", "HF_MODEL_REVISION", "HF_TASK"
RESERVED_ENV = frozenset({MODEL_ID, MODEL_REVISION, TASK})
HEALTH_ROUTE = "/health"
# Hugging Face's GPU instance types -> podq's gpu_ids. A pool id where the pool is that one model
# (AMPERE_80 = A100, ...); the model's name where the pool holds others too (ADA_24 is L4 and RTX
# 4090), since Hugging Face promises the one model: scaler/gpus.py matches names exactly.
GPU_TYPES: dict[str, str] = {
    "nvidia-t4": "T4",
    "nvidia-a10g": "A10G",
    "nvidia-l4": "L4",
    "nvidia-l40s": "L40S",
    "nvidia-a100": "AMPERE_80",
    "nvidia-h100": "ADA_80_PRO",
    "nvidia-h200": "HOPPER_141",
    "nvidia-b200": "BLACKWELL_180",
}
ACCELERATORS = ("cpu", "gpu")
CONTAINER_BACKENDS = frozenset({"docker", "swarm", "kubernetes"})
CPU_MEMORY_GB = 2  # per vCPU: Hugging Face's CPU instances (intel-spr x1 = 1 vCPU, 2 GB)
MAX_SIZE = 16
_SIZE = re.compile(r"^x(\d{1,2})$")
# the `type` spellings: huggingface_hub 2.x says "authenticated" (its default), 0.x "protected"
ACCESS = {
    "public": EndpointAccess.PUBLIC,
    "authenticated": EndpointAccess.PROTECTED,
    "protected": EndpointAccess.PROTECTED,
    "private": EndpointAccess.PRIVATE,
}
_IMAGE_KEYS = frozenset({"url", "env", "health_route", "healthRoute"})


def size_of(instance_size: str) -> int:
    """The N of Hugging Face's `xN` instance size: GPUs per replica, or vCPUs on a CPU."""
    match = _SIZE.match(instance_size.strip().lower())
    if not match or not 1 <= int(match.group(1)) <= MAX_SIZE:
        raise BadRequest(f"instance_size {instance_size!r} is not supported; use x1, x2, x4 or x8 "
                         "(GPUs per replica, or vCPUs on a CPU)")
    return int(match.group(1))


def gpu_ids_of(instance_type: str) -> str:
    """podq's gpu_ids for a GPU instance type (GPU_TYPES), a podq pool id, or `any`."""
    if instance_type in GPU_TYPES:
        return GPU_TYPES[instance_type]
    if instance_type in GPU_POOLS or instance_type.upper() == ANY_GPU:
        return instance_type.upper()
    known = ", ".join(GPU_TYPES)
    raise BadRequest(f"instance_type {instance_type!r} is not a GPU podq knows; use one of {known}, "
                     f"a podq GPU pool id ({', '.join(GPU_POOLS)}) or 'any'")


def compute(accelerator: str, instance_type: str, instance_size: str, backend: str) -> dict[str, Any]:
    """The endpoint fields of a replica's hardware.

    Args:
        accelerator: "gpu" or "cpu".
        instance_type: a GPU_TYPES key (gpu), any name (cpu: kept as a label).
        instance_size: "x1".."x16": GPUs per replica, or vCPUs (CPU_MEMORY_GB each) on a CPU.
        backend: the endpoint's backend; only container backends can limit a CPU worker.

    Returns:
        gpu_ids and gpu_count, and on a container backend cpus and memory_gb: a CPU size's
        limits, or none (0) for a GPU, so an update from a CPU to a GPU does not keep the CPU's.
    """
    size = size_of(instance_size)
    if accelerator == "gpu":
        fields = {"gpu_ids": gpu_ids_of(instance_type), "gpu_count": size}
        if backend in CONTAINER_BACKENDS:
            fields |= {"cpus": 0.0, "memory_gb": 0.0}
        return fields
    if accelerator != "cpu":
        raise BadRequest(f"accelerator {accelerator!r} is not supported; podq runs workers on "
                         f"{' or '.join(ACCELERATORS)} (NVIDIA GPUs)")
    fields: dict[str, Any] = {"gpu_ids": ANY_GPU, "gpu_count": 0}
    if backend in CONTAINER_BACKENDS:  # the process backend cannot limit a worker
        fields |= {"cpus": float(size), "memory_gb": float(size * CPU_MEMORY_GB)}
    return fields


def unapplied_size(accelerator: str, instance_size: str, backend: str) -> str:
    """Why a CPU replica's size will not limit its worker ('' when it will): only container
    backends apply CPU and memory limits (`compute`), and Launch's client warns the same way."""
    if accelerator != "cpu" or backend in CONTAINER_BACKENDS:
        return ""
    return (f"instance_size={instance_size!r} is not applied: the {backend} backend cannot limit a "
            "worker's CPUs or memory (it is kept as the hf.instance_size label); pass "
            "backend='docker' (or swarm, kubernetes) to have it applied as container limits")


def scaling(min_replica: int, max_replica: int, scale_to_zero_timeout: int | None) -> dict[str, Any]:
    """workers_min, workers_max and (with scale_to_zero_timeout, in minutes) idle_timeout (s)."""
    fields: dict[str, Any] = {"workers_min": min_replica, "workers_max": max_replica}
    if scale_to_zero_timeout is None:
        return fields
    if scale_to_zero_timeout < 0:
        raise BadRequest(f"scale_to_zero_timeout is {scale_to_zero_timeout}; give minutes, 0 or more")
    if min_replica > 0:
        raise BadRequest(f"scale_to_zero_timeout needs min_replica=0 (it is {min_replica}): an "
                         "endpoint with a minimum never scales to zero")
    return fields | {"idle_timeout": scale_to_zero_timeout * 60}


def scaler(metric: str | None, threshold: float | None) -> dict[str, Any]:
    """scaler_type and scaler_value for Hugging Face's scaling_metric (None: podq's default)."""
    if metric is None:
        return {}
    if str(metric) in ("pendingRequests", "InferenceEndpointScalingMetric.PENDING_REQUESTS"):
        return {"scaler_type": "REQUEST_COUNT", "scaler_value": threshold or 1}
    raise BadRequest(f"scaling_metric {metric!r} is not supported; podq scales on pending requests "
                     "(pendingRequests: scaling_threshold jobs per worker) or queue delay (None)")


def access_of(kind: str) -> EndpointAccess:
    """EndpointAccess for Hugging Face's `type`."""
    access = ACCESS.get(str(getattr(kind, "value", kind)))
    if access is None:
        raise BadRequest(f"type {kind!r} is not an endpoint type; use public, authenticated "
                         "(protected) or private")
    return access


def type_of(access: EndpointAccess, spelled: str | None) -> str:
    """The `type` to report: the spelling given at creation while it still means `access`."""
    if spelled in ACCESS and ACCESS[spelled] is access:
        return spelled
    return "authenticated" if access is EndpointAccess.PROTECTED else access.value


def model_env(repository: str | None, revision: str | None, task: str | None) -> dict[str, str]:
    """The env a model container reads: HF_MODEL_ID, HF_MODEL_REVISION, HF_TASK (those given)."""
    pairs = ((MODEL_ID, repository), (MODEL_REVISION, revision), (TASK, task))
    return {name: value for name, value in pairs if value is not None}


def image(custom_image: Mapping[str, Any] | None) -> tuple[str, dict[str, str]]:
    """The image name and the env of `custom_image` ({"url", "env", "health_route"} or
    huggingface_hub's {"custom": {...}}); ("", {}) for none."""
    if custom_image is None:
        return "", {}
    spec = custom_image.get("custom", custom_image) if set(custom_image) == {"custom"} else custom_image
    if "url" not in spec:
        raise BadRequest(f"custom_image {dict(custom_image)!r} has no `url`; podq runs a worker "
                         "image: give {\"url\": \"<image>\"} (engine variants such as vLLM or TGI "
                         "are not podq workers)")
    unknown = sorted(set(spec) - _IMAGE_KEYS)
    if unknown:
        raise BadRequest(f"custom_image field(s) {', '.join(unknown)} are not supported: workers "
                         "take jobs from podq's queue, no port or route is served; give url, env "
                         "and health_route")
    route = spec.get("health_route", spec.get("healthRoute", HEALTH_ROUTE))
    if route != HEALTH_ROUTE:
        raise BadRequest(f"custom_image health_route {route!r} is not supported: podq checks "
                         f"workers by heartbeat and reports them at {HEALTH_ROUTE}; drop it")
    return str(spec["url"]), {str(k): str(v) for k, v in (spec.get("env") or {}).items()}


def start_cmd(command: list[str] | None, args: list[str] | None) -> str | None:
    """docker_start_cmd for container_command and container_args (None when neither)."""
    if command is None and args is None:
        return None
    if command is None:
        raise BadRequest("container_args need container_command: podq starts the image's "
                         "command only through docker_start_cmd")
    return shlex.join([*command, *(args or [])])


def joined_env(*parts: tuple[str, Mapping[str, str] | None]) -> dict[str, str]:
    """The template env from named parts (custom_image env, env, secrets), refusing a name set
    twice or a name the model arguments own (HF_MODEL_ID: use repository=, ...)."""
    env: dict[str, str] = {}
    for where, values in parts:
        for name, value in (values or {}).items():
            if name in RESERVED_ENV:
                raise BadRequest(f"{where} sets {name}; it comes from repository=, revision= or "
                                 "task=: drop it there")
            if name in env:
                raise BadRequest(f"{name} is set twice ({where} and before); keep one")
            env[str(name)] = str(value)
    return env


def labels(fields: Mapping[str, Any]) -> dict[str, str]:
    """The endpoint labels `hf.<arg>` of the given arguments (None values left out)."""
    return {LABEL + name: str(value) for name, value in fields.items() if value is not None}


def refuse_unsupported(**given: Any) -> None:
    """BadRequest for the first Hugging Face argument given that podq cannot honour."""
    fixes = {
        "private_link_account_id": "podq has no private links; reach the gateway on your network",
        "private_link_region": "podq has no private links",
        "domain": "put your own proxy in front of the gateway",
        "path": "the endpoint's route is /v2/<name>/hf",
        "container_registry_username": "podq pulls with the Docker host's credentials "
                                       "(docker login there)",
        "container_registry_password": "podq pulls with the Docker host's credentials",
        "tensor_parallel_size": "podq has no engine images; the handler shards its model itself",
        "data_parallel_size": "raise max_replica instead",
        "cache_http_responses": "podq never caches inference answers",
    }
    for name, value in given.items():
        if value is not None and value is not False:
            raise BadRequest(f"{name}={value!r} is not supported: {fixes[name]}")


# ---- whole calls: create and update ------------------------------------------------------


class HFArgs(msgspec.Struct, kw_only=True):
    """The arguments of create_inference_endpoint / update (None: not given), plus podq's
    own `handler` (a handler file, for the process backend) and `backend`."""

    repository: str | None = None
    framework: str | None = None
    accelerator: str | None = None
    instance_size: str | None = None
    instance_type: str | None = None
    region: str | None = None
    vendor: str | None = None
    min_replica: int | None = None
    max_replica: int | None = None
    scale_to_zero_timeout: int | None = None
    scaling_metric: str | None = None
    scaling_threshold: float | None = None
    revision: str | None = None
    task: str | None = None
    custom_image: dict[str, Any] | None = None
    container_command: list[str] | None = None
    container_args: list[str] | None = None
    env: dict[str, str] | None = None
    secrets: dict[str, str] | None = None
    type: str | None = None
    tags: list[str] | None = None
    handler: str | None = None
    backend: str | None = None


_HARDWARE = ("accelerator", "instance_type", "instance_size")
_SCALING = ("min_replica", "max_replica", "scale_to_zero_timeout")
_MODEL = ("repository", "revision", "task")


def template_id_of(name: str) -> str:
    """The id of the template an HF endpoint `name` runs (its own, made with it)."""
    return f"hf-{name}"


def _names(values: Mapping[str, str] | list[str] | None) -> str | None:
    return ",".join(sorted(values)) if values else None


def create_bodies(name: str, a: HFArgs) -> tuple[dict[str, Any], dict[str, Any]]:
    """The POST /v1/templates and POST /v1/endpoints bodies for create_inference_endpoint.

    Args:
        name: the endpoint's name: its podq id and name.
        a: the call's arguments (required ones given).

    Returns:
        The template body and the endpoint body.
    """
    backend = a.backend or "process"
    image_name, image_env = image(a.custom_image)
    command = start_cmd(a.container_command, a.container_args)
    if not (image_name or a.handler or command):
        raise BadRequest(f"podq has no managed image for repository={a.repository!r}: give "
                         "custom_image={'url': '<a podq worker image>'} (docker, kubernetes), "
                         "container_command, or handler='path/handler.py' (process backend)")
    env = joined_env(("custom_image env", image_env), ("env", a.env), ("secrets", a.secrets))
    template = {"id": template_id_of(name), "name": name, "image_name": image_name,
                "docker_start_cmd": command, "handler": a.handler,
                "env": env | model_env(a.repository, a.revision, a.task)}
    hardware = compute(a.accelerator or "", a.instance_type or "", a.instance_size or "", backend)
    tags = labels({"framework": a.framework, "vendor": a.vendor, "region": a.region,
                   "accelerator": a.accelerator, "instance_type": a.instance_type,
                   "instance_size": a.instance_size, "type": a.type,
                   "secrets": _names(a.secrets), "tags": _names(a.tags)})
    endpoint = {"id": name, "name": name, "template_id": template["id"], "backend": backend,
                "access": access_of(a.type or "authenticated").value, "labels": tags,
                **hardware, **scaling(a.min_replica if a.min_replica is not None else 1,
                                      a.max_replica if a.max_replica is not None else 1,
                                      a.scale_to_zero_timeout),
                **scaler(a.scaling_metric, a.scaling_threshold)}
    return template, endpoint


def _given(a: HFArgs, names: tuple[str, ...]) -> bool:
    return any(getattr(a, n) is not None for n in names)


def _hardware(endpoint: EndpointConfig, a: HFArgs) -> tuple[dict[str, Any], dict[str, str]]:
    current = {n: endpoint.labels.get(LABEL + n) for n in _HARDWARE}
    wanted = {n: getattr(a, n) or current[n] for n in _HARDWARE}
    missing = [n for n, v in wanted.items() if v is None]
    if missing:
        raise BadRequest(f"endpoint {endpoint.id!r} was not made by create_inference_endpoint "
                         f"(no {', '.join(missing)} label): give accelerator, instance_type "
                         "and instance_size together")
    fields = compute(wanted["accelerator"], wanted["instance_type"], wanted["instance_size"],
                     endpoint.backend)
    return fields, labels(wanted)


def _template_patch(template: Template, a: HFArgs) -> tuple[dict[str, Any], dict[str, str]]:
    """The template fields `a` changes, and the labels it sets (secret names)."""
    patch: dict[str, Any] = {}
    env = dict(template.env)
    if a.custom_image is not None:
        patch["image_name"], image_env = image(a.custom_image)
        env |= joined_env(("custom_image env", image_env))
    if _given(a, ("container_command", "container_args")):
        patch["docker_start_cmd"] = start_cmd(a.container_command, a.container_args)
    if a.handler is not None:
        patch["handler"] = a.handler
    env |= joined_env(("secrets", a.secrets)) | model_env(a.repository, a.revision, a.task)
    if env != template.env:
        patch["env"] = env
    return patch, labels({"secrets": _names(a.secrets)})


def update_bodies(endpoint: EndpointConfig, template: Template, a: HFArgs,
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The PATCH bodies (template, endpoint) for InferenceEndpoint.update; {} for no change.

    Arguments left out keep their current value; the hardware is recomputed from the three
    hardware arguments, each given or as its label says.
    """
    if a == HFArgs():
        raise BadRequest("update() changes nothing: give at least one argument")
    fields: dict[str, Any] = {}
    tags = dict(endpoint.labels)
    if _given(a, _HARDWARE):
        hardware, hardware_tags = _hardware(endpoint, a)
        fields |= hardware
        tags |= hardware_tags
    if _given(a, _SCALING):
        low = a.min_replica if a.min_replica is not None else endpoint.workers_min
        high = a.max_replica if a.max_replica is not None else endpoint.workers_max
        fields |= scaling(low, high, a.scale_to_zero_timeout)
    fields |= scaler(a.scaling_metric, a.scaling_threshold)
    patch, secret_tags = _template_patch(template, a)
    if secret_tags:
        known = set(filter(None, tags.get(LABEL + "secrets", "").split(",")))
        tags[LABEL + "secrets"] = ",".join(sorted(known | set(a.secrets or {})))
    tags |= labels({"framework": a.framework})
    if tags != endpoint.labels:
        fields["labels"] = tags
    return patch, fields
