"""podq's clock against a real redis-server: the offset rule (pure, table-tested) and a host
whose clock runs 30 s behind (its clock shifted at the boundary, `clock._wall_ns`) writing
timestamps and leases on Redis's clock once it has synced."""

from __future__ import annotations

import time

import msgspec
import pytest

from serverless import clock, keys
from serverless.model import RunRequest
from serverless.store import JobStore


@pytest.mark.parametrize(("before_ns", "server", "after_ns", "offset"), [
    (1_000_000_000_000_000, (1_000_000, 0), 1_000_000_000_000_000, 0),  # same clock
    (1_000_000_000_000_000, (1_000_030, 0), 1_000_000_002_000_000, 29_999),  # host 30 s behind
    (1_000_000_000_000_000, (999_990, 500_000), 1_000_000_000_000_000, -9_500),  # host ahead
    (1_000_000_000_000_000, (1_000_000, 1_000), 1_000_000_004_000_000, -1),  # mid of the trip
])
def test_estimate_offset(before_ns, server, after_ns, offset) -> None:
    assert clock.estimate_offset(before_ns, *server, after_ns) == offset


@pytest.mark.parametrize(("current", "measured", "used"), [
    (0, 0, 0), (0, 3, 0), (0, -5, 0), (0, 6, 6), (0, 30_000, 30_000), (30_000, 29_998, 30_000),
    (30_000, 0, 0),
])
def test_a_new_offset_applies_only_beyond_the_tolerance(current, measured, used) -> None:
    assert clock.applied(current, measured) == used


@pytest.fixture
def shifted_host(monkeypatch):
    """This process's host clock 30 s behind (Redis runs on the same machine, on time)."""
    monkeypatch.setattr(clock, "_wall_ns", lambda: time.time_ns() - 30_000_000_000)
    monkeypatch.setattr(clock, "_offset_ms", 0)
    monkeypatch.setattr(clock, "_synced_at", float("-inf"))


@pytest.mark.usefixtures("shifted_host")
async def test_a_host_30_s_behind_writes_leases_on_redis_clock_after_syncing(
        store: JobStore, endpoint: str) -> None:
    assert abs(clock.offset_ms() - 30_000) < 50  # the store's connect measured it already
    clock._offset_ms, clock._synced_at = 0, float("-inf")  # as before any measurement
    assert abs(clock.now_ms() - time.time_ns() // 1_000_000 + 30_000) < 50  # unsynced: behind
    assert clock.due()
    offset = await clock.sync(store.redis)
    assert abs(offset - 30_000) < 50 and not clock.due()
    assert abs(clock.now_ms() - time.time_ns() // 1_000_000) < 50  # on Redis's clock now

    record = await store.submit(endpoint, RunRequest(input=msgspec.Raw(b"{}")))
    await store.take(endpoint, "w1")
    server_s, server_us = await store.redis.time()
    server_ms = server_s * 1000 + server_us // 1000
    assert abs(record.submitted_at - server_ms) < 200
    lease = await store.redis.zscore(keys.leases(endpoint), record.id)
    assert abs(lease - (server_ms + store.settings.lease_ms)) < 200
    # a reaper on time finds nothing to reap: the lease did not start 30 s in the past
    assert await store.reap(endpoint) == (0, 0)


@pytest.mark.usefixtures("shifted_host")
async def test_connecting_syncs_and_reaping_syncs_again_when_due(
        redis_url: str, settings, endpoint: str) -> None:
    from serverless.queue import connect

    redis = await connect(redis_url)
    try:
        assert abs(clock.offset_ms() - 30_000) < 50  # measured at connect
        clock._offset_ms = 0  # as if the host's clock had just been stepped
        clock._synced_at = time.monotonic() - clock.SYNC_EVERY_S
        await JobStore(redis, settings).reap(endpoint)
        assert abs(clock.offset_ms() - 30_000) < 50
    finally:
        await redis.aclose()


@pytest.mark.usefixtures("shifted_host")
async def test_a_user_who_may_not_run_time_connects_and_keeps_the_hosts_clock(
        store: JobStore, redis_server, caplog) -> None:
    from serverless.queue import connect

    await store.redis.execute_command("ACL", "SETUSER", "no-time", "on", ">pw", "~*", "&*",
                                      "+@all", "-time")
    clock._offset_ms, clock._synced_at = 0, float("-inf")
    monkeypatch_refused, clock._refused = clock._refused, False  # an earlier test may have warned
    try:
        redis = await connect(redis_server.url_for("no-time", "pw"))
        await redis.aclose()
        assert clock.offset_ms() == 0 and not clock.due()
        assert "may not run TIME" in caplog.text
    finally:
        clock._refused = monkeypatch_refused
        await store.redis.execute_command("ACL", "DELUSER", "no-time")
