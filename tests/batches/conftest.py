"""Batch fixtures: the gateway fixtures (a real gateway over the suite's redis-server, in-test
workers) with the object store in a temporary directory, and helpers to drive a batch."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

from serverless.settings import Settings
from serverless.store import JobStore
from tests.gateway.conftest import (  # noqa: F401  (fixtures)
    ADMIN_KEY, Gateway, beat, make_gateway, gateway, workers,
)


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(redis_url=redis_url, lease_ms=2_000, heartbeat_ms=300, data_dir=str(tmp_path / "data"))


@pytest.fixture
async def known(store: JobStore, endpoint: str) -> str:
    """`endpoint`, known to the gateway through a worker's heartbeat (no worker takes jobs)."""
    await beat(store, endpoint, "idle-worker")
    return endpoint


def jsonl(values: list[Any]) -> bytes:
    return b"".join(msgspec.json.encode(v) + b"\n" for v in values)


async def upload(gw: Gateway, endpoint: str, body: bytes, **query: Any) -> Any:
    params = "&".join(f"{k}={v}" for k, v in {"endpoint_id": endpoint, **query}.items())
    answer = await gw.call("POST", f"/v1/batches?{params}", data=body,
                           headers={"Content-Type": "application/x-ndjson"})
    assert answer.status == 200, answer.body
    return answer.body


async def wait_state(gw: Gateway, batch_id: str, states: tuple[str, ...] = ("COMPLETED",),
                     timeout: float = 30) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        answer = await gw.call("GET", f"/v1/batches/{batch_id}")
        assert answer.status == 200, answer.body
        if answer.body["state"] in states:
            return answer.body
        assert loop.time() < deadline, f"batch still {answer.body}"
        await asyncio.sleep(0.05)


async def result_lines(gw: Gateway, batch_id: str, query: str = "") -> list[dict[str, Any]]:
    answer = await gw.call("GET", f"/v1/batches/{batch_id}/results{query}")
    assert answer.status == 200, answer.body
    return [msgspec.json.decode(line) for line in answer.body.splitlines()]
