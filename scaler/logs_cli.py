"""`podq logs ENDPOINT [--tail N] [--backend docker|swarm|kubernetes] [--docker-host URL]
[--namespace NS]`: the recent output of an endpoint's workers.

Reads the logs of the endpoint's containers (docker backend) or services (swarm backend) from the
Docker engine the scaler uses (PODQ_DOCKER_* and DOCKER_HOST; for swarm, a manager), stopped
containers included, so a worker that crashed at start-up still shows why; or of its pods
(kubernetes backend: PODQ_K8S_NAMESPACE and the kubeconfig, as the scaler reads them), ended
ones included, and for a pod whose container never started, the reason. Lines are merged across
workers, oldest first.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import msgspec

from scaler.backends.base import BackendError
from scaler.backends.docker import DockerBackend, DockerOptions
from scaler.backends.kubernetes import KubernetesBackend
from scaler.backends.kubernetes_pods import KubernetesOptions
from scaler.backends.swarm import SwarmBackend

BACKENDS = {"docker": DockerBackend, "swarm": SwarmBackend, "kubernetes": KubernetesBackend}
WORKERS = {"docker": "containers", "swarm": "services", "kubernetes": "pods"}


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
    p.add_argument("--namespace",
                   help="the worker pods' namespace, kubernetes backend (default: $PODQ_K8S_NAMESPACE or default)")
    return p


def format_lines(lines: list[tuple[str, str]]) -> list[str]:
    """`worker | line` rows, the worker column padded to the widest id (pure)."""
    width = max((len(worker) for worker, _ in lines), default=0)
    return [f"{worker:<{width}} | {line}" for worker, line in lines]


async def read_logs(endpoint: str, tail: int, options: DockerOptions | KubernetesOptions,
                    backend_name: str = "docker") -> list[str]:
    """The endpoint's worker log lines, formatted for the terminal.

    Args:
        endpoint: the endpoint id.
        tail: lines per worker.
        options: where the engine is (KubernetesOptions for the kubernetes backend).
        backend_name: docker (containers), swarm (services) or kubernetes (pods).

    Returns:
        One string per line, oldest first.
    """
    backend = BACKENDS[backend_name](options)
    try:
        return format_lines(await backend.logs(endpoint, tail=tail))
    finally:
        await backend.close()


def engine_options(args: argparse.Namespace) -> DockerOptions | KubernetesOptions:
    """The backend's options from its environment, with the flags over them.

    Raises:
        BackendError: a flag of another backend's engine (it would do nothing), or a bad value.
    """
    if args.backend == "kubernetes":
        if args.docker_host:
            raise BackendError("--docker-host does not apply to --backend kubernetes (it reads the kubeconfig)")
        options = KubernetesOptions.from_env()
        return msgspec.structs.replace(options, namespace=args.namespace) if args.namespace else options
    if args.namespace:
        raise BackendError(f"--namespace applies to --backend kubernetes only, not {args.backend}")
    docker = DockerOptions.from_env()
    return msgspec.structs.replace(docker, host=args.docker_host) if args.docker_host else docker


def where(backend_name: str, options: DockerOptions | KubernetesOptions) -> str:
    """Where the workers were looked for, for the "none found" message."""
    if isinstance(options, KubernetesOptions):
        return f"namespace {options.namespace} of the cluster"
    return BACKENDS[backend_name](options).host  # type: ignore[arg-type]


def main(argv: list[str]) -> None:
    """Entry point of `podq logs`."""
    args = build_parser().parse_args(argv)
    try:
        options = engine_options(args)
        lines = asyncio.run(read_logs(args.endpoint, args.tail, options, args.backend))
    except BackendError as e:
        sys.exit(f"podq logs: {e}")
    if not lines:
        print(f"podq logs: no worker {WORKERS[args.backend]} for endpoint {args.endpoint!r} on "
              f"{where(args.backend, options)}", file=sys.stderr)
    for line in lines:
        print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
