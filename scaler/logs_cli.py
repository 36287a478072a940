"""`podq logs ENDPOINT [--tail N] [--docker-host URL]`: the recent output of an endpoint's workers.

Reads the logs of the endpoint's containers from the Docker engine the scaler uses (the docker
backend's options, PODQ_DOCKER_* and DOCKER_HOST), stopped containers included, so a worker that
crashed at start-up still shows why. Lines are merged across workers, oldest first.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import msgspec

from scaler.backends.base import BackendError
from scaler.backends.docker import DockerBackend, DockerOptions


def build_parser() -> argparse.ArgumentParser:
    """The flags of `podq logs`."""
    p = argparse.ArgumentParser(prog="podq logs",
                                description="Show the recent logs of an endpoint's workers.")
    p.add_argument("endpoint", help="endpoint id")
    p.add_argument("--tail", type=int, default=100, help="lines per worker (default 100)")
    p.add_argument("--docker-host",
                   help="Docker engine (default: $PODQ_DOCKER_HOST, $DOCKER_HOST, the local socket)")
    return p


def format_lines(lines: list[tuple[str, str]]) -> list[str]:
    """`worker | line` rows, the worker column padded to the widest id (pure)."""
    width = max((len(worker) for worker, _ in lines), default=0)
    return [f"{worker:<{width}} | {line}" for worker, line in lines]


async def read_logs(endpoint: str, tail: int, options: DockerOptions) -> list[str]:
    """The endpoint's worker log lines, formatted for the terminal.

    Args:
        endpoint: the endpoint id.
        tail: lines per worker.
        options: where the engine is.

    Returns:
        One string per line, oldest first.
    """
    backend = DockerBackend(options)
    try:
        return format_lines(await backend.logs(endpoint, tail=tail))
    finally:
        await backend.close()


def main(argv: list[str]) -> None:
    """Entry point of `podq logs`."""
    args = build_parser().parse_args(argv)
    options = DockerOptions.from_env()
    if args.docker_host:
        options = msgspec.structs.replace(options, host=args.docker_host)
    try:
        lines = asyncio.run(read_logs(args.endpoint, args.tail, options))
    except BackendError as e:
        sys.exit(f"podq logs: {e}")
    if not lines:
        host = DockerBackend(options).host
        print(f"podq logs: no worker containers for endpoint {args.endpoint!r} on {host}", file=sys.stderr)
    for line in lines:
        print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
