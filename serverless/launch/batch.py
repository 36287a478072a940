"""Pure: Launch's batch jobs (`batch_async_request`, `get_batch_async_response`) over podq's.

A Launch batch runs a bundle, not an endpoint; podq's batches run on an endpoint. So a batch
gets the bundle's own async endpoint `launch-batch-<bundle>` (made by the same mapping as
create_model_endpoint, min_workers 0: it scales to zero when no batch runs; the latest batch's
settings apply), and its inputs become a JSONL podq batch: each of `urls` is `{"url": ...}`,
each of `inputs` is `{"args": ...}`, what EndpointRequest sends for one prediction.

The batch's status in Launch's words (`launch_batch_status`):

    podq batch state   counts                                   Launch status
    RUNNING            nothing has finished yet (round 0)       PENDING
    RUNNING            some input has finished                  RUNNING
    CANCELLING         (in-flight jobs being cancelled)         RUNNING
    COMPLETED          every input COMPLETED                    SUCCESS
    COMPLETED          any input FAILED, TIMED_OUT, CANCELLED   FAILURE
    CANCELLED                                                   CANCELLED

FAILURE is the batch's, not each input's: the results file still holds every input's line, and
`get_batch_async_results` says which ones failed and why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from serverless import keys
from serverless.errors import BadRequest
from serverless.launch import mapping
from serverless.launch.model import FAILURE, PENDING, SUCCESS, launch_status, traceback_of

BATCH_PREFIX = "launch-batch-"
RUNNING, CANCELLED = "RUNNING", "CANCELLED"
ENDED = (SUCCESS, FAILURE, CANCELLED)
# Launch's batch settings podq applies (batch_task_options keys, or keyword arguments)
OPTIONS = ("cpus", "memory", "gpus", "gpu_type", "max_workers", "per_worker")
# the defaults of create_model_endpoint, for a setting left out
DEFAULTS: dict[str, Any] = {"cpus": 3, "memory": "8Gi", "gpus": 0, "gpu_type": None,
                            "max_workers": 1, "per_worker": 1}
# Launch's batch_task_options podq has no counterpart for, and why
REFUSED_OPTIONS: dict[str, str] = {
    "pyspark_partition_size": "podq feeds the inputs itself (no Spark); use per_worker and max_workers",
    "pyspark_max_executors": "podq feeds the inputs itself (no Spark); use per_worker and max_workers",
    "storage": "podq workers have no ephemeral-storage limit to set",
    "timeout_seconds": "podq bounds each input (execution timeout), not the whole batch; cancel it instead",
    "min_workers": "a batch endpoint scales to zero between batches (min_workers is 0)",
}
PICKLE_REFUSED = ("serialization_format={fmt!r} is not supported: podq never pickles (a pickle from "
                  "the network runs code); use serialization_format='json' (results are JSON)")
LOCATION_REFUSED = ("batch_url_file_location={location!r} is not used by podq: the inputs are "
                    "uploaded to the gateway's object store (batches/<id>/inputs.jsonl); leave it out")


def endpoint_name(bundle_name: str) -> str:
    """The endpoint that runs a bundle's batches; 400 when the name would be too long."""
    name = BATCH_PREFIX + bundle_name
    longest = 128 - len(mapping.TEMPLATE_PREFIX)
    if not keys.valid_id(name) or len(name) > longest:
        raise BadRequest(f"model bundle {bundle_name!r} cannot run batches: its batch endpoint "
                         f"{name!r} must be at most {longest} letters, digits or '_.:-'; use a bundle "
                         f"name of at most {longest - len(BATCH_PREFIX)} characters")
    return name


def check_format(serialization_format: str) -> None:
    if str(serialization_format).lower() != "json":
        raise BadRequest(PICKLE_REFUSED.format(fmt=serialization_format))


def job_inputs(urls: Sequence[str] | None, inputs: Sequence[Any] | None) -> list[dict[str, Any]]:
    """The job input of each of `urls` or `inputs` (exactly one given, not empty)."""
    if bool(urls) == bool(inputs):
        raise BadRequest("exactly one of urls and inputs must be given, and not empty "
                         f"(urls has {len(urls or [])}, inputs has {len(inputs or [])})")
    if urls:
        if isinstance(urls, str):
            raise BadRequest(f"urls={urls!r} is one string; pass a list of URLs")
        bad = [u for u in urls if not isinstance(u, str) or not u.startswith(("http://", "https://"))]
        if bad:
            raise BadRequest(f"urls must be http(s) URLs the workers can fetch; {bad[0]!r} is not")
        return [{"url": u} for u in urls]
    return [{"args": a} for a in inputs or []]


def settings(options: Mapping[str, Any] | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """The batch's endpoint settings: keyword arguments (`given`, None = left out) and Launch's
    `batch_task_options`, the same key in both must agree; unknown or refused keys are 400."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    for key in options:
        if key in REFUSED_OPTIONS:
            raise BadRequest(f"batch_task_options {key!r} is not supported: {REFUSED_OPTIONS[key]}")
        if key not in OPTIONS:
            raise BadRequest(f"unknown batch_task_options key {key!r}; podq applies {', '.join(OPTIONS)}")
    out = dict(DEFAULTS)
    for key in OPTIONS:
        value = given.get(key)
        if value is not None and key in options and options[key] != value:
            raise BadRequest(f"{key} is {value!r} but batch_task_options says {options[key]!r}; give it once")
        if value is not None:
            out[key] = value
        elif key in options:
            out[key] = options[key]
    return out


def endpoint_args(bundle_name: str, chosen: Mapping[str, Any], labels: Mapping[str, str] | None
                  ) -> mapping.EndpointArgs:
    """The batch endpoint's create_model_endpoint arguments."""
    return mapping.EndpointArgs(
        endpoint_name(bundle_name), bundle_name, cpus=chosen["cpus"], memory=chosen["memory"],
        gpus=chosen["gpus"], min_workers=0, max_workers=chosen["max_workers"],
        per_worker=chosen["per_worker"], gpu_type=chosen["gpu_type"], endpoint_type="async",
        labels=dict(labels or {}), batch=True,
    )


def launch_batch_status(state: str, counts: Mapping[str, int], round_: int = 0) -> str:
    """podq's batch state and counts -> Launch's batch status (the table above)."""
    failed = counts.get("failed", 0) + counts.get("timed_out", 0) + counts.get("cancelled", 0)
    if state == "COMPLETED":
        return FAILURE if failed else SUCCESS
    if state == "CANCELLED":
        return CANCELLED
    if state == "RUNNING" and round_ == 0 and failed + counts.get("completed", 0) == 0:
        return PENDING
    return RUNNING


def duration(created_at: int, finished_at: int | None, now_ms: int) -> str:
    """How long the batch took, or has been running: `H:MM:SS.ffffff` (str of a timedelta)."""
    return str(timedelta(milliseconds=max(0, (finished_at or now_ms) - created_at)))


def response(batch: Mapping[str, Any], results_url: str, now_ms: int) -> dict[str, Any]:
    """get_batch_async_response's shape from a podq batch (GET /v1/batches/{id}): `status`,
    `result` (the results URL once the batch has ended, else None), `duration`, and the counts."""
    counts = batch["counts"]
    status = launch_batch_status(batch["state"], counts, batch.get("round", 0))
    return {
        "status": status,
        "result": results_url if status in ENDED else None,
        "duration": duration(batch["created_at"], batch.get("finished_at"), now_ms),
        "num_tasks_pending": counts["pending"] + counts["in_flight"],
        "num_tasks_completed": counts["completed"],
        "num_tasks_failed": counts["failed"] + counts["timed_out"] + counts["cancelled"],
    }


def input_result(line: Mapping[str, Any]) -> dict[str, Any]:
    """One line of podq's results file -> get_async_response's shape with the input's index:
    `{"index", "state": SUCCESS | FAILURE, "result": JSON text | "traceback": str}`."""
    state = launch_status(str(line["status"]))
    out: dict[str, Any] = {"index": line["index"], "state": state}
    if state == SUCCESS:
        out["result"] = json.dumps(line.get("output"))
    else:
        out["traceback"] = traceback_of({"error": line.get("error"), "status": line["status"]})
    return out
