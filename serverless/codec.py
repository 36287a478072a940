"""Encoders and decoders, built once per type; the only serializer podq uses (JSON via msgspec).

No pickle anywhere: Redis holds JSON text and plain hash fields, so nothing read back can run
code. `record_from_hash` turns a job hash into a JobRecord without re-encoding user payloads.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Raw

from serverless.model import JobRecord, RunRequest, Status, TakenJob, WorkerBeat

json_encode = msgspec.json.Encoder().encode
run_request_decoder = msgspec.json.Decoder(RunRequest)
beat_decoder = msgspec.json.Decoder(WorkerBeat)
any_decoder = msgspec.json.Decoder()

_INT_FIELDS = (
    "attempt", "tries", "max_attempts", "submitted_at", "started_at", "finished_at",
    "execution_timeout_ms", "ttl_ms", "retention_ms",
)
_STR_FIELDS = ("id", "endpoint", "error", "worker_id", "webhook")
_RAW_FIELDS = ("input", "output", "s3_config")


def encode_json(value: Any) -> bytes:
    """Encode any JSON-able value; raises TypeError naming the bad type otherwise."""
    try:
        return json_encode(value)
    except (TypeError, msgspec.EncodeError) as e:
        raise TypeError(f"value is not JSON serializable: {e}") from e


def record_from_hash(fields: dict[bytes, bytes]) -> JobRecord:
    """Build a JobRecord from HGETALL's reply."""
    d = {k.decode(): v for k, v in fields.items()}
    kw: dict[str, Any] = {"status": Status(d["status"].decode())}
    for name in _INT_FIELDS:
        if name in d:
            kw[name] = int(d[name])
    for name in _STR_FIELDS:
        if name in d:
            kw[name] = d[name].decode()
    for name in _RAW_FIELDS:
        if name in d:
            kw[name] = Raw(d[name])
    kw["low_priority"] = d.get("low_priority") == b"1"
    return JobRecord(**kw)


_RECORD_FIELDS = JobRecord.__struct_fields__


def record_fields(record: JobRecord) -> list[Any]:
    """The hash field/value pairs of a new record (None fields are left out, and
    low_priority when False)."""
    out: list[Any] = []
    for name, value in zip(_RECORD_FIELDS, msgspec.structs.astuple(record)):
        if value is None or value is False:
            continue
        if value is True:  # low_priority, the one bool
            out += (name, "1")
        elif type(value) is Raw:
            out += (name, bytes(value))
        else:  # str, int, Status (a StrEnum: str() is its value)
            out += (name, str(value))
    return out


def taken_from_reply(endpoint: str, reply: list[bytes]) -> TakenJob:
    job_id, attempt, payload, timeout, webhook, s3 = reply
    return TakenJob(
        id=job_id.decode(),
        endpoint=endpoint,
        input=Raw(payload),
        attempt=int(attempt),
        execution_timeout_ms=int(timeout) if timeout else None,
        webhook=webhook.decode() if webhook else None,
        s3_config=Raw(s3) if s3 else None,
    )
