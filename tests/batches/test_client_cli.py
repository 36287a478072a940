"""serverless.batch(...) and `podq batch ...` against a real gateway in a thread, with an
in-test worker on the gateway's loop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import serverless
from serverless.batches.cli import main
from serverless.errors import Conflict, NotFound
from serverless.gateway import GatewayOptions
from serverless.settings import Settings
from serverless.store import JobStore
from tests.gateway.conftest import ADMIN_KEY, ThreadedGateway, work

ENDPOINT = "ep-batch-client"


async def worker(store: JobStore) -> None:
    await work(store, ENDPOINT, "w0")


@pytest.fixture
def threaded(settings: Settings) -> Iterator[ThreadedGateway]:
    with ThreadedGateway(settings, GatewayOptions(admin_key=ADMIN_KEY), beside=(worker,)) as gw:
        yield gw


def test_batch_from_an_iterable_waits_with_progress_and_retries_failed(threaded: ThreadedGateway) -> None:
    seen: list[str] = []
    handle = serverless.batch(ENDPOINT, [{"n": i} for i in range(20)] + [{"fail": "no"}],
                              base_url=threaded.url, api_key=ADMIN_KEY)
    done = handle.wait(timeout=30, poll_s=0.05, progress=lambda b: seen.append(b["state"]))
    assert done["state"] == "COMPLETED" and seen[-1] == "COMPLETED"
    assert done["counts"]["completed"] == 20 and done["counts"]["failed"] == 1
    lines = list(handle.results())
    assert [x["index"] for x in lines] == list(range(21))
    assert lines[3]["output"] == {"echo": {"n": 3}} and lines[20]["error"] == "no"
    assert [x["index"] for x in handle.results("FAILED")] == [20]
    assert handle.retry_failed()["round"] == 1
    assert handle.wait(timeout=30, poll_s=0.05)["counts"]["failed"] == 1
    with pytest.raises(NotFound, match="batch 'batch-nope' not found"):
        handle.client.get("batch-nope")


def test_cli_submit_wait_results_list_and_delete(threaded: ThreadedGateway, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.csv"
    source.write_text("prompt,n\nhello,1\n\"a, b\",2\n")
    common = ["--url", threaded.url, "--api-key", ADMIN_KEY]
    main([*common, "submit", str(source), "--endpoint", ENDPOINT, "--wait"])
    batch = json.loads(capsys.readouterr().out)
    assert batch["state"] == "COMPLETED" and batch["format"] == "csv" and batch["total"] == 2
    out = tmp_path / "results.jsonl"
    main([*common, "results", batch["id"], "-o", str(out)])
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[1]["output"] == {"echo": {"prompt": "a, b", "n": "2"}}
    main([*common, "list"])
    assert batch["id"] in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main([*common, "retry", batch["id"]])
    assert exit_.value.code == 1 and "has no FAILED or TIMED_OUT input" in capsys.readouterr().err
    main([*common, "delete", batch["id"]])
    assert json.loads(capsys.readouterr().out) == {"id": batch["id"], "deleted": True}


def test_an_unknown_endpoint_is_refused(threaded: ThreadedGateway) -> None:
    with pytest.raises(NotFound, match="ep-missing"):
        serverless.batch("ep-missing", [1], base_url=threaded.url, api_key=ADMIN_KEY)
    assert Conflict  # the 409 of a running batch's delete is tested in test_api
