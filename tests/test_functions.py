"""The job store's Redis function library: named by its source, loaded on first use, loaded
again after a restart forgot it, side by side with another podq version's, refused on a Redis
older than 7 and by an ACL user without the function commands."""

from __future__ import annotations

import asyncio
import re

import msgspec
import pytest

from serverless.errors import ConfigError, RedisUnavailable
from serverless.functions import OPERATIONS, Library, Source, library_source
from serverless.model import RunRequest, Status
from serverless.queue import check_version, connect, server_version
from serverless.redis_server import RedisProcess, find_server
from serverless.settings import Settings
from serverless.store import JobStore


def req() -> RunRequest:
    return RunRequest(input=msgspec.Raw(b'{"x": 1}'))


async def libraries(store: JobStore) -> dict[str, list[str]]:
    """FUNCTION LIST as {library: [function, ...]}, podq's libraries only."""
    out = {}
    for lib in await store.redis.execute_command("FUNCTION", "LIST", "LIBRARYNAME", "podq_*"):
        fields = dict(zip(lib[::2], lib[1::2]))
        names = [dict(zip(f[::2], f[1::2]))[b"name"].decode() for f in fields[b"functions"]]
        out[fields[b"library_name"].decode()] = sorted(names)
    return out


async def roundtrip(store: JobStore, endpoint: str) -> None:
    rec = await store.submit(endpoint, req())
    taken = await store.take(endpoint, "w")
    assert taken is not None and taken.id == rec.id
    assert (await store.finish(taken.id, taken.attempt, Status.COMPLETED, output=b"1")).outcome == "ok"


def test_library_is_named_by_a_hash_of_its_source() -> None:
    source = library_source()
    assert re.fullmatch(r"podq_[0-9a-f]{12}", source.name)
    assert source.code.startswith(f"#!lua name={source.name}\n")
    assert source.function("take") == f"{source.name}_take"
    assert library_source() is source  # read and hashed once per process


async def test_first_call_loads_every_operation(store: JobStore, endpoint: str) -> None:
    await store.redis.execute_command("FUNCTION", "FLUSH")
    await roundtrip(store, endpoint)
    name = library_source().name
    assert await libraries(store) == {name: sorted(f"{name}_{op}" for op in OPERATIONS)}


async def test_functions_a_restart_forgot_are_loaded_again(store: JobStore, endpoint: str) -> None:
    await roundtrip(store, endpoint)
    await store.redis.execute_command("FUNCTION", "FLUSH")  # as a restart without persistence
    calls = [store.submit(endpoint, req()) for _ in range(20)]  # concurrent: one reload is enough
    assert len(await asyncio.gather(*calls)) == 20
    taken = await store.take_many(endpoint, "w", 20)
    assert len(taken) == 20
    assert list(await libraries(store)) == [library_source().name]


async def test_two_podq_versions_share_a_redis_without_replacing_each_other(
    store: JobStore, endpoint: str
) -> None:
    current = library_source()
    name = "podq_0123456789ab"  # an older (or newer) podq's library, from another source
    other = Source(name, current.code.replace(current.name, name).replace("-- Shared", "-- Older"))
    old_store = JobStore(store.redis, store.settings)
    old_store._lib = Library(store.redis, other)
    await roundtrip(old_store, endpoint)
    await roundtrip(store, endpoint)
    await roundtrip(old_store, endpoint)  # still its own functions, not replaced by ours
    assert sorted(await libraries(store)) == sorted([name, current.name])
    await store.redis.execute_command("FUNCTION", "DELETE", name)


async def test_server_version_comes_from_hello() -> None:
    server = RedisProcess().start()
    try:
        redis = await connect(server.url)
        assert await server_version(redis) == find_server().version
        await redis.aclose()
    finally:
        server.stop()


@pytest.mark.parametrize("version", [(7, 0, 0), (7, 2, 4), (8, 1, 8), None])
def test_redis_7_or_an_unknown_version_passes(version: tuple[int, int, int] | None) -> None:
    check_version(version, "redis://db:6379/0")


def test_redis_6_is_refused_with_the_version_the_url_and_the_fix() -> None:
    with pytest.raises(ConfigError) as e:
        check_version((6, 2, 14), "redis://podq:s3cret@db.example:6379/0")
    assert str(e.value) == (
        "podq needs Redis >= 7 (Functions); this server is 6.2.14 at "
        "redis://podq:***@db.example:6379/0: upgrade it, or point PODQ_REDIS_URL at a Redis 7 "
        "(or Valkey 7.2 or later)"
    )


async def test_an_acl_user_without_function_commands_gets_the_fix() -> None:
    old_rule = ("resetkeys ~podq:* resetchannels &podq:* -@all +@read +@write +@connection "
                "+eval +evalsha +script|load")
    server = RedisProcess(users=["default off", f"podq on >pw {old_rule}"]).start()
    try:
        url = server.url_for("podq", "pw")
        store = JobStore(await connect(url), Settings(redis_url=url))
        with pytest.raises(RedisUnavailable, match="denied a command to this ACL user.*docs/security.md"):
            await store.submit("ep", req())
        await store.close()
    finally:
        server.stop()
