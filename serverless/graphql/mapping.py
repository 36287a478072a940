"""RunPod's GraphQL fields <-> podq's registry fields, pure.

Inputs: a `saveTemplate` / `saveEndpoint` input object (as graphql-core coerced it: a dict
with RunPod's camelCase names) becomes a dict of podq field names (`template_changes`,
`endpoint_changes`), ready for the /v1 API's body types. A RunPod setting podq cannot apply is
refused with BadRequest (never stored and silently ignored); the empty values the `runpod`
package always sends for them (`networkVolumeId: ""`, `containerRegistryAuthId: ""`) are
accepted, since they ask for nothing.

Outputs: a Template / EndpointConfig becomes the dict of RunPod fields graphql-core reads
replies from (`template_fields`, `endpoint_fields`); RunPod fields podq has no value for
(aiKey, userId, networkVolume ...) are left out, so they answer null. `gpu_types` lists
registry.GPU_POOLS as RunPod's gpuTypes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from serverless import runpod_unsupported as unsupported
from serverless.errors import BadRequest
from serverless.model import EndpointConfig, Template
from serverless.registry import GPU_POOLS

Converter = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _text_or_none(value: str) -> str | None:
    """RunPod's package sends "" for "not set" (dockerArgs, ports)."""
    return value or None


def env_dict(pairs: list[Mapping[str, str]]) -> dict[str, str]:
    """RunPod's env list `[{key, value}, ...]` as podq's env dict; a key given twice is refused."""
    env: dict[str, str] = {}
    for pair in pairs:
        key = pair["key"]
        if key in env:
            raise BadRequest(f"env key {key!r} is given twice; give each variable once")
        env[key] = pair["value"]
    return env


def env_list(env: Mapping[str, str]) -> list[dict[str, str]]:
    """podq's env dict as RunPod's `[{key, value}, ...]`, sorted by key."""
    return [{"key": k, "value": v} for k, v in sorted(env.items())]


def _flashboot(value: str) -> bool:
    return value == "FLASHBOOT"


# RunPod input field -> (podq field, converter)
TEMPLATE_IN: dict[str, tuple[str, Converter]] = {
    "name": ("name", _same),
    "imageName": ("image_name", _same),
    "dockerArgs": ("docker_start_cmd", _text_or_none),
    "containerDiskInGb": ("container_disk_in_gb", _same),
    "volumeInGb": ("volume_in_gb", _same),
    "volumeMountPath": ("volume_mount_path", _text_or_none),
    "ports": ("ports", _text_or_none),
    "env": ("env", env_dict),
    "isServerless": ("is_serverless", _same),
}
ENDPOINT_IN: dict[str, tuple[str, Converter]] = {
    "name": ("name", _same),
    "templateId": ("template_id", _same),
    "gpuIds": ("gpu_ids", _same),
    "gpuCount": ("gpu_count", _same),
    "idleTimeout": ("idle_timeout", _same),
    "scalerType": ("scaler_type", _same),
    "scalerValue": ("scaler_value", _same),
    "workersMin": ("workers_min", _same),
    "workersMax": ("workers_max", _same),
    "executionTimeoutMs": ("execution_timeout_ms", _same),
    "flashBootType": ("flashboot", _flashboot),
}

# RunPod settings podq cannot apply: (the value that asks for nothing, why, what to do instead)
TEMPLATE_REFUSED: dict[str, tuple[Any, str]] = {
    "containerRegistryAuthId": ("", unsupported.REGISTRY_AUTH),
    "isPublic": (False, "podq templates are private to this installation"),
    "readme": ("", "podq templates carry no readme"),
}
ENDPOINT_REFUSED: dict[str, tuple[Any, str]] = {
    "networkVolumeId": ("", unsupported.NETWORK_VOLUMES),
    "locations": ("", unsupported.LOCATIONS),
    "allowedCudaVersions": ("", unsupported.CUDA_VERSIONS),
}
# accepted and without effect, as on RunPod's own serverless workers: startSsh only matters for
# pods, and the `runpod` package sends `startSsh: true` with every template
TEMPLATE_IGNORED = frozenset({"startSsh"})


def _refuse(field: str, value: Any, empty: Any, why: str) -> None:
    shown = "an empty string" if empty == "" else str(empty).lower()
    raise BadRequest(unsupported.refusal(field, value, why, shown))


def _changes(
    given: Mapping[str, Any], table: Mapping[str, tuple[str, Converter]],
    refused: Mapping[str, tuple[Any, str]], ignored: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in given.items():
        if value is None or field == "id" or field in ignored:
            continue  # null is "not given"; `id` picks the record, it is not a setting
        if field in refused:
            empty, why = refused[field]
            if value != empty:
                _refuse(field, value, empty, why)
            continue
        name, convert = table[field]
        out[name] = convert(value)
    return out


def template_changes(given: Mapping[str, Any]) -> dict[str, Any]:
    """A saveTemplate input as podq Template fields (only those given, `id` left out).

    Raises:
        BadRequest: a setting podq cannot apply (a registry auth, a public template, a readme)
            or an env key given twice.
    """
    return _changes(given, TEMPLATE_IN, TEMPLATE_REFUSED, TEMPLATE_IGNORED)


def endpoint_changes(given: Mapping[str, Any]) -> dict[str, Any]:
    """A saveEndpoint input as podq EndpointConfig fields (only those given, `id` left out).

    Raises:
        BadRequest: a setting podq cannot apply (a network volume, locations, CUDA versions).
    """
    return _changes(given, ENDPOINT_IN, ENDPOINT_REFUSED)


def iso_time(ms: int) -> str | None:
    """Milliseconds since the epoch as RunPod's ISO 8601 UTC timestamps; None for 0 (unknown)."""
    if not ms:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def template_fields(t: Template) -> dict[str, Any]:
    """A template as RunPod's PodTemplate fields."""
    return {
        "id": t.id, "name": t.name, "imageName": t.image_name,
        "dockerArgs": t.docker_start_cmd or "", "containerDiskInGb": t.container_disk_in_gb,
        "volumeInGb": t.volume_in_gb, "volumeMountPath": t.volume_mount_path,
        "ports": t.ports or "", "env": env_list(t.env), "isServerless": t.is_serverless,
    }


def endpoint_fields(e: EndpointConfig, env: Mapping[str, str]) -> dict[str, Any]:
    """An endpoint as RunPod's Endpoint fields; `env` is its template's (what its workers get)."""
    return {
        "id": e.id, "name": e.name, "templateId": e.template_id, "gpuIds": e.gpu_ids,
        "gpuCount": e.gpu_count, "idleTimeout": e.idle_timeout, "scalerType": e.scaler_type.value,
        "scalerValue": e.scaler_value, "workersMin": e.workers_min, "workersMax": e.workers_max,
        "executionTimeoutMs": e.execution_timeout_ms,
        "flashBootType": "FLASHBOOT" if e.flashboot else "OFF",
        "version": e.version, "env": env_list(env), "createdAt": iso_time(e.created_at),
    }


_POOL_MEMORY = re.compile(r"_(\d+)(?:_|$)")


def gpu_types(gpu_id: str | None = None) -> list[dict[str, Any]]:
    """registry.GPU_POOLS' models as RunPod's gpuTypes (memory from the pool's name), by id;
    only `gpu_id`'s when given ([] when podq knows no such model, as RunPod answers)."""
    found: dict[str, dict[str, Any]] = {}
    for pool, models in GPU_POOLS.items():
        memory = _POOL_MEMORY.search(pool)
        for model in models:
            found.setdefault(model, {
                "id": model, "displayName": model, "manufacturer": "Nvidia",
                "memoryInGb": int(memory.group(1)) if memory else None,
            })
    listed = sorted(found.values(), key=lambda g: g["id"])
    return [g for g in listed if gpu_id is None or g["id"] == gpu_id]
