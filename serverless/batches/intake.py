"""Starting a batch: the input file is stored in the object store (streamed: never held in
memory), its inputs are counted on the way, then the batch record is written and any runner
picks it up. An upload arrives as the request body; a URL is fetched by the gateway (http(s)
only, no redirects, private addresses refused unless allowed: the webhook SSRF rules).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator

import aiohttp

from serverless.batches import results
from serverless.batches.inputs import Surveyor
from serverless.batches.model import FORMATS
from serverless.batches.store import BatchStore, Meta
from serverless.errors import BadRequest
from serverless.objects import ObjectStore

FETCH_TIMEOUT_S = 600.0
CONNECT_TIMEOUT_S = 10.0


def new_batch_id() -> str:
    return f"batch-{os.urandom(8).hex()}"


def check_format(fmt: str | None, url: str = "") -> str:
    """`jsonl` or `csv`; None means: csv when the URL's path ends in .csv, else jsonl."""
    if fmt is None:
        return "csv" if url.split("?", 1)[0].lower().endswith(".csv") else "jsonl"
    if fmt not in FORMATS:
        raise BadRequest(f"format {fmt!r} is not supported; use one of {', '.join(FORMATS)}")
    return fmt


async def create(batches: BatchStore, objects: ObjectStore, meta: Meta, chunks: AsyncIterable[bytes],
                 max_bytes: int) -> Meta:
    """Store the file under the batch and record the batch (RUNNING). `meta` has everything
    but what reading the file tells (total, size, CSV header); returns the full Meta."""
    surveyor = Surveyor(meta.format, max_bytes)
    await objects.put_stream(meta.input_key, surveyor.tee(chunks))
    try:
        survey = surveyor.result()
    except Exception:
        await objects.delete(meta.input_key)
        raise
    meta.total, meta.input_bytes, meta.header, meta.start = survey.total, survey.size, survey.header, survey.start
    await batches.create(meta, meta.created_at)
    return meta


def new_meta(batch_id: str, endpoint: str, fmt: str, now: int, *, source: str, max_in_flight: int,
             low_priority: bool, execution_timeout_ms: int | None) -> Meta:
    return Meta(id=batch_id, endpoint_id=endpoint, format=fmt, total=0, created_at=now,
                input_key=results.input_key(batch_id, fmt), max_in_flight=max_in_flight,
                low_priority=low_priority, execution_timeout_ms=execution_timeout_ms, source=source)


async def fetched(session: aiohttp.ClientSession, url: str) -> AsyncIterator[bytes]:
    """The body of GET `url`, in chunks; 400 naming the URL when it cannot be had."""
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S)
    try:
        async with session.get(url, allow_redirects=False, timeout=timeout) as r:
            if r.status != 200:
                raise BadRequest(f"fetching {url!r} answered HTTP {r.status}; give a URL that answers "
                                 "200 with the file (redirects are not followed)")
            async for chunk in r.content.iter_chunked(1 << 20):
                yield chunk
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise BadRequest(f"cannot fetch {url!r} ({type(e).__name__}: {e}); check the URL") from None
