"""`podq keys create|list|revoke`: API keys through the gateway's /v1 admin API (admin key)."""

from __future__ import annotations

import argparse
import json
import sys

from serverless.admin import AdminClient
from serverless.admin_cli import table
from serverless.errors import PodqError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podq keys", description="Manage API keys (admin key).")
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("--url", default=None, help="the gateway (default $PODQ_ENDPOINT_BASE_URL)")
    conn.add_argument("--api-key", default=None, help="the admin key (default $PODQ_API_KEY)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    create = sub.add_parser("create", help="a new key, printed once", parents=[conn])
    create.add_argument("--label", default="", help="who or what the key is for")
    create.add_argument("--endpoint", action="append", default=[], dest="endpoints",
                        help="an endpoint the key may reach (repeat; none: every endpoint)")
    create.add_argument("--worker", action="store_true",
                        help="a worker key: RunPod-protocol worker routes only (RUNPOD_AI_API_KEY)")
    sub.add_parser("list", help="stored keys: digest, label, endpoints", parents=[conn])
    revoke = sub.add_parser("revoke", help="revoke a key by its digest", parents=[conn])
    revoke.add_argument("digest")
    return parser


def run(client: AdminClient, args: argparse.Namespace) -> str:
    if args.command == "create":
        return json.dumps(client.create_key(args.label, args.endpoints, args.worker), indent=2)
    if args.command == "revoke":
        return json.dumps(client.revoke_key(args.digest), indent=2)
    rows = [(k["digest"], k.get("label", ""), ",".join(k.get("endpoints", [])) or "*",
             "worker" if k.get("worker") else "client") for k in client.keys()]
    return table(("DIGEST", "LABEL", "ENDPOINTS", "KIND"), rows)


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    try:
        print(run(AdminClient.create(args.url, args.api_key), args))
    except PodqError as e:
        sys.exit(f"podq keys {args.command}: {e}")
