"""AutoPipeline against a real redis-server: the commands of one loop turn share one connection
and one write, each caller gets its own reply or its own error, a cancelled caller costs the
others nothing, and a connection lost mid-batch fails that batch only."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from serverless import autopipeline
from serverless.autopipeline import AutoPipeline, pairs
from serverless.queue import connect


@pytest.fixture
async def redis(redis_url: str):
    client = await connect(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


def connections(client) -> int:
    pool = client.connection_pool
    return len(pool._available_connections) + len(pool._in_use_connections)


async def test_one_turn_of_commands_is_one_connection_and_each_caller_gets_its_reply(redis) -> None:
    auto = AutoPipeline(redis)
    await redis.ping()  # the pool's first connection exists
    before = connections(redis)
    replies = await asyncio.gather(*(auto.execute("INCRBY", "n", i) for i in range(1, 201)))
    # one connection more, the pipeline's own (counted in the pool, so the client's aclose
    # closes it); plain execute_command x200 concurrently opens ~200
    assert connections(redis) == before + 1
    assert sorted(replies) == sorted(set(replies)) and max(replies) == sum(range(1, 201))
    assert int(await redis.get("n")) == sum(range(1, 201))


async def test_a_turn_larger_than_one_batch_is_split_and_still_answered(redis, monkeypatch) -> None:
    monkeypatch.setattr(autopipeline, "MAX_BATCH", 7)
    auto = AutoPipeline(redis)
    replies = await asyncio.gather(*(auto.execute("ECHO", str(i)) for i in range(50)))
    assert replies == [str(i).encode() for i in range(50)]


async def test_an_error_reply_goes_to_its_own_caller_only(redis) -> None:
    auto = AutoPipeline(redis)
    await redis.set("s", "text")
    ok1, bad, ok2 = await asyncio.gather(
        auto.execute("INCR", "a"), auto.execute("INCR", "s"), auto.execute("INCR", "b"),
        return_exceptions=True)
    assert ok1 == 1 and ok2 == 1
    assert isinstance(bad, ResponseError) and "not an integer" in str(bad)
    assert await auto.execute("INCR", "a") == 2  # the connection stays in sync after an error


async def test_a_lone_command_and_raw_hgetall(redis) -> None:
    auto = AutoPipeline(redis)
    assert pairs(await auto.execute("HGETALL", "none")) == {}
    await redis.hset("h", mapping={"a": "1", "b": "2"})
    assert pairs(await auto.execute("HGETALL", "h")) == {b"a": b"1", b"b": b"2"}


async def test_a_cancelled_caller_does_not_cost_the_others_their_replies(redis) -> None:
    auto = AutoPipeline(redis)
    first = asyncio.ensure_future(auto.execute("INCR", "c"))
    second = asyncio.ensure_future(auto.execute("INCR", "c"))
    await asyncio.sleep(0)  # both joined the turn's batch
    first.cancel()
    assert await second in (1, 2)
    assert first.cancelled()
    assert int(await redis.get("c")) == 2  # the cancelled caller's command still ran
    assert await auto.execute("INCR", "c") == 3


async def test_a_connection_lost_mid_batch_fails_that_batch_and_the_next_turn_reconnects(
        redis, redis_url: str) -> None:
    auto = AutoPipeline(redis)
    await auto.execute("PING")
    killer = await connect(redis_url)
    try:
        # the batch waits on Redis (a BLPOP that nothing answers) while its connection is killed
        batch = asyncio.gather(auto.execute("BLPOP", "nothing", "5"), auto.execute("PING"),
                               return_exceptions=True)
        await asyncio.sleep(0.2)
        await killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        results = await asyncio.wait_for(batch, 3)
        assert all(isinstance(r, (RedisConnectionError, OSError)) for r in results), results
    finally:
        await killer.aclose()
    assert await auto.execute("ECHO", "x") == b"x"  # a fresh connection, in sync


async def test_a_command_hiredis_cannot_pack_fails_alone(redis) -> None:
    auto = AutoPipeline(redis)
    ok1, bad, ok2 = await asyncio.gather(
        auto.execute("ECHO", "a"), auto.execute("ECHO", None), auto.execute("ECHO", "b"),
        return_exceptions=True)
    assert (ok1, ok2) == (b"a", b"b")
    assert isinstance(bad, TypeError), bad
    assert await auto.execute("ECHO", "c") == b"c"  # nothing half-written: still in sync


async def test_error_replies_are_redis_pys_exception_classes(redis) -> None:
    from redis.exceptions import NoScriptError
    auto = AutoPipeline(redis)
    with pytest.raises(NoScriptError):
        await auto.execute("EVALSHA", "0" * 40, 0)


async def test_a_decoding_client_gets_decoded_replies(redis_url: str) -> None:
    from redis.asyncio import Redis
    client = Redis.from_url(redis_url, decode_responses=True)
    auto = AutoPipeline(client)
    try:
        assert await auto.execute("ECHO", "é") == "é"
    finally:
        await auto.aclose()
        await client.aclose()


async def test_aclose_fails_what_is_in_flight_and_a_later_call_reopens(redis) -> None:
    auto = AutoPipeline(redis)
    await auto.execute("PING")
    blocked = asyncio.ensure_future(auto.execute("BLPOP", "nothing", "5"))
    await asyncio.sleep(0.1)
    await auto.aclose()
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(blocked, 2)
    assert await auto.execute("ECHO", "again") == b"again"
    await auto.aclose()


async def test_each_round_trip_is_timed_once(redis, monkeypatch) -> None:
    took: list[float] = []
    monkeypatch.setattr(autopipeline, "ROUND_TRIP_OBSERVERS", [took.append])
    auto = AutoPipeline(redis)
    await asyncio.gather(*(auto.execute("PING") for _ in range(10)))  # one turn: one round trip
    await auto.execute("PING")
    assert len(took) == 2 and all(t > 0 for t in took)
    await auto.aclose()


async def test_closing_the_client_closes_the_pipelines_connection(redis_url: str) -> None:
    client = await connect(redis_url)
    auto = AutoPipeline(client)
    await auto.execute("CLIENT", "SETNAME", "the-pipeline")
    names = lambda listing: [c.split("name=")[1].split()[0] for c in listing.decode().splitlines()]  # noqa: E731
    await asyncio.wait_for(client.aclose(), 3)  # returns: redis-py learns the connection closed
    observer = await connect(redis_url)
    try:
        for _ in range(100):
            if "the-pipeline" not in names(await observer.execute_command("CLIENT", "LIST")):
                break
            await asyncio.sleep(0.02)
        assert "the-pipeline" not in names(await observer.execute_command("CLIENT", "LIST"))
    finally:
        await observer.aclose()
