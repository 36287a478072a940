"""`podq gateway [--host H] [--port P]`: run one gateway replica (settings from PODQ_* env)."""

from __future__ import annotations

import argparse
import sys

from serverless import logs
from serverless.errors import PodqError
from serverless.gateway.server import DEFAULT_HOST, DEFAULT_PORT, serve
from serverless.settings import load_settings


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="podq gateway", description="Run podq's HTTP gateway.")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"interface to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    args = p.parse_args(argv)
    logs.configure()
    try:
        serve(load_settings(), args.host, args.port)
    except PodqError as e:
        sys.exit(f"podq gateway: {e}")
