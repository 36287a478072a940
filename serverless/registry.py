"""Endpoints and templates in Redis: the registry the admin API writes and the scaler reads.

Records are msgspec JSON in two hashes (keys.REGISTRY_ENDPOINTS, keys.REGISTRY_TEMPLATES).
Validation is pure (`check_endpoint`, `check_template`) and runs before every write, so an
invalid setting never reaches the scaler; its messages quote the bad value and the fix.

A template setting a backend cannot apply is refused where the endpoint meets its template
(`check_backend_fits`, on every endpoint write and on every template write for the endpoints
that use it), never stored and silently ignored: BACKEND_FEATURES says what each backend
applies. `flashboot` is refused: podq has no warm paused workers (docs/endpoints.md).

Endpoints with a post-inference webhook are also kept in keys.REGISTRY_WEBHOOKS (endpoint id
-> URL), written in the same transaction as the endpoint: the scripts that end a job read it to
queue the webhook of a job that has none of its own, and the gateway's webhook dispatcher reads
the URL from it (serverless/gateway/webhooks.py).
"""

from __future__ import annotations

import re
import uuid

import msgspec
from redis.asyncio import Redis
from redis.exceptions import WatchError

from serverless import keys
from serverless.errors import BadRequest, Conflict, NotFound
from serverless.model import (
    MAX_DURATION_MS, EndpointConfig, EndpointStatus, ScalerType, Template, WorkerProtocol,
)
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
# RunPod's ports form: "8888/http,22/tcp" (http ports are TCP too; RunPod proxies them)
PORT_KINDS = ("http", "tcp")
_PORT = re.compile(r"^([0-9]{1,5})/([a-z]+)$")
# where a template's volume is mounted when it names no path (RunPod's serverless default)
DEFAULT_VOLUME_MOUNT_PATH = "/runpod-volume"
DEFAULT_CONTAINER_DISK_GB = 10  # RunPod's default; not an error on backends without disk limits
# what each backend applies of a template's container settings (docs/endpoints.md has the table)
VOLUMES, PORTS, DISK = "volume_in_gb", "ports", "container_disk_in_gb"
BACKEND_FEATURES: dict[str, frozenset[str]] = {
    "process": frozenset(),
    "docker": frozenset({VOLUMES, PORTS, DISK}),
    "swarm": frozenset(),
    "kubernetes": frozenset(),
}
# a label filter: `key` (any value) or `key:value`
LABEL_FILTER_PATTERN = r"^[^:]"  # a key before any ":"


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
    if t.protocol is WorkerProtocol.PODQ and t.handler and t.docker_start_cmd:
        raise BadRequest(
            f"template {t.name!r} sets both handler and docker_start_cmd: the command replaces "
            "`python -m worker <handler>`, so the handler would never run; drop one (a command "
            "that starts a podq worker names its handler itself)"
        )
    for name in ("container_disk_in_gb", "volume_in_gb"):
        if getattr(t, name) < 0:
            raise BadRequest(f"{name} of template {t.name!r} is {getattr(t, name)}; use 0 or more")
    check_volume(t)
    if t.ports is not None:
        parse_ports(t.ports)


def check_volume(t: Template) -> None:
    """A mount path needs a volume, and must be an absolute path in the container."""
    path = t.volume_mount_path
    if path is None:
        return
    if not t.volume_in_gb:
        raise BadRequest(f"template {t.name!r} has volume_mount_path {path!r} but no volume: set "
                         "volume_in_gb (its size in GB) or drop volume_mount_path")
    if not path.startswith("/") or path == "/" or ":" in path or "," in path:
        raise BadRequest(f"volume_mount_path {path!r} of template {t.name!r} is not an absolute path "
                         f"below / (no ':' or ','); use e.g. {DEFAULT_VOLUME_MOUNT_PATH}")


def parse_ports(spec: str) -> list[tuple[int, str]]:
    """RunPod's "8888/http,22/tcp" as (port, kind) pairs, in order (pure).

    Args:
        spec: comma-separated `port/kind`, kind one of PORT_KINDS; spaces are not allowed.

    Returns:
        The ports; [] for "".

    Raises:
        BadRequest: an entry that is not port/http or port/tcp, a port outside 1..65535, or a
            port given twice; the message quotes it.
    """
    if spec == "":
        return []
    ports: list[tuple[int, str]] = []
    for entry in spec.split(","):
        match = _PORT.match(entry)
        if not match or match[2] not in PORT_KINDS or not 1 <= int(match[1]) <= 65535:
            raise BadRequest(f"ports entry {entry!r} in {spec!r} is invalid: write PORT/http or PORT/tcp "
                             "with PORT 1..65535, comma-separated, e.g. '8888/http,22/tcp'")
        if any(port == int(match[1]) for port, _ in ports):
            raise BadRequest(f"port {match[1]} is given twice in ports {spec!r}; list each port once")
        ports.append((int(match[1]), match[2]))
    return ports


def check_gpu_ids(gpu_ids: str) -> None:
    for part in (p.strip() for p in gpu_ids.split(",")):
        if not part:
            raise BadRequest(f"gpu_ids {gpu_ids!r} has an empty entry; use e.g. 'AMPERE_24,ADA_24'")
        if part.isupper() and "_" in part and part not in GPU_POOLS:
            pools = ", ".join(sorted(GPU_POOLS))
            raise BadRequest(f"unknown GPU pool {part!r} in gpu_ids; use ANY, a GPU name or one of {pools}")


def check_endpoint(e: EndpointConfig, template: Template | None) -> None:
    """Refuse invalid settings with a message that names the field, the value and the fix.

    Args:
        e: the endpoint to store.
        template: its template as stored (None: it does not exist, refused).
    """
    if not keys.valid_id(e.id):
        raise BadRequest(f"endpoint id {e.id!r} is invalid: use 1-128 letters, digits, '_.:-'")
    if not _NAME.match(e.name):
        raise BadRequest(f"endpoint name {e.name!r} is invalid: use 1-128 letters, digits, ' _.:-'")
    if template is None:
        raise BadRequest(f"template {e.template_id!r} does not exist; create it first (create_template)")
    if e.flashboot:
        raise BadRequest("flashboot is not available: podq has no warm paused workers yet; keep "
                         "workers warm with workers_min (always running) or a longer idle_timeout "
                         "(seconds an idle worker stays), and set flashboot to false")
    for name in ("workers_min", "workers_max", "idle_timeout", "gpu_count"):
        if getattr(e, name) < 0:
            raise BadRequest(f"{name} is {getattr(e, name)}; it cannot be negative")
    if not 1 <= e.execution_timeout_ms <= MAX_DURATION_MS:
        raise BadRequest(
            f"execution_timeout_ms is {e.execution_timeout_ms}; use 1..{MAX_DURATION_MS} "
            "(7 days; RunPod's default is 600000). podq has no disabled timeout: 0 would end every "
            "job at once, so for a long-running endpoint set the 7-day maximum")
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
    check_backend_fits(e, template)


def unapplied(backend: str, t: Template) -> list[str]:
    """The template settings `backend` cannot apply that `t` sets (pure).

    A disk size is never on this list: RunPod's default (10 GB) is sent by every RunPod
    script, and backends that cannot limit a container's disk document it (docs/endpoints.md).
    """
    features = BACKEND_FEATURES.get(backend, frozenset())
    wanted = {VOLUMES: t.volume_in_gb > 0, PORTS: bool(t.ports)}
    return [name for name, given in wanted.items() if given and name not in features]


def check_backend_fits(e: EndpointConfig, t: Template) -> None:
    """Refuse an endpoint whose backend cannot run its template (the process backend runs a
    handler file or a command on its own host, never an image) or apply its volume or ports."""
    if e.backend == "process" and not (t.handler or t.docker_start_cmd):
        raise BadRequest(
            f"template {t.name!r} ({t.id}) runs only the image {t.image_name!r}, which the process "
            f"backend of endpoint {e.name!r} cannot run (it starts a handler file or a command on "
            "its own host): use backend docker, swarm or kubernetes, or give the template a "
            "handler or docker_start_cmd"
        )
    missing = unapplied(e.backend, t)
    if missing:
        able = sorted(b for b, f in BACKEND_FEATURES.items() if set(missing) <= f)
        raise BadRequest(
            f"template {t.name!r} ({t.id}) sets {' and '.join(missing)}, which the {e.backend} backend of "
            f"endpoint {e.name!r} cannot apply: use backend {' or '.join(able)}, or a template "
            f"without {' and '.join(missing)}"
        )


def parse_label_filter(text: str) -> tuple[str, str | None]:
    """`team:ml` -> ("team", "ml"); `team` -> ("team", None): any value (pure).

    Raises:
        BadRequest: an empty key (`""`, `:ml`), naming the filter and the form.
    """
    key, sep, value = text.partition(":")
    if not key:
        raise BadRequest(f"label filter {text!r} is invalid: write KEY:VALUE (e.g. team:ml) or KEY "
                         "alone for any value")
    return key, value if sep else None


def labels_match(labels: dict[str, str], filters: list[tuple[str, str | None]]) -> bool:
    """Every filter matches: the key is there, with the value when one is given (pure)."""
    return all(key in labels and value in (None, labels[key]) for key, value in filters)


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
        """Store a template, if it is valid and every endpoint using it can apply it."""
        check_template(template)
        for endpoint in await self.endpoints():
            if endpoint.template_id == template.id:
                check_backend_fits(endpoint, template)
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
        """Store an endpoint, if it is valid with its template; its webhook is indexed with it."""
        check_endpoint(endpoint, await self.get_template(endpoint.template_id))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.REGISTRY_ENDPOINTS, endpoint.id, _encode(endpoint))
            if endpoint.webhook:
                pipe.hset(keys.REGISTRY_WEBHOOKS, endpoint.id, endpoint.webhook)
            else:
                pipe.hdel(keys.REGISTRY_WEBHOOKS, endpoint.id)
            pipe.hset(keys.REGISTRY_TIMEOUTS, endpoint.id, endpoint.execution_timeout_ms)
            await pipe.execute()
        return endpoint  # its status lives apart (set_status)

    async def backfill_indexes(self) -> int:
        """Index the endpoints stored before an index existed (an upgrade): each endpoint's
        execution timeout in keys.REGISTRY_TIMEOUTS and its webhook in keys.REGISTRY_WEBHOOKS,
        where the endpoint has no entry yet (HSETNX: a value put_endpoint wrote is never
        replaced). Watches the endpoints hash, so an endpoint deleted meanwhile is not indexed
        again. Returns how many entries it wrote."""
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(keys.REGISTRY_ENDPOINTS)
                    stored = [endpoint_decoder.decode(v)
                              for v in (await pipe.hgetall(keys.REGISTRY_ENDPOINTS)).values()]
                    pipe.multi()
                    for endpoint in stored:
                        pipe.hsetnx(keys.REGISTRY_TIMEOUTS, endpoint.id, endpoint.execution_timeout_ms)
                        if endpoint.webhook:
                            pipe.hsetnx(keys.REGISTRY_WEBHOOKS, endpoint.id, endpoint.webhook)
                    return sum(await pipe.execute())
                except WatchError:  # an endpoint was written meanwhile: read them again
                    continue

    async def endpoint_webhook(self, endpoint_id: str) -> str | None:
        """The endpoint's post-inference webhook, or None (one HGET, no decoding)."""
        raw = await self.redis.hget(keys.REGISTRY_WEBHOOKS, endpoint_id)
        return raw.decode() if raw else None

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

    async def endpoints_named(self, name: str) -> list[EndpointConfig]:
        """The endpoints called `name` (names are not unique; ids are)."""
        return [e for e in await self.endpoints() if e.name == name]

    async def delete_endpoint(self, endpoint_id: str) -> None:
        """Delete it with its status, indexes, its workers' log lines and the console's list of
        its recent jobs, in one transaction (an upsert cannot land between them); the jobs
        themselves expire by their own retention."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.REGISTRY_ENDPOINTS, endpoint_id)
            for index in (keys.REGISTRY_STATUS, keys.REGISTRY_WEBHOOKS, keys.REGISTRY_TIMEOUTS):
                pipe.hdel(index, endpoint_id)
            pipe.delete(keys.logs(endpoint_id), keys.RECENT.format(endpoint_id))
            deleted, *_ = await pipe.execute()
        if not deleted:
            raise NotFound(f"endpoint {endpoint_id!r} not found")

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
