"""The object store seam: what batch jobs and model bundles need from "somewhere to keep files".

Two stores implement it: `LocalStore` (a directory, the default: PODQ_DATA_DIR) and `S3Store`
(any S3-compatible server through aiobotocore: PODQ_OBJECT_STORE=s3://bucket/prefix). Keys are
relative, `/`-separated names (`batches/b-1/inputs.jsonl`); a store never sees a path outside
its root. Objects are written whole (`put`, `put_stream`) and read whole or streamed; there is
no append (S3 has none), so writers that grow a file write numbered parts instead.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

from serverless.errors import BadRequest

CHUNK_BYTES = 1 << 20
_KEY = re.compile(r"^[A-Za-z0-9_.:=-]+(/[A-Za-z0-9_.:=-]+)*$")


def check_key(key: str) -> str:
    """A key is 1+ `/`-separated parts of letters, digits and `_.:=-`, none of them `.` or `..`."""
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise BadRequest(f"object key {key!r} is invalid: use letters, digits, '_.:=-' and '/'")
    return key


class ObjectStore(Protocol):
    """Where podq keeps files. Every method raises serverless.errors.NotFound for a missing key."""

    @property
    def url(self) -> str:
        """Where the objects are, for messages and docs (`file:///...`, `s3://bucket/prefix`)."""
        ...

    async def put(self, key: str, data: bytes) -> None:
        """Write `data` as the whole object `key` (replacing any)."""
        ...

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Write the object from chunks without holding it all in memory; returns its size.
        The object appears only once complete (a failed write leaves no partial object)."""
        ...

    async def get(self, key: str) -> bytes:
        """The whole object."""
        ...

    def stream(self, key: str, chunk_bytes: int = CHUNK_BYTES, start: int = 0) -> AsyncIterator[bytes]:
        """The object in chunks from byte `start` on (nothing when `start` is at or past its
        end); NotFound is raised on the first iteration."""
        ...

    async def size(self, key: str) -> int | None:
        """The object's size in bytes, None when it does not exist."""
        ...

    async def list(self, prefix: str) -> list[str]:
        """Every key under `prefix` (a key prefix, usually ending in `/`), sorted."""
        ...

    async def delete(self, key: str) -> None:
        """Remove one object; a missing one is not an error."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object under `prefix`; returns how many."""
        ...

    async def close(self) -> None:
        """Release connections (S3); the store is not used afterwards."""
        ...
