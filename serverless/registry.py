"""Endpoints and templates in Redis: the registry the admin API writes and the scaler reads.

Records are msgspec JSON in two hashes (keys.REGISTRY_ENDPOINTS, keys.REGISTRY_TEMPLATES).
Validation is pure (`check_endpoint`, `check_template`) and runs before every write, so an
invalid setting never reaches the scaler; its messages quote the bad value and the fix.
"""

from __future__ import annotations

import re
import uuid

import msgspec
from redis.asyncio import Redis

from serverless import keys
from serverless.errors import BadRequest, Conflict, NotFound
from serverless.model import EndpointConfig, EndpointStatus, ScalerType, Template, WorkerProtocol
from serverless.rates import parse_rates

endpoint_decoder = msgspec.json.Decoder(EndpointConfig)
template_decoder = msgspec.json.Decoder(Template)
_encode = msgspec.json.Encoder().encode

# RunPod's GPU pool ids (docs.runpod.io, "GPU types"): pool -> GPU names in it
# RunPod's GPU pool ids and the models in each (RunPod's GpuGroup list); a model is matched
# exactly against NVML names and Kubernetes' nvidia.com/gpu.product labels by scaler/gpus.py
GPU_POOLS: dict[str, tuple[str, ...]] = {
    "AMPERE_16": ("RTX A4000", "RTX 4000 Ada", "RTX 2000 Ada"),
    "AMPERE_24": ("RTX A4500", "RTX A5000", "RTX 3090"),
    "ADA_24": ("L4", "RTX 4090"),
    "ADA_32_PRO": ("RTX 5090",),
    "AMPERE_48": ("RTX A6000", "A40"),
    "ADA_48_PRO": ("L40", "L40S", "RTX 6000 Ada"),
    "AMPERE_80": ("A100",),
    "ADA_80_PRO": ("H100",),
    "BLACKWELL_96": ("RTX PRO 6000",),
    "HOPPER_141": ("H200",),
    "BLACKWELL_180": ("B200",),
}
ANY_GPU = "ANY"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,127}$")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def check_template(t: Template) -> None:
    if not _NAME.match(t.name):
        raise BadRequest(f"template name {t.name!r} is invalid: use 1-128 letters, digits, ' _.:-'")
    if not (t.image_name or t.handler or t.docker_start_cmd):
        raise BadRequest(
            f"template {t.name!r} runs nothing: give image_name (docker), handler "
            "(a handler file) or docker_start_cmd"
        )
    if t.protocol is WorkerProtocol.RUNPOD and t.handler:
        raise BadRequest(
            f"template {t.name!r} has protocol 'runpod' and a handler: a RunPod worker runs its "
            "image's own CMD (or docker_start_cmd) unchanged; drop `handler`"
        )
    for name in ("container_disk_in_gb", "volume_in_gb"):
        if getattr(t, name) < 0:
            raise BadRequest(f"{name} of template {t.name!r} is {getattr(t, name)}; use 0 or more")


def check_gpu_ids(gpu_ids: str) -> None:
    for part in (p.strip() for p in gpu_ids.split(",")):
        if not part:
            raise BadRequest(f"gpu_ids {gpu_ids!r} has an empty entry; use e.g. 'AMPERE_24,ADA_24'")
        if part.isupper() and "_" in part and part not in GPU_POOLS:
            pools = ", ".join(sorted(GPU_POOLS))
            raise BadRequest(f"unknown GPU pool {part!r} in gpu_ids; use ANY, a GPU name or one of {pools}")


def check_endpoint(e: EndpointConfig, template_exists: bool) -> None:
    """Refuse invalid settings with a message that names the field, the value and the fix."""
    if not keys.valid_id(e.id):
        raise BadRequest(f"endpoint id {e.id!r} is invalid: use 1-128 letters, digits, '_.:-'")
    if not _NAME.match(e.name):
        raise BadRequest(f"endpoint name {e.name!r} is invalid: use 1-128 letters, digits, ' _.:-'")
    if not template_exists:
        raise BadRequest(f"template {e.template_id!r} does not exist; create it first (create_template)")
    for name in ("workers_min", "workers_max", "idle_timeout", "gpu_count", "execution_timeout_ms"):
        if getattr(e, name) < 0:
            raise BadRequest(f"{name} is {getattr(e, name)}; it cannot be negative")
    for name in ("cpus", "memory_gb"):
        if getattr(e, name) < 0:
            raise BadRequest(f"{name} is {getattr(e, name)}; use 0 (no limit) or more")
    if (e.cpus or e.memory_gb) and e.backend == "process":
        raise BadRequest("cpus and memory_gb limit a worker's container; the process backend cannot "
                         "apply them: set backend to docker, swarm or kubernetes, or set them to 0")
    if e.workers_min > e.workers_max:
        raise BadRequest(f"workers_min ({e.workers_min}) is above workers_max ({e.workers_max})")
    if e.scaler_value <= 0:
        raise BadRequest(f"scaler_value is {e.scaler_value}; it must be above 0")
    if e.scaler_type is ScalerType.REQUEST_COUNT and e.scaler_value < 1:
        raise BadRequest(f"REQUEST_COUNT scaler_value is {e.scaler_value}; use 1 or more jobs per worker")
    check_gpu_ids(e.gpu_ids)
    check_rate_limits(e.rate_limits)


def check_rate_limits(spec: str | None) -> None:
    """Refuse a `rate_limits` the gateway could not apply (serverless/rates.py's grammar)."""
    if spec is None:
        return
    try:
        parse_rates(spec)
    except ValueError as e:
        raise BadRequest(f"rate_limits {spec!r} is invalid: {e}") from None


def parse_scaler_type(value: str) -> ScalerType:
    try:
        return ScalerType(value)
    except ValueError:
        raise BadRequest(f"unknown scaler_type {value!r}; use QUEUE_DELAY or REQUEST_COUNT") from None


class Registry:
    """Reads and writes endpoint and template records."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def put_template(self, template: Template) -> Template:
        check_template(template)
        await self.redis.hset(keys.REGISTRY_TEMPLATES, template.id, _encode(template))
        return template

    async def get_template(self, template_id: str) -> Template | None:
        raw = await self.redis.hget(keys.REGISTRY_TEMPLATES, template_id)
        return template_decoder.decode(raw) if raw else None

    async def templates(self) -> list[Template]:
        raw = await self.redis.hvals(keys.REGISTRY_TEMPLATES)
        return sorted((template_decoder.decode(r) for r in raw), key=lambda t: t.name)

    async def delete_template(self, template_id: str) -> None:
        users = [e.id for e in await self.endpoints() if e.template_id == template_id]
        if users:
            raise Conflict(f"template {template_id!r} is used by endpoint(s) {', '.join(users)}; "
                           "delete them or move them to another template first")
        if not await self.redis.hdel(keys.REGISTRY_TEMPLATES, template_id):
            raise NotFound(f"template {template_id!r} not found")

    async def put_endpoint(self, endpoint: EndpointConfig) -> EndpointConfig:
        exists = await self.redis.hexists(keys.REGISTRY_TEMPLATES, endpoint.template_id)
        check_endpoint(endpoint, bool(exists))
        await self.redis.hset(keys.REGISTRY_ENDPOINTS, endpoint.id, _encode(endpoint))
        return endpoint  # its status lives apart (set_status)

    async def get_endpoint(self, endpoint_id: str) -> EndpointConfig | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.REGISTRY_ENDPOINTS, endpoint_id)
            pipe.hget(keys.REGISTRY_STATUS, endpoint_id)
            raw, status = await pipe.execute()
        return _with_status(endpoint_decoder.decode(raw), status) if raw else None

    async def require_endpoint(self, endpoint_id: str) -> EndpointConfig:
        endpoint = await self.get_endpoint(endpoint_id)
        if endpoint is None:
            raise NotFound(f"endpoint {endpoint_id!r} not found; list them with `podq endpoint list`")
        return endpoint

    async def endpoints(self) -> list[EndpointConfig]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.REGISTRY_ENDPOINTS)
            pipe.hgetall(keys.REGISTRY_STATUS)
            raw, statuses = await pipe.execute()
        found = [_with_status(endpoint_decoder.decode(v), statuses.get(k)) for k, v in raw.items()]
        return sorted(found, key=lambda e: e.name)

    async def delete_endpoint(self, endpoint_id: str) -> None:
        if not await self.redis.hdel(keys.REGISTRY_ENDPOINTS, endpoint_id):
            raise NotFound(f"endpoint {endpoint_id!r} not found")
        # its status, its workers' log lines and the console's list of its recent jobs go with it
        # (the jobs themselves expire by their own retention)
        await self.redis.hdel(keys.REGISTRY_STATUS, endpoint_id)
        await self.redis.delete(keys.logs(endpoint_id), keys.RECENT.format(endpoint_id))

    async def set_status(self, endpoint_id: str, status: EndpointStatus, reason: str = "") -> None:
        """The scaler reports an endpoint's lifecycle state; kept apart from the config so a
        status write never races an admin's update of the endpoint."""
        await self.redis.hset(keys.REGISTRY_STATUS, endpoint_id, f"{status.value}|{reason}")


    async def request_scale_to_zero(self, endpoint_id: str) -> None:
        """Drop to zero workers now (even below workers_min) until the next job arrives."""
        await self.require_endpoint(endpoint_id)
        await self.redis.sadd(keys.REGISTRY_ZERO, endpoint_id)

    async def clear_scale_to_zero(self, endpoint_id: str) -> None:
        await self.redis.srem(keys.REGISTRY_ZERO, endpoint_id)

    async def scale_to_zero_requested(self) -> set[str]:
        return {x.decode() for x in await self.redis.smembers(keys.REGISTRY_ZERO)}


def _with_status(endpoint: EndpointConfig, raw: bytes | None) -> EndpointConfig:
    if raw is None:
        return endpoint
    status, _, reason = raw.decode().partition("|")
    return msgspec.structs.replace(endpoint, status=EndpointStatus(status), status_reason=reason)
