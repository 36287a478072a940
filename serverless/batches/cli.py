"""`podq batch ...`: batch jobs from a shell.

    podq batch submit prompts.jsonl --endpoint ep-1 [--wait]    # a progress bar with --wait
    podq batch submit --from-url https://example.com/p.csv --endpoint ep-1
    podq batch status BATCH_ID [--wait]
    podq batch results BATCH_ID [--status FAILED] [-o results.jsonl]
    podq batch cancel BATCH_ID | retry BATCH_ID [--wait] | delete BATCH_ID | list

`status`, `cancel`, `retry` and `delete` print the batch as JSON, `list` a table, `results` the
JSONL. An error prints the gateway's message and exits with status 1. The gateway is --url
(default $PODQ_ENDPOINT_BASE_URL, else http://127.0.0.1:8000); the key --api-key (default
$PODQ_API_KEY).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from serverless.batches.client import BatchClient, BatchHandle, done_count
from serverless.errors import PodqError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="podq batch", description="Batch jobs: run every input of a "
                                "JSONL or CSV file on an endpoint.")
    p.add_argument("--url", default=None, help="the gateway (default $PODQ_ENDPOINT_BASE_URL)")
    p.add_argument("--api-key", default=None, help="a key that may reach the endpoint (default $PODQ_API_KEY)")
    sub = p.add_subparsers(dest="command", required=True)
    submit = sub.add_parser("submit", help="start a batch from a file (uploaded) or --from-url")
    submit.add_argument("file", nargs="?", help="a .jsonl or .csv file")
    submit.add_argument("--endpoint", required=True, help="the endpoint id")
    submit.add_argument("--from-url", default=None, help="a URL the gateway fetches the file from")
    submit.add_argument("--format", choices=("jsonl", "csv"), default=None, help="default: from the suffix")
    submit.add_argument("--max-in-flight", type=int, default=None, help="inputs queued or running at once")
    submit.add_argument("--normal-priority", action="store_true",
                        help="queue the jobs at normal priority (they may make the scaler add workers)")
    submit.add_argument("--execution-timeout-ms", type=int, default=None, help="each job's executionTimeout")
    submit.add_argument("--wait", action="store_true", help="show a progress bar until it ends")
    for name, text in (("status", "a batch's state and counts"), ("cancel", "cancel a batch"),
                       ("retry", "run a batch's FAILED and TIMED_OUT inputs again"),
                       ("delete", "delete a batch that is not running, with its files")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("batch_id")
        if name in ("status", "retry"):
            cmd.add_argument("--wait", action="store_true", help="show a progress bar until it ends")
    results = sub.add_parser("results", help="the results so far, JSONL in input order")
    results.add_argument("batch_id")
    results.add_argument("--status", default=None, help="only lines of this status (e.g. FAILED)")
    results.add_argument("-o", "--output", default=None, help="write to this file (default: stdout)")
    sub.add_parser("list", help="the newest batches")
    return p


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _table(batches: list[dict[str, Any]]) -> None:
    print(f"{'ID':<24} {'ENDPOINT':<20} {'STATE':<11} {'DONE':>9} {'TOTAL':>9} {'RATE/s':>8}")
    for b in batches:
        print(f"{b['id']:<24} {b['endpoint_id']:<20} {b['state']:<11} {done_count(b):>9} {b['total']:>9} "
              f"{b['rate']:>8.1f}")


def _results(client: BatchClient, args: argparse.Namespace) -> None:
    out = open(args.output, "wb") if args.output else sys.stdout.buffer
    try:
        for line in client.results(args.batch_id, args.status):
            out.write(line + b"\n")
    finally:
        if args.output:
            out.close()
        else:
            out.flush()


def run(args: argparse.Namespace, client: BatchClient) -> None:
    """Do one parsed command."""
    match args.command:
        case "submit":
            if (args.file is None) == (args.from_url is None):
                raise PodqError("give a FILE or --from-url (one of them)")
            created = client.submit(args.endpoint, inputs=args.file, url=args.from_url, format=args.format,
                                    max_in_flight=args.max_in_flight,
                                    low_priority=False if args.normal_priority else None,
                                    execution_timeout_ms=args.execution_timeout_ms)
            _print(BatchHandle(client, created).wait(progress=True) if args.wait else created)
        case "status":
            _print(BatchHandle(client, {"id": args.batch_id}).wait(progress=True) if args.wait
                   else client.get(args.batch_id))
        case "retry":
            handle = BatchHandle(client, client.retry(args.batch_id))
            _print(handle.wait(progress=True) if args.wait else handle.last)
        case "cancel":
            _print(client.cancel(args.batch_id))
        case "delete":
            _print(client.delete(args.batch_id))
        case "results":
            _results(client, args)
        case "list":
            _table(client.list())


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    client = BatchClient(args.url, args.api_key)
    try:
        run(args, client)
    except PodqError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        client.close()
