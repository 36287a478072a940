"""Every record podq puts on the wire or in Redis, as msgspec Structs.

New fields always get a default (msgspec's schema-evolution rule), so old records still decode.
Job input and output stay opaque JSON (`msgspec.Raw`): podq never re-encodes a user's payload.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec
from msgspec import UNSET, Raw, UnsetType


class Status(StrEnum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"


# Declared once, beside the statuses (runpod-python keeps two lists that disagree on CANCELLED).
TERMINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT})
RETRYABLE_STATUSES = frozenset({Status.FAILED, Status.TIMED_OUT})
# the longest executionTimeout and ttl (RunPod caps both at 7 days), per job or per endpoint
MAX_DURATION_MS = 7 * 24 * 3600 * 1000


class Policy(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """RunPod's per-request policy; durations in milliseconds."""

    executionTimeout: int | None = None
    ttl: int | None = None
    lowPriority: bool = False


class RunRequest(msgspec.Struct, omit_defaults=True):
    """The body of POST /run and /runsync."""

    input: Raw
    webhook: str | None = None
    policy: Policy | None = None
    # Raw | None would only decode `null` (msgspec); UNSET means "not sent"
    s3Config: Raw | UnsetType = UNSET


class JobRecord(msgspec.Struct, kw_only=True):
    """One job as the store keeps it (a Redis hash). Times are unix milliseconds."""

    id: str
    endpoint: str
    status: Status
    input: Raw
    output: Raw | None = None
    error: str | None = None
    worker_id: str | None = None
    attempt: int = 0  # fencing token: +1 on every take, never reset
    tries: int = 0  # takes since submission or the last retry; bounded by max_attempts
    # the submitter's PODQ_MAX_ATTEMPTS, so every process that requeues the job applies one limit
    # (0: a job stored before it was kept; the reaper's own setting applies)
    max_attempts: int = 0
    submitted_at: int = 0
    started_at: int | None = None
    finished_at: int | None = None
    execution_timeout_ms: int | None = None
    ttl_ms: int | None = None
    low_priority: bool = False
    webhook: str | None = None
    s3_config: Raw | None = None
    retention_ms: int = 0


class StatusBody(msgspec.Struct, omit_defaults=True):
    """What /status (and a finished /runsync) answers, in RunPod's field names."""

    id: str
    status: str
    delayTime: int | UnsetType = UNSET
    executionTime: int | UnsetType = UNSET
    output: Raw | UnsetType = UNSET
    error: str | UnsetType = UNSET
    workerId: str | UnsetType = UNSET


class TakenJob(msgspec.Struct, kw_only=True):
    """What a worker receives when it takes a job; `attempt` fences all its writes."""

    id: str
    endpoint: str
    input: Raw
    attempt: int
    execution_timeout_ms: int | None = None
    webhook: str | None = None
    s3_config: Raw | None = None


class Chunk(msgspec.Struct):
    """One streamed item; `cursor` is its position in the job's chunk stream."""

    cursor: str
    output: Raw


class GpuInfo(msgspec.Struct, omit_defaults=True):
    index: int
    name: str
    uuid: str
    memory_total_mb: int = 0
    memory_used_mb: int = 0
    utilization_pct: int = 0


class WorkerState(StrEnum):
    INITIALIZING = "initializing"
    IDLE = "idle"
    RUNNING = "running"
    UNHEALTHY = "unhealthy"
    # asked for, but the cluster engine has not placed it yet (no free GPU on any node): written
    # by the scaler with the engine's reason, replaced by the worker's own first heartbeat
    # (RunPod's /health counts such workers as "throttled")
    THROTTLED = "throttled"


class WorkerProtocol(StrEnum):
    """How a worker talks to podq: its own runtime over Redis, or RunPod's worker-side HTTP
    protocol (an unmodified `runpod.serverless.start` worker image) through the gateway."""

    PODQ = "podq"
    RUNPOD = "runpod"


class WorkerBeat(msgspec.Struct, kw_only=True):
    """A worker's heartbeat as stored in the endpoint's worker registry."""

    id: str
    endpoint: str
    state: WorkerState
    jobs: list[str] = []
    concurrency: int = 1
    gpus: list[GpuInfo] = []
    pid: int = 0
    host: str = ""
    seen_at: int = 0
    started_at: int = 0
    idle_since: int = 0  # when the worker last had no job (0 while running one)
    version: int = 0  # the endpoint version it was started for (scaler rolling updates)
    protocol: WorkerProtocol = WorkerProtocol.PODQ
    # its heartbeat period, so silence is judged per worker (RunPod workers ping every
    # RUNPOD_PING_INTERVAL; podq's runtime every PODQ_HEARTBEAT_MS of its own, which need not
    # be the scaler's); 0 (a record from before this field): the reader's Settings.heartbeat_ms
    interval_ms: int = 0
    runpod_version: str = ""  # the SDK version a RunPod worker reports in its pings
    reason: str = ""  # why it is unhealthy, as the worker said (a failed fitness check)
    # it asked to be replaced (RunPod's stopPod / refresh_worker): the scaler stops it
    recycle: bool = False
    # since when it still runs a job that was cancelled or timed out (a RunPod worker whose SDK
    # cannot stop it: sync handlers, SDK < 1.10); 0 when none. Past a grace it is recycled
    stuck_since: int = 0


class JobCounts(msgspec.Struct):
    completed: int = 0
    failed: int = 0
    inProgress: int = 0
    inQueue: int = 0
    retried: int = 0


class WorkerCounts(msgspec.Struct):
    idle: int = 0
    running: int = 0
    initializing: int = 0
    unhealthy: int = 0
    throttled: int = 0  # waiting for the cluster engine to place them (RunPod's name)


class QueueStats(msgspec.Struct):
    """What the scaler observes of an endpoint's queue in one round trip."""

    in_queue: int = 0  # every queued job
    in_queue_normal: int = 0  # without lowPriority jobs (those never cause a scale-up)
    oldest_wait_ms: int = 0  # of the oldest queued normal job; 0 when none
    in_progress: int = 0


class Health(msgspec.Struct):
    jobs: JobCounts
    workers: WorkerCounts


# ---- endpoints and templates (the registry) ----------------------------------------------


class ScalerType(StrEnum):
    QUEUE_DELAY = "QUEUE_DELAY"
    REQUEST_COUNT = "REQUEST_COUNT"


class EndpointStatus(StrEnum):
    """Hugging Face Inference Endpoints' lifecycle states, as podq reports them."""

    PENDING = "pending"  # created, no worker asked for yet
    INITIALIZING = "initializing"  # workers starting, none ready
    # a new version (template, GPUs, backend) is rolling out; the old version's workers serve
    UPDATING = "updating"
    # the new version's workers cannot be started; the old version's workers still serve
    UPDATE_FAILED = "updateFailed"
    RUNNING = "running"  # at least one worker ready
    PAUSED = "paused"  # no workers, jobs stay queued
    SCALED_TO_ZERO = "scaledToZero"  # no workers; the next job wakes it
    FAILED = "failed"  # workers cannot be started (bad template, no GPU...)


class EndpointAccess(StrEnum):
    """Who may call an endpoint's /v2 job routes (Hugging Face's endpoint `type`)."""

    PUBLIC = "public"  # anyone, no key
    PROTECTED = "protected"  # any valid key whose scope includes the endpoint (the default)
    PRIVATE = "private"  # the admin key, or a key scoped to this endpoint by name


class Template(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a worker runs (RunPod's create_template fields, plus a handler path)."""

    id: str
    name: str
    image_name: str = ""
    # command run in the image; default: `python -m worker <handler>`
    docker_start_cmd: str | None = None
    # handler file (process backend: a path on the host; docker: a path inside the image)
    handler: str | None = None
    # runpod: the image's own entrypoint runs unchanged and speaks RunPod's worker protocol
    protocol: WorkerProtocol = WorkerProtocol.PODQ
    env: dict[str, str] = {}
    container_disk_in_gb: int = 10
    volume_in_gb: int = 0
    volume_mount_path: str | None = None
    ports: str | None = None
    is_serverless: bool = True
    created_at: int = 0


class EndpointConfig(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An endpoint: RunPod's create_endpoint fields plus podq's lifecycle and backend."""

    id: str
    name: str
    template_id: str
    gpu_ids: str = "ANY"
    gpu_count: int = 1
    workers_min: int = 0
    workers_max: int = 3
    idle_timeout: int = 5  # seconds
    scaler_type: ScalerType = ScalerType.QUEUE_DELAY
    scaler_value: float = 4
    execution_timeout_ms: int = 600_000
    # each worker's CPU cores and memory (requests = limits on Kubernetes); 0: no limit. Only
    # container backends apply them (docker, swarm, kubernetes); the registry refuses them on
    # the process backend
    cpus: float = 0.0
    memory_gb: float = 0.0
    flashboot: bool = False
    labels: dict[str, str] = {}
    backend: str = "process"
    paused: bool = False
    # gateway rate limits (serverless/rates.py): "runpod", "run=500/10,runsync=1000/10", "off";
    # None or "": the gateway's default, PODQ_RATE_LIMITS (off unless set)
    rate_limits: str | None = None
    # who may call the /v2 job routes (EndpointAccess)
    access: EndpointAccess = EndpointAccess.PROTECTED
    # post-inference webhook: called after every job of the endpoint (a request's own webhook
    # is called too)
    webhook: str | None = None
    # bumped on every change workers must pick up (template); old workers are rolled
    version: int = 1
    status: EndpointStatus = EndpointStatus.PENDING
    status_reason: str = ""
    created_at: int = 0
    updated_at: int = 0


class ApiKey(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A stored API key: only its sha256 digest is kept. `endpoints` empty = every endpoint."""

    digest: str
    label: str = ""
    endpoints: list[str] = []
    # a worker key: reaches only the worker-protocol routes of its endpoints, never the client API
    worker: bool = False
    created_at: int = 0
