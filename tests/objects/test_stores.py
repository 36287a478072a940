"""One contract for every object store: LocalStore (a directory) and S3Store against a real
SeaweedFS (tests/s3_server.py), never a mock of S3. S3-only checks (multipart parts, aborted
uploads, the store's key prefix, bucket and credential errors) follow the contract."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from serverless.errors import BadRequest, ConfigError, NotFound
from serverless.objects import LocalStore, ObjectStore, open_store
from serverless.objects.s3 import MIN_PART_BYTES, S3Store, parse_url
from serverless.redis_server import free_port
from serverless.settings import Settings
from tests.s3_server import SeaweedS3

MiB = 1 << 20


def s3_store(s3: SeaweedS3, **changes: object) -> S3Store:
    """A store of the suite's server under a fresh prefix, with 5 MiB parts (S3's smallest)."""
    options: dict[str, object] = {
        "endpoint_url": s3.url, "access_key": s3.key, "secret_key": s3.secret,
        "part_bytes": MIN_PART_BYTES} | changes
    bucket = str(options.pop("bucket", s3.bucket))
    return S3Store(bucket, f"t-{uuid.uuid4().hex[:8]}/", **options)  # type: ignore[arg-type]


@pytest.fixture(params=["local", "s3"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    if request.param == "local":
        store: ObjectStore = LocalStore(tmp_path / "data")
    else:
        store = s3_store(request.getfixturevalue("s3_server"))
    yield store
    await store.close()


@pytest.fixture
async def s3(s3_server: SeaweedS3) -> AsyncIterator[S3Store]:
    store = s3_store(s3_server)
    yield store
    await store.close()


async def chunks(sizes: list[int], fail_after: int | None = None) -> AsyncIterator[bytes]:
    """Chunks of the given sizes, each filled with its index; raise after `fail_after` of them."""
    for i, size in enumerate(sizes):
        if i == fail_after:
            raise RuntimeError("the source broke")
        yield bytes([i % 256]) * size


def expected(sizes: list[int]) -> bytes:
    return b"".join(bytes([i % 256]) * size for i, size in enumerate(sizes))


# -- the contract ------------------------------------------------------------------------


async def test_put_get_and_replace(any_store: ObjectStore) -> None:
    await any_store.put("bundles/b-1.zip", b"first")
    await any_store.put("bundles/b-1.zip", b"second")
    assert await any_store.get("bundles/b-1.zip") == b"second"
    assert await any_store.size("bundles/b-1.zip") == 6
    await any_store.put("empty", b"")
    assert (await any_store.get("empty"), await any_store.size("empty")) == (b"", 0)


@pytest.mark.parametrize("sizes", [
    pytest.param([MiB] * 12, id="12MiB-in-1MiB-chunks"),  # S3: parts of 5 + 5 + 2 MiB
    pytest.param([11 * MiB], id="one-chunk-over-two-parts"),  # S3: 5 + 5 + 1 MiB
    pytest.param([100, 0, 2000, 7], id="small"),  # S3: one put_object
    pytest.param([], id="nothing"),
])
async def test_put_stream(any_store: ObjectStore, sizes: list[int]) -> None:
    assert await any_store.put_stream("batches/b-1/results.jsonl", chunks(sizes)) == sum(sizes)
    assert await any_store.get("batches/b-1/results.jsonl") == expected(sizes)
    assert await any_store.size("batches/b-1/results.jsonl") == sum(sizes)


async def test_stream_in_chunks(any_store: ObjectStore) -> None:
    data = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes
    await any_store.put("batches/b-1/inputs.jsonl", data)
    got = [chunk async for chunk in any_store.stream("batches/b-1/inputs.jsonl", chunk_bytes=300_000)]
    assert [len(c) for c in got] == [300_000, 300_000, 300_000, len(data) - 900_000]
    assert b"".join(got) == data
    assert [c async for c in any_store.stream("batches/b-1/inputs.jsonl")] == [data[:MiB], data[MiB:]]


async def test_stream_from_a_byte_offset(any_store: ObjectStore) -> None:
    data = bytes(range(256)) * 40
    await any_store.put("batches/b-2/inputs.jsonl", data)
    tail = [c async for c in any_store.stream("batches/b-2/inputs.jsonl", chunk_bytes=1000, start=7_000)]
    assert [len(c) for c in tail] == [1000, 1000, 1000, 240] and b"".join(tail) == data[7_000:]
    for at_or_past_end in (len(data), len(data) + 5):
        assert [c async for c in any_store.stream("batches/b-2/inputs.jsonl", start=at_or_past_end)] == []
    with pytest.raises(NotFound):
        [c async for c in any_store.stream("batches/b-2/none", start=10)]


async def test_stream_stopped_early_then_read_again(any_store: ObjectStore) -> None:
    await any_store.put("k", b"x" * 1000)
    reader = any_store.stream("k", chunk_bytes=10)
    assert await reader.__anext__() == b"x" * 10
    await reader.aclose()  # releases the file or the connection
    assert await any_store.get("k") == b"x" * 1000


async def test_list_under_a_prefix_sorted(any_store: ObjectStore) -> None:
    for key in ["batches/b-2/inputs.jsonl", "batches/b-1/results/0002", "bundles/m.zip",
                "batches/b-1/results/0001", "batches/b-10/inputs.jsonl"]:
        await any_store.put(key, b"-")
    assert await any_store.list("batches/b-1/") == ["batches/b-1/results/0001", "batches/b-1/results/0002"]
    assert await any_store.list("batches/b-1") == [
        "batches/b-1/results/0001", "batches/b-1/results/0002", "batches/b-10/inputs.jsonl"]
    assert await any_store.list("bundles/") == ["bundles/m.zip"]
    assert await any_store.list("nothing/") == []
    assert len(await any_store.list("")) == 5


async def test_delete(any_store: ObjectStore) -> None:
    await any_store.put("bundles/m.zip", b"zip")
    await any_store.delete("bundles/m.zip")
    await any_store.delete("bundles/m.zip")  # a missing one is not an error
    assert await any_store.size("bundles/m.zip") is None
    assert await any_store.list("bundles/") == []


async def test_delete_prefix(any_store: ObjectStore) -> None:
    for i in range(5):
        await any_store.put(f"batches/b-1/results/{i:04}", b"r")
    await any_store.put("batches/b-10/inputs.jsonl", b"keep")
    await any_store.put("bundles/m.zip", b"keep")
    assert await any_store.delete_prefix("batches/b-1/") == 5
    assert await any_store.list("") == ["batches/b-10/inputs.jsonl", "bundles/m.zip"]
    assert await any_store.delete_prefix("batches/b-1/") == 0


async def test_missing_keys_are_not_found(any_store: ObjectStore) -> None:
    with pytest.raises(NotFound, match="'batches/none'"):
        await any_store.get("batches/none")
    reader = any_store.stream("batches/none")
    with pytest.raises(NotFound, match="'batches/none'"):
        await reader.__anext__()
    assert await any_store.size("batches/none") is None


@pytest.mark.parametrize("key", ["", "/abs", "dir/", "a//b", "../up", "a/../b", "a/./b", ".", "a b",
                                 "a\\b", "é"])
async def test_invalid_keys_are_refused(any_store: ObjectStore, key: str) -> None:
    with pytest.raises(BadRequest, match="invalid"):
        await any_store.put(key, b"x")
    with pytest.raises(BadRequest, match="invalid"):
        await any_store.get(key)
    with pytest.raises(BadRequest, match="invalid"):
        await any_store.put_stream(key, chunks([1]))
    with pytest.raises(BadRequest, match="invalid"):
        await any_store.size(key)
    with pytest.raises(BadRequest, match="invalid"):
        await any_store.delete(key)


@pytest.mark.parametrize("sizes, fail_after", [
    pytest.param([MiB] * 8, 7, id="after-one-part"),  # S3: a multipart upload was under way
    pytest.param([100, 100], 1, id="before-any-part"),
])
async def test_a_failed_put_stream_leaves_no_object(any_store: ObjectStore, sizes: list[int],
                                                    fail_after: int) -> None:
    await any_store.put("batches/b-1/old", b"old")
    with pytest.raises(RuntimeError, match="the source broke"):
        await any_store.put_stream("batches/b-1/new", chunks(sizes, fail_after))
    assert await any_store.size("batches/b-1/new") is None
    assert await any_store.list("batches/") == ["batches/b-1/old"]
    with pytest.raises(RuntimeError):  # nor does it damage an object it would have replaced
        await any_store.put_stream("batches/b-1/old", chunks(sizes, fail_after))
    assert await any_store.get("batches/b-1/old") == b"old"


# -- S3 only -----------------------------------------------------------------------------


def test_s3_urls() -> None:
    assert parse_url("s3://podq") == ("podq", "")
    assert parse_url("s3://podq/") == ("podq", "")
    assert parse_url("s3://podq/prod/eu/") == ("podq", "prod/eu/")
    for bad in ["s3://", "s3://UPPER/x", "s3://a", "gs://podq", "s3://podq/../x", "s3://podq/a b"]:
        with pytest.raises(ConfigError, match="PODQ_OBJECT_STORE"):
            parse_url(bad)
    assert S3Store.from_url("s3://podq/prod").url == "s3://podq/prod"
    assert S3Store.from_url("s3://podq").url == "s3://podq"
    with pytest.raises(ConfigError, match="5 MiB"):
        S3Store("podq", part_bytes=MiB)


async def test_s3_keys_live_under_the_store_prefix_and_big_objects_go_in_parts(
        s3: S3Store, s3_server: SeaweedS3) -> None:
    await s3.put_stream("big", chunks([MiB] * 12))
    await s3.put_stream("small", chunks([10, 10]))
    client = s3_server.client()
    head = client.head_object(Bucket=s3.bucket, Key=f"{s3.prefix}big")
    assert head["ContentLength"] == 12 * MiB
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object of 3 parts
    assert "-" not in client.head_object(Bucket=s3.bucket, Key=f"{s3.prefix}small")["ETag"]
    assert await s3.list("") == ["big", "small"]


async def test_s3_a_failed_put_stream_aborts_its_upload(s3: S3Store, s3_server: SeaweedS3) -> None:
    with pytest.raises(RuntimeError):
        await s3.put_stream("broken", chunks([MiB] * 8, fail_after=7))
    uploads = s3_server.client().list_multipart_uploads(Bucket=s3.bucket, Prefix=s3.prefix)
    assert uploads.get("Uploads", []) == []


async def test_s3_not_found_names_key_and_bucket(s3: S3Store, s3_server: SeaweedS3) -> None:
    with pytest.raises(NotFound) as caught:
        await s3.get("bundles/none.zip")
    assert str(caught.value) == (
        f"object 'bundles/none.zip' does not exist in bucket {s3_server.bucket!r} at {s3_server.url}")


async def test_s3_delete_prefix_in_batches_of_1000(s3: S3Store) -> None:
    # 1005 concurrent first calls: one client is made (a lock), and the puts share its pool
    await asyncio.gather(*(s3.put(f"batches/b-1/{i:05}", b"") for i in range(1005)))
    assert len(await s3.list("batches/")) == 1005  # two pages of list_objects_v2
    assert await s3.delete_prefix("batches/") == 1005
    assert await s3.list("") == []


async def test_s3_missing_bucket_is_a_clear_error(s3_server: SeaweedS3) -> None:
    store = s3_store(s3_server, bucket="no-such-bucket")
    with pytest.raises(ConfigError) as caught:
        await store.put("k", b"x")
    assert str(caught.value) == (f"bucket 'no-such-bucket' does not exist at {s3_server.url}: "
                                 "create it or set PODQ_OBJECT_STORE")
    await store.close()


async def test_s3_wrong_secret_is_a_clear_error(s3_server: SeaweedS3) -> None:
    store = s3_store(s3_server, secret_key="not-the-secret")
    with pytest.raises(ConfigError, match="refused access.*check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        await store.get("k")
    await store.close()


async def test_s3_no_credentials_is_a_clear_error(s3_server: SeaweedS3, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to ask
    store = s3_store(s3_server, access_key=None, secret_key=None)
    with pytest.raises(ConfigError, match="no S3 credentials .*set AWS_ACCESS_KEY_ID"):
        await store.get("k")
    await store.close()


async def test_s3_unreachable_server_is_a_clear_error(s3_server: SeaweedS3) -> None:
    store = s3_store(s3_server, endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1)
    with pytest.raises(ConfigError, match="is not reachable .*PODQ_S3_ENDPOINT_URL"):
        await store.size("k")
    await store.close()


# -- open_store --------------------------------------------------------------------------


async def test_open_store_defaults_to_the_data_dir(tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=str(tmp_path / "data")))
    assert isinstance(store, LocalStore)
    await store.put("bundles/m.zip", b"zip")
    assert (tmp_path / "data" / "bundles" / "m.zip").read_bytes() == b"zip"


async def test_open_store_s3_with_credentials_from_the_environment(
        s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    store = open_store(Settings(object_store=f"s3://{s3_server.bucket}/{prefix}",
                                s3_endpoint_url=s3_server.url))
    assert isinstance(store, S3Store) and store.url == f"s3://{s3_server.bucket}/{prefix}"
    await store.put("bundles/m.zip", b"zip")
    await store.close()
    body = s3_server.client().get_object(Bucket=s3_server.bucket, Key=f"{prefix}/bundles/m.zip")["Body"]
    assert body.read() == b"zip"


@pytest.mark.parametrize("target", ["gs://bucket", "/var/podq", "s3://No_Such"])
def test_open_store_refuses_what_it_cannot_use(target: str) -> None:
    with pytest.raises(ConfigError, match=f"PODQ_OBJECT_STORE={target!r}"):
        open_store(Settings(object_store=target))


# -- the server helper -------------------------------------------------------------------


def test_the_s3_server_stops_without_leftovers() -> None:
    server = SeaweedS3(bucket="leftovers").start()
    sockets = [p for port in server.ports.values() for p in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")]
    server.stop()
    assert server.proc is not None and server.proc.poll() is not None
    assert not server.dir.exists()
    assert [p for p in sockets if p.exists()] == []
