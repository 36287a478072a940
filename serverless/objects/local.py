"""LocalStore: objects as files under one directory (PODQ_DATA_DIR, the default store).

A write goes to a temporary file beside the target and is renamed over it, so a reader never
sees half an object and a crash leaves none. File I/O runs in a thread (asyncio.to_thread) so a
large object never blocks the gateway's event loop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from serverless.errors import NotFound
from serverless.objects.base import CHUNK_BYTES, check_key


class LocalStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _missing(self, key: str) -> NotFound:
        return NotFound(f"object {key!r} does not exist in {self.url}")

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write_all, self._path(key), data)

    @staticmethod
    def _write_all(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        path = self._path(key)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    await asyncio.to_thread(f.write, chunk)
                    size += len(chunk)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return size

    async def get(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except (FileNotFoundError, IsADirectoryError):
            raise self._missing(key) from None

    async def stream(self, key: str, chunk_bytes: int = CHUNK_BYTES, start: int = 0) -> AsyncIterator[bytes]:
        try:
            f = await asyncio.to_thread(open, self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise self._missing(key) from None
        try:
            if start:
                f.seek(start)
            while chunk := await asyncio.to_thread(f.read, chunk_bytes):
                yield chunk
        finally:
            f.close()

    async def size(self, key: str) -> int | None:
        path = self._path(key)
        try:
            return (await asyncio.to_thread(path.stat)).st_size if path.is_file() else None
        except FileNotFoundError:
            return None

    async def list(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> list[str]:
        if not self.root.is_dir():
            return []
        found = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith("."):  # a write in progress
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(key)
        return sorted(found)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def delete_prefix(self, prefix: str) -> int:
        keys = await self.list(prefix)
        for key in keys:
            await self.delete(key)
        if prefix.endswith("/") and check_key(prefix.rstrip("/")):
            await asyncio.to_thread(shutil.rmtree, self.root / prefix.rstrip("/"), True)
        return len(keys)

    async def close(self) -> None:
        return None
