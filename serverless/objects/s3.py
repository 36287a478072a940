"""S3Store: objects in an S3 bucket (AWS, SeaweedFS, MinIO...) through aiobotocore.

    store = S3Store.from_url("s3://podq/prod", endpoint_url="http://127.0.0.1:8333")
    await store.put("bundles/b-1.zip", data)     # the S3 key is "prod/bundles/b-1.zip"

Choices:
- One aiobotocore client per store, made on first use inside the running event loop (a client
  is bound to the loop that made it) and closed by close(). Making it checks the bucket once
  (head_bucket), so a missing bucket or a wrong secret fails at the first call with a message
  naming the fix, not later as a puzzling 403 on some key.
- Credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
  AWS_PROFILE, an instance role...) unless given to the constructor; the region from AWS_REGION
  and the like, else us-east-1 (S3-compatible servers ignore it).
- With an endpoint_url (an S3-compatible server) requests use path-style addressing
  (`http://host/bucket/key`, which needs no wildcard DNS) and send checksums only where S3
  requires them, which every S3-compatible server understands.
- put_stream buffers PART_BYTES and uploads a multipart object part by part, so memory stays
  at one part whatever the size; a source that ends before one part is full becomes a single
  put_object. Any error (or cancellation) aborts the upload, so no partial object appears.
  S3 allows 10,000 parts: with 8 MiB parts an object may reach 78 GiB.
- Botocore's errors are translated at one place (_translate): a missing key becomes NotFound;
  a missing bucket, refused or absent credentials, or an unreachable server a ConfigError
  naming the fix; anything else a PodqError quoting S3's answer (never a raw botocore error).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from serverless.errors import BadRequest, ConfigError, NotFound, PayloadTooLarge, StorageUnavailable
from serverless.objects.base import CHUNK_BYTES, check_key

MIN_PART_BYTES = 5 << 20  # S3's smallest part, except the last
PART_BYTES = 8 << 20
MAX_PARTS = 10_000
DELETE_BATCH = 1000  # delete_objects takes at most 1000 keys
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MISSING_KEY = {"NoSuchKey", "404", "NotFound"}
_REFUSED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
            "InvalidToken", "ExpiredToken"}


def parse_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix/"); the prefix is "" when absent."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    if not url.startswith("s3://") or not _BUCKET.match(bucket):
        raise ConfigError(f"PODQ_OBJECT_STORE={url!r} names no valid bucket: use s3://bucket[/prefix] "
                          "with a bucket of 3-63 lowercase letters, digits, '.' and '-'")
    if prefix:
        try:
            check_key(prefix)
        except BadRequest as e:
            raise ConfigError(f"PODQ_OBJECT_STORE={url!r} has an invalid prefix: {e}") from None
    return bucket, f"{prefix}/" if prefix else ""


def check_prefix(prefix: str) -> str:
    """A listing prefix is "" or a key, possibly ending in `/` (`batches/`, `batches/b-1`)."""
    if prefix:
        check_key(prefix.removesuffix("/"))
    return prefix


class S3Store:
    """Objects under `prefix` in `bucket`, on AWS or on the S3-compatible `endpoint_url`."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 access_key: str | None = None, secret_key: str | None = None,
                 region: str | None = None, part_bytes: int = PART_BYTES,
                 max_attempts: int = 4) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ConfigError(f"part_bytes={part_bytes} is under S3's 5 MiB minimum part: use "
                              f"{MIN_PART_BYTES} or more")
        self.bucket, self.prefix = bucket, prefix
        self.endpoint_url = endpoint_url
        self.part_bytes = part_bytes
        self.max_attempts = max_attempts  # per call, the first included (botocore's retries)
        self._credentials = {"aws_access_key_id": access_key, "aws_secret_access_key": secret_key}
        self._region = region
        self._client: Any = None
        self._exit = AsyncExitStack()
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None, **options: Any) -> S3Store:
        """The store PODQ_OBJECT_STORE=`s3://bucket/prefix` names (PODQ_S3_ENDPOINT_URL: endpoint_url)."""
        bucket, prefix = parse_url(url)
        return cls(bucket, prefix, endpoint_url=endpoint_url, **options)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def where(self) -> str:
        """The bucket and server, for messages."""
        return f"bucket {self.bucket!r} at {self.endpoint_url or 'AWS S3'}"

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    # -- the client and its errors --------------------------------------------------------

    async def _s3(self) -> Any:
        """The client, made (and the bucket checked) on first use."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                client = await self._exit.enter_async_context(self._new_client())
                try:
                    await client.head_bucket(Bucket=self.bucket)
                except (ClientError, EndpointConnectionError, NoCredentialsError) as e:
                    await self._exit.aclose()
                    raise self._translate(e) from None
                self._client = client
            return self._client

    def _new_client(self) -> Any:
        session = get_session()
        options: dict[str, Any] = {
            "retries": {"total_max_attempts": self.max_attempts, "mode": "standard"}}
        if self.endpoint_url:
            options |= {"s3": {"addressing_style": "path"},
                        "request_checksum_calculation": "when_required",
                        "response_checksum_validation": "when_required"}
        region = self._region or session.get_config_variable("region") or "us-east-1"
        return session.create_client("s3", endpoint_url=self.endpoint_url, region_name=region,
                                     config=AioConfig(**options), **self._credentials)

    async def _call(self, operation: str, key: str | None = None, **params: Any) -> Any:
        """One S3 call on this bucket, its ClientError translated."""
        client = await self._s3()
        try:
            return await getattr(client, operation)(Bucket=self.bucket, **params)
        except (ClientError, EndpointConnectionError, NoCredentialsError) as e:
            raise self._translate(e, key) from None

    def _translate(self, error: Exception, key: str | None = None) -> Exception:
        if isinstance(error, EndpointConnectionError):
            return StorageUnavailable(f"S3 server {self.endpoint_url or 'AWS S3'} is not reachable "
                               f"({error}): start it or set PODQ_S3_ENDPOINT_URL")
        if isinstance(error, NoCredentialsError):
            return StorageUnavailable(f"no S3 credentials for {self.where}: set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
        code = str(error.response.get("Error", {}).get("Code", ""))  # type: ignore[attr-defined]
        if code == "NoSuchBucket" or (key is None and code in _MISSING_KEY):
            return StorageUnavailable(f"bucket {self.bucket!r} does not exist at "
                               f"{self.endpoint_url or 'AWS S3'}: create it or set PODQ_OBJECT_STORE")
        if key is not None and code in _MISSING_KEY:
            return NotFound(f"object {key!r} does not exist in {self.where}")
        if code in _REFUSED:
            said = f"HTTP {code}" if code.isdigit() else code
            return StorageUnavailable(f"{self.where} refused access ({said}): check AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY, and that they may read and write the bucket")
        return StorageUnavailable(f"{self.where} failed ({error}): see the S3 server's logs")

    # -- writing --------------------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> None:
        await self._call("put_object", key, Key=self._key(key), Body=data)

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        s3_key = self._key(key)
        buffer, size, upload = bytearray(), 0, None
        try:
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                while len(buffer) >= self.part_bytes:
                    upload = upload or await _Upload.start(self, key, s3_key)
                    await upload.add(bytes(buffer[:self.part_bytes]))
                    del buffer[:self.part_bytes]
            if upload is None:
                await self._call("put_object", key, Key=s3_key, Body=bytes(buffer))
                return size
            if buffer:
                await upload.add(bytes(buffer))
            await upload.complete()
        except BaseException:
            if upload is not None:
                await upload.abort()
            raise
        return size

    # -- reading --------------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        reply = await self._call("get_object", key, Key=self._key(key))
        async with reply["Body"] as body:
            return await body.read()

    async def stream(self, key: str, chunk_bytes: int = CHUNK_BYTES, start: int = 0) -> AsyncIterator[bytes]:
        ranged: dict[str, str] = {}
        if start:  # a Range at or past the end is S3's 416: answer nothing, as a file would
            size = await self.size(key)
            if size is None:
                raise NotFound(f"object {key!r} does not exist in {self.where}")
            if start >= size:
                return
            ranged["Range"] = f"bytes={start}-"
        reply = await self._call("get_object", key, Key=self._key(key), **ranged)
        async with reply["Body"] as body:
            while chunk := await _read_up_to(body, chunk_bytes):
                yield chunk

    async def size(self, key: str) -> int | None:
        try:
            reply = await self._call("head_object", key, Key=self._key(key))
        except NotFound:
            return None
        return int(reply["ContentLength"])

    async def list(self, prefix: str) -> list[str]:
        return sorted([key.removeprefix(self.prefix) async for key in self._keys(prefix)])

    async def _keys(self, prefix: str) -> AsyncIterator[str]:
        """Every S3 key under `prefix` (with the store's own prefix)."""
        paginator = (await self._s3()).get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + check_prefix(prefix))
        try:
            async for page in pages:
                for item in page.get("Contents", ()):
                    yield item["Key"]
        except (ClientError, EndpointConnectionError) as e:
            raise self._translate(e) from None

    # -- deleting -------------------------------------------------------------------------

    async def delete(self, key: str) -> None:
        await self._call("delete_object", key, Key=self._key(key))

    async def delete_prefix(self, prefix: str) -> int:
        keys = [key async for key in self._keys(prefix)]
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start:start + DELETE_BATCH]]
            reply = await self._call("delete_objects", Delete={"Objects": batch, "Quiet": True})
            if failed := reply.get("Errors"):
                raise ConfigError(f"{self.where} refused to delete {len(failed)} objects, first "
                                  f"{failed[0].get('Key')!r}: {failed[0].get('Message')}")
        return len(keys)

    async def close(self) -> None:
        self._client = None
        await self._exit.aclose()


class _Upload:
    """One multipart upload in progress: its id and the parts sent so far."""

    def __init__(self, store: S3Store, key: str, s3_key: str, upload_id: str) -> None:
        self.store, self.key, self.s3_key, self.id = store, key, s3_key, upload_id
        self.parts: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, store: S3Store, key: str, s3_key: str) -> _Upload:
        created = await store._call("create_multipart_upload", key, Key=s3_key)
        return cls(store, key, s3_key, created["UploadId"])

    async def add(self, data: bytes) -> None:
        number = len(self.parts) + 1
        if number > MAX_PARTS:
            raise PayloadTooLarge(f"object {self.key!r} is over {MAX_PARTS} parts of "
                                  f"{self.store.part_bytes} bytes: write it in smaller objects")
        sent = await self.store._call("upload_part", self.key, Key=self.s3_key, UploadId=self.id,
                                      PartNumber=number, Body=data)
        self.parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    async def complete(self) -> None:
        await self.store._call("complete_multipart_upload", self.key, Key=self.s3_key,
                               UploadId=self.id, MultipartUpload={"Parts": self.parts})

    async def abort(self) -> None:
        try:
            await self.store._call("abort_multipart_upload", self.key, Key=self.s3_key,
                                   UploadId=self.id)
        except Exception:  # the first error is the one to report; S3 expires the rest
            pass


async def _read_up_to(body: Any, size: int) -> bytes:
    """`size` bytes of a response body (fewer only at its end): the network hands out whatever
    arrived, and callers get chunks of the size they asked for, as from a file."""
    parts, got = [], 0
    while got < size and (part := await body.read(size - got)):
        parts.append(part)
        got += len(part)
    return b"".join(parts)
