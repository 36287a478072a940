"""One Settings object, read once from PODQ_* environment variables at the edge and passed down.

Every duration is in milliseconds unless its name ends in `_s`. Defaults follow RunPod:
results kept 30 min after /run and 1 min after /runsync, executionTimeout 10 min, ttl 24 h.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from serverless.errors import ConfigError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    # redis://[[user]:password@]host:port/db, rediss:// for TLS (query parameters: docs/security.md)
    redis_url: str = DEFAULT_REDIS_URL
    # TLS files for a rediss:// URL: the CA to trust, and a client certificate + key when the
    # server asks for one; the URL's ssl_ca_certs / ssl_certfile / ssl_keyfile win over these
    redis_tls_ca: str | None = None
    redis_tls_cert: str | None = None
    redis_tls_key: str | None = None
    endpoint_id: str | None = None
    worker_id: str | None = None
    # lease a worker holds on a running job; renewed every heartbeat_ms
    lease_ms: int = 10_000
    heartbeat_ms: int = 2_000
    # attempts a job gets when its worker dies before it ends FAILED
    max_attempts: Annotated[int, msgspec.Meta(ge=1)] = 3
    # SIGTERM: time in-flight jobs get to finish before they are requeued
    grace_period_s: float = 25.0
    result_ttl_run_ms: int = 30 * 60_000
    result_ttl_sync_ms: int = 60_000
    execution_timeout_ms: int = 600_000
    job_ttl_ms: int = 86_400_000
    max_chunk_bytes: int = 1 << 20
    # cap on a worker process's heap in MB (RLIMIT_DATA; worker/config.py); 0 = no cap
    worker_memory_mb: Annotated[int, msgspec.Meta(ge=0)] = 0
    # the gateway's default request rates per endpoint, for endpoints with no `rate_limits` of
    # their own (serverless/rates.py's grammar): `runpod` (RunPod's cloud quotas), a spec like
    # `run=500/10,runsync=1000/10`, or false (the default: podq runs on your own GPUs)
    rate_limits: bool | str = False
    # request rates per API key over all endpoints, same grammar; '' or false = none (default)
    key_rate_limits: str = ""
    # webhooks to private / loopback addresses (refused by default: SSRF)
    webhook_allow_private: bool = False
    # a new worker's time to its first heartbeat (a RunPod image loads its model before it
    # pings; nothing is sent meanwhile); past it the worker is replaced
    boot_timeout_ms: Annotated[int, msgspec.Meta(ge=1000)] = 600_000
    # ---- RunPod-protocol workers (docs/runpod-workers.md) ----
    # the gateway's URL as workers reach it (RUNPOD_WEBHOOK_* point there)
    gateway_url: str = "http://127.0.0.1:8000"
    # RUNPOD_PING_INTERVAL given to the workers podq starts: whole seconds, at least 1 s (the
    # SDK turns it into seconds with // 1000, and 0 s crashes its ping process); a job's lease
    # lasts three intervals
    runpod_ping_ms: Annotated[int, msgspec.Meta(ge=1000, multiple_of=1000)] = 10_000
    # how long a job-take / job-stop long-poll is held before an empty answer (every SDK gives
    # up on a take after 30 or 90 s)
    runpod_hold_ms: Annotated[int, msgspec.Meta(ge=100, le=25_000)] = 20_000
    # how long a RunPod worker may keep pinging a job that was cancelled or timed out (a sync
    # handler, or an SDK before 1.10, cannot be stopped) before the scaler replaces it
    runpod_stop_grace_ms: Annotated[int, msgspec.Meta(ge=0)] = 30_000
    # ---- metrics (docs/observability.md) ----
    # GET /metrics (Prometheus) and the per-process timings behind it; false removes the route,
    # the request-timing middleware and every hook (what bench/scenarios/metrics_cost.py compares)
    metrics: bool = True
    # /metrics without a key; by default it needs the admin key, as the /v1 routes do
    metrics_public: bool = False
    # ---- worker logs (docs/observability.md, worker/log_shipper.py) ----
    # podq-runtime workers ship their stdout/stderr and log lines, tagged with the job id, to
    # the endpoint's Redis stream (GET /v1/endpoints/{id}/logs); false: nothing is captured
    log_shipping: bool = True
    # lines kept per endpoint (XADD MAXLEN ~ N: Redis trims whole nodes, so a few more stay)
    log_stream_maxlen: Annotated[int, msgspec.Meta(ge=100)] = 10_000
    # lines a worker holds while Redis is slow; past it new lines are dropped and counted
    log_buffer_lines: Annotated[int, msgspec.Meta(ge=100)] = 10_000
    # how often a worker sends its lines (one pipelined call; sooner when 500 are waiting)
    log_flush_ms: Annotated[int, msgspec.Meta(ge=10, le=10_000)] = 100
    # ---- files podq keeps: batch inputs and results, model bundles (serverless/objects) ----
    # where: a local directory (default) or an S3-compatible bucket, `s3://bucket[/prefix]`
    data_dir: str = ".podq/data"
    object_store: str = ""  # "" : data_dir; "s3://bucket/prefix": that bucket (credentials: AWS_*)
    s3_endpoint_url: str = ""  # an S3-compatible server (SeaweedFS, MinIO...); "" : AWS
    # the largest batch input file POST /v1/batches takes (an upload or a URL's body), in bytes
    batch_max_bytes: Annotated[int, msgspec.Meta(ge=1)] = 4 << 30

    def __post_init__(self) -> None:
        if self.metrics_public and not self.metrics:
            raise ConfigError("PODQ_METRICS_PUBLIC=true has no effect while PODQ_METRICS=false "
                              "turns /metrics off; unset one of them")
        if self.s3_endpoint_url and not self.object_store.strip().startswith("s3://"):
            raise ConfigError(f"PODQ_S3_ENDPOINT_URL={self.s3_endpoint_url!r} has no effect unless "
                              "PODQ_OBJECT_STORE is s3://bucket[/prefix]: set that too, or unset it "
                              "to keep files in PODQ_DATA_DIR")

    @property
    def runpod_lease_ms(self) -> int:
        """A RunPod worker's job lease: three ping intervals (its pings renew it)."""
        return 3 * self.runpod_ping_ms

    @property
    def redis_dsn(self) -> str:
        """redis_url with the redis_tls_* files added as the query parameters redis-py reads
        (ssl_ca_certs, ssl_certfile, ssl_keyfile): what podq connects with and what the
        workers it starts get as PODQ_REDIS_URL, so the one string carries the whole config."""
        files = {"ssl_ca_certs": self.redis_tls_ca, "ssl_certfile": self.redis_tls_cert,
                 "ssl_keyfile": self.redis_tls_key}
        if not any(files.values()):
            return self.redis_url
        parts = urlsplit(self.redis_url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        given = {name for name, _ in query}
        query += [(name, path) for name, path in files.items() if path and name not in given]
        return urlunsplit(parts._replace(query=urlencode(query, safe="/")))

    def with_overrides(self, **changes: object) -> Settings:
        return msgspec.structs.replace(self, **{k: v for k, v in changes.items() if v is not None})


_ENV = {
    "redis_url": "PODQ_REDIS_URL",
    "redis_tls_ca": "PODQ_REDIS_TLS_CA",
    "redis_tls_cert": "PODQ_REDIS_TLS_CERT",
    "redis_tls_key": "PODQ_REDIS_TLS_KEY",
    "endpoint_id": "PODQ_ENDPOINT_ID",
    "worker_id": "PODQ_WORKER_ID",
    "lease_ms": "PODQ_LEASE_MS",
    "heartbeat_ms": "PODQ_HEARTBEAT_MS",
    "max_attempts": "PODQ_MAX_ATTEMPTS",
    "grace_period_s": "PODQ_GRACE_PERIOD_S",
    "result_ttl_run_ms": "PODQ_RESULT_TTL_RUN_MS",
    "result_ttl_sync_ms": "PODQ_RESULT_TTL_SYNC_MS",
    "execution_timeout_ms": "PODQ_EXECUTION_TIMEOUT_MS",
    "job_ttl_ms": "PODQ_JOB_TTL_MS",
    "max_chunk_bytes": "PODQ_MAX_CHUNK_BYTES",
    "worker_memory_mb": "PODQ_WORKER_MEMORY_MB",
    "rate_limits": "PODQ_RATE_LIMITS",
    "key_rate_limits": "PODQ_KEY_RATE_LIMITS",
    "webhook_allow_private": "PODQ_WEBHOOK_ALLOW_PRIVATE",
    "boot_timeout_ms": "PODQ_BOOT_TIMEOUT_MS",
    "gateway_url": "PODQ_GATEWAY_URL",
    "runpod_ping_ms": "PODQ_RUNPOD_PING_MS",
    "runpod_hold_ms": "PODQ_RUNPOD_HOLD_MS",
    "runpod_stop_grace_ms": "PODQ_RUNPOD_STOP_GRACE_MS",
    "metrics": "PODQ_METRICS",
    "metrics_public": "PODQ_METRICS_PUBLIC",
    "log_shipping": "PODQ_LOG_SHIPPING",
    "log_stream_maxlen": "PODQ_LOG_STREAM_MAXLEN",
    "log_buffer_lines": "PODQ_LOG_BUFFER_LINES",
    "log_flush_ms": "PODQ_LOG_FLUSH_MS",
    "data_dir": "PODQ_DATA_DIR",
    "object_store": "PODQ_OBJECT_STORE",
    "s3_endpoint_url": "PODQ_S3_ENDPOINT_URL",
    "batch_max_bytes": "PODQ_BATCH_MAX_BYTES",
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from PODQ_* variables; a malformed value raises ConfigError naming it."""
    env = os.environ if environ is None else environ
    fields = Settings.__struct_fields__
    raw = {name: env[var] for name, var in _ENV.items() if env.get(var) not in (None, "")}
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as e:
        field = str(e).rsplit("`$.", 1)[-1].rstrip("`") if "`$." in str(e) else ""
        var = _ENV.get(field, ", ".join(_ENV[f] for f in fields if f in raw))
        raise ConfigError(f"{var} has an invalid value ({e}); fix or unset it") from e
