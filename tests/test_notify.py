"""listen_forever against a real redis-server: messages reach the callback in order, a
callback that raises costs only its own message, and a killed connection is reported (on_lost)
and subscribed again (on_ready) without losing later messages."""

from __future__ import annotations

import asyncio

import pytest

from serverless.notify import listen_forever
from serverless.queue import connect


@pytest.fixture
async def redis(redis_url: str):
    client = await connect(redis_url)
    yield client
    await client.aclose()


async def _until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_messages_in_order_a_raising_callback_and_a_resubscribe_after_a_kill(redis) -> None:
    got: list[str] = []
    ready: list[int] = []
    lost: list[int] = []

    def on_message(data: str) -> None:
        if data == "boom":
            raise ValueError("a bad message")
        got.append(data)

    task = asyncio.create_task(listen_forever(
        redis, "chan:*", on_message, pattern=True, on_ready=lambda: ready.append(1),
        on_lost=lambda: lost.append(1), name="test"))
    try:
        await _until(lambda: ready)
        for text in ("one", "boom", "two", "dré"):
            await redis.publish("chan:a", text)
        await _until(lambda: len(got) == 3)
        assert got == ["one", "two", "dré"]

        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await _until(lambda: lost and len(ready) == 2)
        await redis.publish("chan:b", "three")
        await _until(lambda: got[-1] == "three")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # cancelled: its connection is closed, so Redis soon counts no pattern subscriber
    for _ in range(100):
        if await redis.execute_command("PUBSUB", "NUMPAT") == 0:
            break
        await asyncio.sleep(0.02)
    assert await redis.execute_command("PUBSUB", "NUMPAT") == 0


async def test_a_plain_channel(redis) -> None:
    got: list[str] = []
    ready = asyncio.Event()
    task = asyncio.create_task(listen_forever(redis, "plain", got.append, on_ready=ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        await redis.publish("plain", "x")
        await redis.publish("other", "y")
        await redis.publish("plain", "z")
        await _until(lambda: len(got) == 2)
        assert got == ["x", "z"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
