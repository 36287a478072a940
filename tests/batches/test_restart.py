"""A batch survives its gateway and its Redis: stopped mid-batch, a new gateway (or the same
one after Redis comes back) finishes it, and every input runs to completion exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp
import msgspec
import pytest
from redis.exceptions import RedisError

from serverless.gateway import GatewayOptions, start_gateway
from serverless.model import Status, TakenJob
from serverless.queue import connect
from serverless.redis_server import RedisProcess
from serverless.settings import Settings
from serverless.store import JobStore
from tests.batches.conftest import jsonl
from tests.gateway.conftest import ADMIN_KEY, beat

HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def counting_worker(store: JobStore, endpoint: str, name: str, runs: Counter[int]) -> None:
    """Take and finish jobs, counting each input that ran to completion; rides out Redis
    being away (as a podq worker does)."""
    while True:
        try:
            await beat(store, endpoint, name)
            taken: TakenJob | None = await store.take(endpoint, name)
            if taken is None:
                await asyncio.sleep(0.005)
                continue
            await asyncio.sleep(0.002)
            result = await store.finish(taken.id, taken.attempt, Status.COMPLETED, output=bytes(taken.input))
            if result.outcome == "ok":
                runs[msgspec.json.decode(taken.input)] += 1
        except (RedisError, OSError):
            await asyncio.sleep(0.1)


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw) -> dict:  # type: ignore[no-untyped-def]
    async with http.request(method, url, headers=HEADERS, **kw) as r:
        return {"status": r.status, **(await r.json())}


async def until(http: aiohttp.ClientSession, url: str, done, timeout: float = 60) -> dict:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            batch = await call(http, "GET", url)
            if batch["status"] == 200 and done(batch):
                return batch
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting on {url}")


async def results_of(http: aiohttp.ClientSession, url: str) -> list[int]:
    async with http.get(url + "/results", headers=HEADERS) as r:
        return [msgspec.json.decode(x)["index"] for x in (await r.read()).splitlines()]


N = 600


async def test_a_new_gateway_finishes_a_batch_its_stopped_gateway_started(settings: Settings, store: JobStore,
                                                                           endpoint: str) -> None:
    runs: Counter[int] = Counter()
    await beat(store, endpoint, "w0")
    workers = [asyncio.create_task(counting_worker(store, endpoint, f"w{i}", runs)) for i in range(4)]
    first = await start_gateway(settings, "127.0.0.1", 0, GatewayOptions(admin_key=ADMIN_KEY))
    try:
        async with aiohttp.ClientSession() as http:
            created = await call(http, "POST", f"{first.url}/v1/batches?endpoint_id={endpoint}&max_in_flight=20",
                                 data=jsonl(list(range(N))))
            url = f"{first.url}/v1/batches/{created['id']}"
            await until(http, url, lambda b: b["counts"]["completed"] >= N // 4)
            await first.close()  # mid-batch: its runner stops wherever it is
            second = await start_gateway(settings, "127.0.0.1", 0, GatewayOptions(admin_key=ADMIN_KEY))
            try:
                url = f"{second.url}/v1/batches/{created['id']}"
                done = await until(http, url, lambda b: b["state"] == "COMPLETED")
                assert done["counts"]["completed"] == N
                assert await results_of(http, url) == list(range(N))  # none skipped, none twice
            finally:
                await second.close()
        assert sorted(runs) == list(range(N)) and set(runs.values()) == {1}  # each ran once
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


@pytest.mark.slow
async def test_a_batch_survives_a_redis_restart(tmp_path: Path) -> None:
    redis = RedisProcess("--appendonly", "yes", "--appendfsync", "always").start()
    settings = Settings(redis_url=redis.url, lease_ms=2_000, heartbeat_ms=300, data_dir=str(tmp_path / "data"))
    store = JobStore(await connect(settings.redis_url), settings)
    runs: Counter[int] = Counter()
    workers = [asyncio.create_task(counting_worker(store, "ep-r", f"w{i}", runs)) for i in range(4)]
    restarted = None
    gw = await start_gateway(settings, "127.0.0.1", 0, GatewayOptions(admin_key=ADMIN_KEY))
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.sleep(0.1)  # a beat makes ep-r known
            created = await call(http, "POST", f"{gw.url}/v1/batches?endpoint_id=ep-r&max_in_flight=20",
                                 data=jsonl(list(range(N))))
            url = f"{gw.url}/v1/batches/{created['id']}"
            await until(http, url, lambda b: b["counts"]["completed"] >= N // 4)
            redis.stop(keep_dir=True)
            await asyncio.sleep(0.5)
            restarted = RedisProcess("--appendonly", "yes", "--dir", redis.dir, port=redis.port).start()
            done = await until(http, url, lambda b: b["state"] == "COMPLETED")
            assert done["counts"]["completed"] == N
            assert await results_of(http, url) == list(range(N))
        assert sorted(runs) == list(range(N)) and set(runs.values()) == {1}
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await gw.close()
        await store.close()
        if restarted is not None:
            restarted.stop()
        redis.stop()


async def test_a_runner_that_lost_its_lease_writes_no_step(store: JobStore) -> None:
    """Fencing: a gateway paused past its lease (another took the batch over) cannot write a
    step: each step is a MULTI that WATCHes the lease and checks its owner first."""
    from serverless.batches.model import Cursor
    from serverless.batches.store import BatchStore, LeaseLost

    batches = BatchStore(store.redis)
    batch = "batch-fenced"
    assert await batches.take_lease(batch, "gateway-a", 10_000)
    await batches.advance(batch, "gateway-a", Cursor(1, 10, 2), False, [0], {}, {})
    await store.redis.delete(f"podq:batch:{batch}:lease")  # a's lease ran out ...
    assert await batches.take_lease(batch, "gateway-b", 10_000)  # ... and b took the batch
    with pytest.raises(LeaseLost, match="no longer gateway-a's"):
        await batches.advance(batch, "gateway-a", Cursor(5, 50, 6), False, [1, 2, 3, 4], {}, {})
    with pytest.raises(LeaseLost):
        await batches.collect(batch, "gateway-a", {0: b"{}"}, {"FAILED": 1}, [])
    with pytest.raises(LeaseLost):
        await batches.written(batch, "gateway-a", 0, 1)
    assert await batches.in_flight(batch) == {0}  # nothing of a's late steps landed
    await batches.advance(batch, "gateway-b", Cursor(2, 20, 3), False, [1], {}, {})
    assert await batches.in_flight(batch) == {0, 1}


async def test_the_lease_is_kept_beside_a_long_step_and_its_loss_stops_the_runner(
        store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that waits long (a slow input file or object store) does not let the lease lapse;
    a lease another gateway took stops the runner's loop at once, mid-step, so it submits
    nothing that runner now owns."""
    from serverless.batches import runner
    from serverless.batches.store import BatchStore

    monkeypatch.setattr(runner, "RENEW_S", 0.05)
    batches = BatchStore(store.redis)
    batch = "batch-kept"
    assert await batches.take_lease(batch, "gateway-a", 300)
    keeper = runner.Runner(batches, store, None, batch, "gateway-a")  # type: ignore[arg-type]
    step = asyncio.create_task(asyncio.sleep(30))  # the loop, waiting in a long step
    keeping = asyncio.create_task(keeper._keep_lease(step))
    await asyncio.sleep(0.5)  # past the 300 ms the lease was taken for
    assert not step.done() and await store.redis.pttl(f"podq:batch:{batch}:lease") > 1_000
    await store.redis.delete(f"podq:batch:{batch}:lease")  # it lapsed all the same ...
    assert await batches.take_lease(batch, "gateway-b", 10_000)  # ... and b took the batch
    await asyncio.wait_for(keeping, 2)
    assert step.cancelled()
