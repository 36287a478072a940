"""`podq logs ENDPOINT [--tail N] [--backend docker|swarm] [--docker-host URL]`: the recent output
of an endpoint's workers.

Reads the logs of the endpoint's containers (docker backend) or services (swarm backend) from the
Docker engine the scaler uses (PODQ_DOCKER_* and DOCKER_HOST; for swarm, a manager), stopped
containers included, so a worker that crashed at start-up still shows why. Lines are merged
across workers, oldest first.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import msgspec

from scaler.backends.base import BackendError
from scaler.backends.docker import DockerBackend, DockerOptions
from scaler.backends.swarm import SwarmBackend

BACKENDS = {"docker": DockerBackend, "swarm": SwarmBackend}


def build_parser() -> argparse.ArgumentParser:
    """The flags of `podq logs`."""
    p = argparse.ArgumentParser(prog="podq logs",
                                description="Show the recent logs of an endpoint's workers.")
    p.add_argument("endpoint", help="endpoint id")
    p.add_argument("--tail", type=int, default=100, help="lines per worker (default 100)")
    p.add_argument("--backend", choices=sorted(BACKENDS), default="docker",
                   help="the endpoint's backend (default docker)")
    p.add_argument("--docker-host",
                   help="Docker engine (default: $PODQ_DOCKER_HOST, $DOCKER_HOST, the local socket)")
    return p


def format_lines(lines: list[tuple[str, str]]) -> list[str]:
    """`worker | line` rows, the worker column padded to the widest id (pure)."""
    width = max((len(worker) for worker, _ in lines), default=0)
    return [f"{worker:<{width}} | {line}" for worker, line in lines]


async def read_logs(endpoint: str, tail: int, options: DockerOptions, backend_name: str = "docker") -> list[str]:
    """The endpoint's worker log lines, formatted for the terminal.

    Args:
        endpoint: the endpoint id.
        tail: lines per worker.
        options: where the engine is.
        backend_name: docker (containers) or swarm (services).

    Returns:
        One string per line, oldest first.
    """
    backend = BACKENDS[backend_name](options)
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
        lines = asyncio.run(read_logs(args.endpoint, args.tail, options, args.backend))
    except BackendError as e:
        sys.exit(f"podq logs: {e}")
    if not lines:
        host = BACKENDS[args.backend](options).host
        kind = "services" if args.backend == "swarm" else "containers"
        print(f"podq logs: no worker {kind} for endpoint {args.endpoint!r} on {host}", file=sys.stderr)
    for line in lines:
        print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
