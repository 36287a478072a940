"""Pure RunPod result shaping: what a handler returned, raised or yielded becomes an Outcome.

Where RunPod has a known bug we do what the user obviously meant (see docs/handlers.md):
- `{"error": {...}}` (a non-string error) ends FAILED with the error JSON-encoded, not COMPLETED
  (runpod-python#299);
- an exception inside a generator ends FAILED with the same error shape as any other handler
  exception, instead of being flattened into a string (runpod-python#397).
"""

from __future__ import annotations

import socket
import traceback
from typing import Any

import msgspec

from serverless.codec import encode_json
from serverless.model import Status

NOT_SERIALIZABLE = "handler returned a value that is not JSON serializable ({detail}); return plain JSON types"


class Outcome(msgspec.Struct):
    status: Status
    output: bytes | None = None
    error: str | None = None
    refresh: bool = False


def error_text(error: Any) -> str:
    """RunPod errors are strings; anything else is JSON-encoded rather than dropped."""
    if isinstance(error, str):
        return error
    try:
        return encode_json(error).decode()
    except TypeError:
        return repr(error)


def from_return(value: Any) -> Outcome:
    """Shape a handler's return value (RunPod's rp_job.run_job rules)."""
    if not isinstance(value, dict):
        return _completed(value, refresh=False)
    rest = dict(value)
    error, refresh = rest.pop("error", None), bool(rest.pop("refresh_worker", False))
    if error:
        out = _encode(rest) if rest else None
        if isinstance(out, Outcome):
            return msgspec.structs.replace(out, refresh=refresh)
        return Outcome(Status.FAILED, output=out, error=error_text(error), refresh=refresh)
    if not rest and len(rest) != len(value):  # only control keys: RunPod drops empty output
        return Outcome(Status.COMPLETED, refresh=refresh)
    return _completed(rest, refresh=refresh)


STUCK_THREAD_NOTE = (
    "; the sync handler could not be stopped (Python cannot interrupt a thread), so its worker "
    "re-executes itself once its other jobs are done"
)
BLOCKED_LOOP_NOTE = (
    "; the async handler blocked the worker's event loop (call blocking code with "
    "`await asyncio.to_thread(...)` or write a def handler), so its worker process was restarted"
)


def out_of_memory(memory_cap_mb: int | None) -> str:
    """Why a MemoryError happened: over the worker's cap (PODQ_WORKER_MEMORY_MB) when one is set."""
    if memory_cap_mb:
        return (f"out of memory: the handler went over the worker's memory cap of {memory_cap_mb} MB "
                "(PODQ_WORKER_MEMORY_MB); raise the cap or use less memory per job")
    return "out of memory: the handler could not allocate memory; use less memory per job"


def from_exception(exc: BaseException, worker_id: str, memory_cap_mb: int | None = None) -> Outcome:
    """An exception ends FAILED with RunPod's error shape (a JSON string)."""
    message = str(exc)
    if isinstance(exc, MemoryError):  # MemoryError() says nothing by itself
        message = f"{message}: {out_of_memory(memory_cap_mb)}" if message else out_of_memory(memory_cap_mb)
    shape = {
        "error_type": str(type(exc)),
        "error_message": message,
        "error_traceback": "".join(traceback.format_exception(exc)),
        "hostname": socket.gethostname(),
        "worker_id": worker_id,
    }
    return Outcome(Status.FAILED, error=encode_json(shape).decode())


def chunk_error(item: Any) -> str | None:
    """A yielded `{"error": ...}` ends the stream FAILED (and is not streamed)."""
    if isinstance(item, dict) and item.get("error"):
        return error_text(item["error"])
    return None


def from_stream(aggregate: list[bytes] | None) -> Outcome:
    """A generator that finished: output is the list of chunks with return_aggregate_stream,
    else an empty list (as RunPod posts)."""
    return Outcome(Status.COMPLETED, output=b"[" + b",".join(aggregate or []) + b"]")


def timed_out(timeout_ms: int) -> Outcome:
    return Outcome(
        Status.TIMED_OUT,
        error=f"execution took longer than executionTimeout of {timeout_ms} ms; "
        "raise policy.executionTimeout or make the handler faster",
    )


def chunk_too_large(size: int, limit: int) -> Outcome:
    return Outcome(
        Status.FAILED,
        error=f"stream chunk of {size} bytes is over the {limit}-byte limit; "
        "yield smaller pieces or upload the data and yield its URL",
    )


def encode_chunk(item: Any) -> bytes | Outcome:
    return _encode(item)


def _encode(value: Any) -> bytes | Outcome:
    try:
        return encode_json(value)
    except TypeError as e:
        return Outcome(Status.FAILED, error=NOT_SERIALIZABLE.format(detail=e))


def _completed(value: Any, *, refresh: bool) -> Outcome:
    out = _encode(value)
    if isinstance(out, Outcome):
        return msgspec.structs.replace(out, refresh=refresh)
    return Outcome(Status.COMPLETED, output=out, refresh=refresh)
