"""`podq scaler [--backends process,docker,swarm,kubernetes] [--tick 1.0] [--namespace NS]
[--image-pull-secret NAME]... [--gpu-toleration KEY[=VALUE][:EFFECT]]...`: run the autoscaler (one
leader at a time).

The kubernetes flags override PODQ_K8S_* (scaler/backends/kubernetes_pods.py `KubernetesOptions`);
given without the kubernetes backend they are refused, as they would do nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from typing import TYPE_CHECKING

import msgspec

from scaler.backends.base import Backend, BackendError
from scaler.backends.process import ProcessBackend
from scaler.loop import Scaler
from serverless import eventloop, logs
from serverless.errors import PodqError
from serverless.queue import connect
from serverless.registry import Registry
from serverless.settings import Settings, load_settings
from serverless.store import JobStore

if TYPE_CHECKING:
    from scaler.backends.kubernetes_pods import KubernetesOptions


def make_backends(names: list[str], settings: Settings,
                  kubernetes: KubernetesOptions | None = None) -> dict[str, Backend]:
    """The named backends; `kubernetes`: the kubernetes backend's options (None: PODQ_K8S_*)."""
    backends: dict[str, Backend] = {}
    for name in names:
        if name == "process":
            backends[name] = ProcessBackend(settings.redis_url)
        elif name == "docker":
            from scaler.backends.docker import DockerBackend

            backends[name] = DockerBackend()
        elif name == "swarm":
            from scaler.backends.swarm import SwarmBackend

            # PODQ_DOCKER_* (a swarm manager's engine) and PODQ_SWARM_*; the services' stop grace
            backends[name] = SwarmBackend(grace_s=settings.grace_period_s)
        elif name == "kubernetes":
            from scaler.backends.kubernetes import KubernetesBackend

            # the pods' terminationGracePeriodSeconds (a node drain's grace) is the scaler's
            backends[name] = KubernetesBackend(kubernetes, grace_s=settings.grace_period_s)
        else:
            raise PodqError(f"unknown backend {name!r}; use process, docker, swarm or kubernetes")
    return backends


def kubernetes_options(args: argparse.Namespace, backend_names: list[str]) -> KubernetesOptions | None:
    """PODQ_K8S_* with the command line's kubernetes flags over them; None without the
    kubernetes backend.

    Raises:
        PodqError: a kubernetes flag given without the kubernetes backend.
    """
    given = [flag for flag, value in (("--namespace", args.namespace), ("--image-pull-secret", args.image_pull_secret),
                                      ("--gpu-toleration", args.gpu_toleration)) if value is not None]
    if "kubernetes" not in backend_names:
        if given:
            raise PodqError(f"{', '.join(given)}: for the kubernetes backend only; add kubernetes to --backends")
        return None
    from scaler.backends.kubernetes_pods import KubernetesOptions

    options = KubernetesOptions.from_env()
    changes = {"namespace": args.namespace, "image_pull_secrets": args.image_pull_secret,
               "gpu_tolerations": args.gpu_toleration}
    return msgspec.structs.replace(options, **{k: v for k, v in changes.items() if v is not None})


async def run_scaler(settings: Settings, backend_names: list[str], tick_s: float,
                     kubernetes: KubernetesOptions | None = None) -> None:
    store = JobStore(await connect(settings.redis_dsn), settings)
    backends = make_backends(backend_names, settings, kubernetes)
    scaler = Scaler(Registry(store.redis), store, backends, settings, tick_s=tick_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await scaler.run(stop)
    finally:
        await scaler.close()
        for backend in backends.values():
            await backend.close()
        await store.close()


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="podq scaler", description="Run podq's autoscaler.")
    p.add_argument("--backends", default="process",
                   help="comma-separated: process, docker, swarm, kubernetes (docs/scaling.md)")
    p.add_argument("--tick", type=float, default=1.0, help="seconds between reconciliations")
    k8s = p.add_argument_group("kubernetes backend", "docs/kubernetes.md. The kubeconfig is the in-cluster "
                               "service account's, else $KUBECONFIG, else ~/.kube/config.")
    k8s.add_argument("--namespace", help="namespace of the worker pods (default: $PODQ_K8S_NAMESPACE or default)")
    k8s.add_argument("--image-pull-secret", action="append", metavar="NAME",
                     help="a Secret the kubelet pulls worker images with; repeat for more "
                          "(default: $PODQ_K8S_IMAGE_PULL_SECRETS, comma-separated)")
    k8s.add_argument("--gpu-toleration", action="append", metavar="KEY[=VALUE][:EFFECT]",
                     help="a taint GPU workers tolerate besides nvidia.com/gpu; repeat for more "
                          "(default: $PODQ_K8S_GPU_TOLERATIONS, comma-separated)")
    args = p.parse_args(argv)
    names = args.backends.split(",")
    logs.configure()
    try:
        kubernetes = kubernetes_options(args, names)
        eventloop.run(run_scaler(load_settings(), names, args.tick, kubernetes))
    except (PodqError, BackendError) as e:
        sys.exit(f"podq scaler: {e}")
