"""Where a batch's files are in the object store, and reading its results back in input order.

    batches/{id}/inputs.jsonl | inputs.csv        the file as uploaded or fetched
    batches/{id}/results/r{round}/{start}.jsonl   the results, as parts named by their first
                                                  index (zero-padded: names sort in input order)

A part is written whole once every result in its range is known (S3 has no append), so the
parts of a round, read in name order, are its results file; during a run they are its finished
prefix. During a retry round the results of the round before fill in the rest: GET results is
always one line per input read so far (the latest result of each).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

from serverless.batches import plan
from serverless.objects import ObjectStore


class _Head(msgspec.Struct):
    index: int
    status: str


_head = msgspec.json.Decoder(_Head)


def input_key(batch_id: str, fmt: str) -> str:
    return f"batches/{batch_id}/inputs.{fmt}"


def batch_prefix(batch_id: str) -> str:
    return f"batches/{batch_id}/"


def round_prefix(batch_id: str, round_: int) -> str:
    return f"batches/{batch_id}/results/r{round_}/"


def part_key(batch_id: str, round_: int, start: int) -> str:
    return round_prefix(batch_id, round_) + plan.part_name(start)


async def lines(objects: ObjectStore, keys: list[str]) -> AsyncIterator[bytes]:
    """Every line of the parts `keys`, in order, each with its newline."""
    for key in keys:
        rest = b""
        async for chunk in objects.stream(key):
            *whole, rest = (rest + chunk).split(b"\n")
            for line in whole:
                yield line + b"\n"
        if rest:
            yield rest + b"\n"


def head(line: bytes) -> tuple[int, str]:
    """A result line's index and status."""
    h = _head.decode(line)
    return h.index, h.status


async def round_lines(objects: ObjectStore, batch_id: str, round_: int, start: int = 0) -> AsyncIterator[bytes]:
    """The lines of one round's results from index `start` on."""
    keys = await objects.list(round_prefix(batch_id, round_))
    starts = [plan.part_start(k) for k in keys]
    # skip the parts that end before `start` (a part ends where the next begins)
    first = max([i for i, s in enumerate(starts) if s <= start] or [0])
    async for line in lines(objects, keys[first:]):
        if start == 0 or head(line)[0] >= start:
            yield line


async def results(objects: ObjectStore, batch_id: str, round_: int, written: int,
                  retrying: bool, status: str | None = None) -> AsyncIterator[bytes]:
    """The results file as it stands: this round's parts, then (while a retry round runs)
    the last round's lines after what this round has written; only `status` lines if given."""
    source = round_lines(objects, batch_id, round_)
    async for line in _only(source, status):
        yield line
    if retrying and round_ > 0:
        async for line in _only(round_lines(objects, batch_id, round_ - 1, written), status):
            yield line


async def _only(source: AsyncIterator[bytes], status: str | None) -> AsyncIterator[bytes]:
    async for line in source:
        if status is None or head(line)[1] == status:
            yield line
