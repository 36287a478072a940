"""Batch files and results in S3 (PODQ_OBJECT_STORE=s3://...): the suite's own SeaweedFS."""

from __future__ import annotations

import pytest

from serverless.objects.s3 import S3Store
from serverless.settings import Settings
from tests.batches.conftest import jsonl, result_lines, upload, wait_state
from tests.s3_server import SeaweedS3

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(redis_url: str, s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return Settings(redis_url=redis_url, lease_ms=2_000, heartbeat_ms=300,
                    object_store=f"s3://{s3_server.bucket}/batch-test", s3_endpoint_url=s3_server.url)


async def test_a_batch_keeps_its_file_and_results_in_s3(gateway, known, workers, s3_server: SeaweedS3) -> None:
    await workers(known, n=2)
    batch = await upload(gateway, known, jsonl(list(range(40))))
    done = await wait_state(gateway, batch["id"])
    assert done["results_url"].startswith(f"s3://{s3_server.bucket}/batch-test/batches/{batch['id']}/")
    assert [x["output"] for x in await result_lines(gateway, batch["id"])] == [{"echo": i} for i in range(40)]
    s3 = S3Store(s3_server.bucket, "batch-test/", endpoint_url=s3_server.url, access_key=s3_server.key,
                 secret_key=s3_server.secret)
    try:
        stored = await s3.list(f"batches/{batch['id']}/")
        assert stored[0] == f"batches/{batch['id']}/inputs.jsonl"
        assert stored[1].startswith(f"batches/{batch['id']}/results/r0/000000000000.jsonl")
    finally:
        await s3.close()
