"""Batch jobs: every input of a JSONL or CSV file run on an endpoint, results in input order.

    model.py    Batch, BatchBody, ResultLine: the records
    plan.py     the runner's pure decisions (how much to feed, when to write a part, ids)
    inputs.py   reading the file: records, cursors, CSV rows, bad lines
    store.py    BatchStore: batches in Redis
    results.py  the files in the object store; reading results back in order
    intake.py   starting a batch: storing an upload or a fetched URL
    runner.py   Runner (one batch) and Supervisor (every gateway replica)
    client.py   the sync client behind serverless.batch(...)
    cli.py      podq batch ...

See docs/batch.md.
"""

from __future__ import annotations

__all__: list[str] = []
