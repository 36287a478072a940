"""RunPod's worker-side protocol, pure: what an unmodified `runpod.serverless.start` worker sends
and must receive (shared/reference/runpod-worker-protocol.md, SDK 1.6.2 to 1.12).

- `done_event`: a job-done body -> Progress (a progress_update) or Final (the job's end);
- `take_body`: jobs handed over on job-take / job-take-batch, as the SDK's JSON;
- `parse_ping`: a ping's query -> the jobs it holds, its SDK version, an unhealthy report;
- `next_beat`: a ping -> the worker's heartbeat record (the same WorkerBeat podq's own
  workers write, so /health and the scaler see both kinds alike);
- `worker_env`: the RUNPOD_* environment a worker needs to find podq.

The gateway's worker_routes.py does the I/O around these.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote_plus

import msgspec
from msgspec import UNSET, Raw, UnsetType

from serverless.errors import BadRequest
from serverless.model import Status, TakenJob, WorkerBeat, WorkerProtocol, WorkerState

# What the SDK sends on `--rp_...`-less production starts; never set by podq: they switch the
# SDK into other modes (realtime server, the retired sls-core) that do not take jobs.
FORBIDDEN_ENV = ("RUNPOD_REALTIME_PORT", "RUNPOD_USE_CORE", "RUNPOD_CORE_PATH", "SERVE_API_LOCALLY")
REASON_MAX = 256


class DoneBody(msgspec.Struct):
    """A job-done body: `{"output"}`, `{"error"}`, both, `{}`, a progress update
    (`{"status": "IN_PROGRESS", "output"}`), any of them with `"stopPod": true`."""

    output: Raw | UnsetType = UNSET
    error: Raw | UnsetType = UNSET
    status: str | UnsetType = UNSET
    stopPod: bool = False


class StreamBody(msgspec.Struct):
    """A job-stream body: one yielded item as `{"output": item}`."""

    output: Raw | UnsetType = UNSET


class Progress(msgspec.Struct, frozen=True):
    output: bytes


class Final(msgspec.Struct, frozen=True):
    status: Status
    output: bytes | None = None
    error: str | None = None
    stop_pod: bool = False


_done_decoder = msgspec.json.Decoder(DoneBody)
_stream_decoder = msgspec.json.Decoder(StreamBody)
_NULL = b"null"


def _decode(decoder: msgspec.json.Decoder, body: bytes, what: str):  # noqa: ANN202
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as e:
        raise BadRequest(
            f"invalid {what} body: {e}; RunPod workers send a JSON object such as "
            '{"output": ...} or {"error": "..."}'
        ) from None


def error_text(raw: bytes) -> str | None:
    """RunPod's `error` as podq stores it: a JSON string as its text (an exception's error is a
    JSON document inside a string, kept as RunPod shows it), anything else as its JSON; null
    and "" mean no error."""
    value = msgspec.json.decode(raw)
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else raw.decode()


def done_event(body: bytes) -> Progress | Final:
    """What a job-done POST means. The body is JSON whatever its Content-Type says (the SDK
    labels it form-encoded). Rules (rp_job.py, per version in the reference):
    - `"status": "IN_PROGRESS"` at the top level is progress_update (a user's own
      `{"status": ...}` output is nested under `output`);
    - an `error` (not null or "") ends the job FAILED, keeping any `output` beside it;
    - otherwise COMPLETED with `output` (none for `{}`); a generator's final post carries the
      aggregate (or []) as its output;
    - `stopPod` asks for the worker to be replaced.
    """
    parsed: DoneBody = _decode(_done_decoder, body, "job-done")
    output = None if parsed.output is UNSET else bytes(parsed.output)
    if parsed.status == Status.IN_PROGRESS.value:
        return Progress(output if output is not None else _NULL)
    error = None if parsed.error is UNSET else error_text(bytes(parsed.error))
    if error is not None:
        return Final(Status.FAILED, output=output, error=error, stop_pod=parsed.stopPod)
    return Final(Status.COMPLETED, output=output, stop_pod=parsed.stopPod)


def stream_chunk(body: bytes) -> bytes:
    """A job-stream POST's chunk: the raw JSON of its `output` (null when it has none)."""
    parsed: StreamBody = _decode(_stream_decoder, body, "job-stream")
    return _NULL if parsed.output is UNSET else bytes(parsed.output)


class _TakeItem(msgspec.Struct, omit_defaults=True):
    id: str
    input: Raw
    webhook: str | UnsetType = UNSET
    s3Config: Raw | UnsetType = UNSET


_encode = msgspec.json.Encoder().encode


def _item(job: TakenJob) -> _TakeItem:
    return _TakeItem(
        id=job.id, input=job.input,
        webhook=job.webhook if job.webhook else UNSET,
        s3Config=job.s3_config if job.s3_config is not None else UNSET,
    )


def take_body(jobs: list[TakenJob], batch: bool) -> bytes:
    """job-take answers one object `{"id", "input", ...}`; job-take-batch an array."""
    if batch:
        return _encode([_item(j) for j in jobs])
    assert len(jobs) == 1, "a single take hands over one job"
    return _encode(_item(jobs[0]))


def parse_batch_size(raw: str | None) -> int:
    """job-take-batch's `batch_size`: 1..1000 (the SDK sends its free slots)."""
    try:
        size = int(raw) if raw is not None else 1
    except ValueError:
        raise BadRequest(f"batch_size={raw!r} is not a whole number; the SDK sends 1..N") from None
    if not 1 <= size <= 1000:
        raise BadRequest(f"batch_size={size} is out of range; use 1..1000")
    return size


class Ping(msgspec.Struct, frozen=True):
    job_ids: list[str]
    runpod_version: str = ""
    # set when the worker reports itself unhealthy (a failed fitness check, SDK 1.11+)
    unhealthy: str | None = None


def parse_ping(query: Mapping[str, str]) -> Ping:
    """A ping's query: `job_id=a,b` (absent when idle), `runpod_version`, and on a failed
    fitness check `status=unhealthy&check=..&reason=..`. Unknown parameters (`gpu`) are ignored."""
    ids = [j for j in (query.get("job_id") or "").split(",") if j]
    unhealthy = None
    if query.get("status") == "unhealthy":
        check, reason = query.get("check", ""), query.get("reason", "")
        unhealthy = (f"{check}: {reason}" if check else reason or "reported unhealthy")[:REASON_MAX]
    return Ping(job_ids=ids, runpod_version=query.get("runpod_version", "")[:32], unhealthy=unhealthy)


def next_beat(
    old: WorkerBeat | None, ping: Ping, *, endpoint: str, worker_id: str, now: int,
    interval_ms: int, stuck: list[str], version: int = 0,
) -> WorkerBeat:
    """The worker's heartbeat record after a ping (`stuck`: jobs it still runs although they
    were cancelled or timed out). `started_at`, `idle_since`, `stuck_since` and `recycle`
    carry over from the previous record."""
    if ping.unhealthy is not None:
        state = WorkerState.UNHEALTHY
    else:
        state = WorkerState.RUNNING if ping.job_ids else WorkerState.IDLE
    idle_since = 0
    if state is WorkerState.IDLE:
        idle_since = old.idle_since if old is not None and old.idle_since else now
    stuck_since = 0
    if stuck:
        stuck_since = old.stuck_since if old is not None and old.stuck_since else now
    return WorkerBeat(
        id=worker_id, endpoint=endpoint, state=state, jobs=sorted(ping.job_ids),
        concurrency=max(1, len(ping.job_ids), old.concurrency if old else 1),
        seen_at=now, started_at=old.started_at if old is not None else now,
        idle_since=idle_since, version=old.version if old is not None else version,
        protocol=WorkerProtocol.RUNPOD, interval_ms=interval_ms,
        runpod_version=ping.runpod_version or (old.runpod_version if old else ""),
        reason=ping.unhealthy or "", recycle=old.recycle if old is not None else False,
        stuck_since=stuck_since,
    )


def worker_env(
    gateway_url: str, endpoint_id: str, worker_id: str, api_key: str, *,
    ping_ms: int, gpu_label: str = "", template_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one RunPod-protocol worker (set before the process starts: the SDK
    reads it at import time).

    URL templates are RunPod's own: `$ID` is the worker id in GET_JOB and the job id in the
    others, `$RUNPOD_POD_ID` the worker id; each carries a `?` (the SDK appends `&...`). The
    template's env is applied over podq's defaults (it may turn the SDK's start-up checks back
    on), but never over the URLs, the key or the worker id, and never sets a mode switch.
    """
    base = gateway_url.rstrip("/") + f"/v2/{endpoint_id}"
    query = "?gpu=" + quote_plus(gpu_label)  # RunPod's own shape: ?gpu=NVIDIA+RTX+A5000
    defaults = {
        # 1.9+ checks dial 8.8.8.8:53 and need 4 GB free RAM: they kill workers on networks
        # without egress; a template may turn them back on
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        "RUNPOD_LOG_LEVEL": "INFO",  # the SDK's DEBUG default logs every output
    }
    own = {
        "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID{query}",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID{query}",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID{query}",
        "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID{query}",
        "RUNPOD_AI_API_KEY": api_key,
        "RUNPOD_POD_ID": worker_id,
        "RUNPOD_POD_HOSTNAME": worker_id,
        "RUNPOD_ENDPOINT_ID": endpoint_id,
        "RUNPOD_PING_INTERVAL": str(ping_ms),
    }
    extra = {k: v for k, v in (template_env or {}).items() if k not in own and k not in FORBIDDEN_ENV}
    return {**defaults, **extra, **own}
