"""Batch records: what a batch is (Batch, kept in Redis), what a client sends to start one
(BatchBody) and what each input's result line says (ResultLine).

A batch runs in rounds: round 0 runs every input; each retry (`POST /v1/batches/{id}/retry`)
is one more round that runs again only the inputs whose last result was FAILED or TIMED_OUT and
carries the other results over. Counts are those of the latest result of each input.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec
from msgspec import Raw

from serverless.model import MAX_DURATION_MS

# how many of a batch's inputs may be queued or running at once (per batch)
DEFAULT_MAX_IN_FLIGHT = 512
MAX_IN_FLIGHT_CAP = 10_000
# the largest file a batch may be given (upload or URL); 4 GiB
MAX_INPUT_BYTES = 4 << 30
FORMATS = ("jsonl", "csv")


class BatchState(enum.StrEnum):
    RUNNING = "RUNNING"  # inputs are being fed (or a retry round runs)
    CANCELLING = "CANCELLING"  # cancel asked: in-flight jobs are being cancelled and collected
    COMPLETED = "COMPLETED"  # every input has a result
    CANCELLED = "CANCELLED"  # cancelled: inputs never submitted have no result line


ACTIVE_STATES = frozenset({BatchState.RUNNING, BatchState.CANCELLING})
# the job statuses a retry runs again (RunPod's /retry takes the same two)
RETRIED_STATUSES = frozenset({"FAILED", "TIMED_OUT"})
RESULT_STATUSES = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


class BatchCounts(msgspec.Struct, kw_only=True):
    """Inputs by the status of their latest result, and those not finished yet."""

    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    timed_out: int = 0
    in_flight: int = 0  # submitted, not yet collected
    pending: int = 0  # not submitted yet (this round)


class Batch(msgspec.Struct, kw_only=True, omit_defaults=False):
    """One batch as GET /v1/batches/{id} answers it. Times are unix milliseconds."""

    id: str
    endpoint_id: str
    state: BatchState
    format: str
    total: int  # inputs in the file (records; blank JSONL lines are not inputs)
    created_at: int
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    low_priority: bool = True
    execution_timeout_ms: int | None = None
    source: str = ""  # the URL the inputs came from, or "upload"
    input_bytes: int = 0
    round: int = 0
    counts: BatchCounts = msgspec.field(default_factory=BatchCounts)
    written: int = 0  # results written to the results file so far (in input order)
    rate: float = 0.0  # inputs finished per second, recently
    eta_s: float | None = None  # seconds to the end at that rate; None when unknown
    started_at: int = 0  # when this round started
    finished_at: int | None = None
    results_url: str = ""  # where the results file parts are kept


class BatchBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /v1/batches (JSON): run every input of the file at `url` on an endpoint.
    To upload a file instead, POST it as the body with `?endpoint_id=...&format=...`."""

    endpoint_id: str
    url: str
    format: str | None = None  # jsonl | csv; None: from the URL's suffix (.csv), else jsonl
    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=MAX_IN_FLIGHT_CAP)] = DEFAULT_MAX_IN_FLIGHT
    low_priority: bool = True
    execution_timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=MAX_DURATION_MS)] | None = None


class BatchList(msgspec.Struct):
    """GET /v1/batches."""

    batches: list[Batch]


class BatchDeleted(msgspec.Struct):
    id: str
    deleted: bool = True


class ResultLine(msgspec.Struct, omit_defaults=True):
    """One line of the results file: the input's index (0-based, in file order), its job id
    (None when the input never became a job: a line that is not valid JSON, say), its status,
    and its output (COMPLETED) or error."""

    index: int
    id: str | None
    status: str
    output: Raw | None = None
    error: str | None = None


class Cursor(msgspec.Struct, frozen=True):
    """Where the feeding stands in the input file: the next input's index, the byte offset
    of the record after the last one read, and the line number there (1-based, for errors)."""

    index: int = 0
    offset: int = 0
    line: int = 1
