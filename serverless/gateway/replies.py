"""The gateway's answers that are not job records, as msgspec Structs (RunPod's field names).

A job's own answer is `model.StatusBody` (from `lifecycle.status_body`); health is
`model.Health`; errors are `error_responses.ErrorReply`.
"""

from __future__ import annotations

import msgspec
from msgspec import Raw


class JobRef(msgspec.Struct):
    """`{"id", "status"}`: what /run, /cancel, /retry and an unfinished /runsync answer."""

    id: str
    status: str


class StreamItem(msgspec.Struct):
    """One stream chunk as RunPod's /stream shows it."""

    output: Raw


class StreamReply(msgspec.Struct):
    """/stream: the job's status and the chunks not returned by an earlier call."""

    status: str
    stream: list[StreamItem]


class PurgeReply(msgspec.Struct):
    """/purge-queue: how many queued jobs were removed."""

    removed: int
    status: str = "completed"


class Liveness(msgspec.Struct):
    """/healthz: the process is up."""

    status: str = "ok"


encode = msgspec.json.Encoder().encode
