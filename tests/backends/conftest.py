"""Backend fixtures: the session's Docker engine (plain and in swarm mode), the docker and swarm
backends on it, and the kubernetes backend on a real cluster.

The Docker ones skip, with dockerd's own words, where no Docker engine or no swarm can run
(tests/backends/docker_engine.py). No Kubernetes API server can run here, so the kubernetes
backend exists only where PODQ_TEST_KUBECONFIG names a cluster's kubeconfig (docs/kubernetes.md);
elsewhere it skips and says so.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from scaler.backends.docker import DockerBackend
from scaler.backends.kubernetes import KubernetesBackend
from scaler.backends.kubernetes_pods import KubernetesOptions
from scaler.backends.swarm import SwarmBackend
from tests.backends.swarm_nodes import swarm2_backend, two_node_swarm  # noqa: F401  (fixtures)
from tests.backends.docker_engine import (  # noqa: F401  (fixtures)
    DockerEngine,
    SwarmNode,
    docker_engine,
    swarm_engine,
)

SWARM_GRACE_S = 5.0  # the services' StopGracePeriod in the tests
K8S_GRACE_S = 5.0  # the pods' terminationGracePeriodSeconds in the tests
# where the test image holds tests/scaler/handlers/work.py: the worker base image's handler path
K8S_HANDLER = "/app/handler.py"
NO_CLUSTER = ("set PODQ_TEST_KUBECONFIG to a cluster's kubeconfig to run the Kubernetes contract suite "
              "(no API server runs here)")


@dataclass(frozen=True)
class KubernetesCluster:
    """The real cluster the Kubernetes contract suite runs against (docs/kubernetes.md).

    Attributes:
        kubeconfig: PODQ_TEST_KUBECONFIG.
        namespace: PODQ_TEST_K8S_NAMESPACE, else "default"; it must exist.
        image: PODQ_TEST_K8S_IMAGE: podq's worker image with tests/scaler/handlers/work.py as
            K8S_HANDLER, pullable by the nodes.
        redis_url: PODQ_TEST_K8S_REDIS_URL: a Redis the worker pods reach at this URL.
        local_redis_url: how this test process reaches the same Redis: PODQ_TEST_K8S_REDIS_LOCAL_URL
            (e.g. through `kubectl port-forward`), else redis_url. It is never flushed.
    """

    kubeconfig: str
    namespace: str
    image: str
    redis_url: str
    local_redis_url: str
    handler: str = K8S_HANDLER


@pytest.fixture
def kubernetes_cluster() -> KubernetesCluster:
    """The cluster of PODQ_TEST_* (skips, naming the variables, where they are not set)."""
    kubeconfig = os.environ.get("PODQ_TEST_KUBECONFIG")
    if not kubeconfig:
        pytest.skip(NO_CLUSTER)
    missing = [v for v in ("PODQ_TEST_K8S_IMAGE", "PODQ_TEST_K8S_REDIS_URL") if not os.environ.get(v)]
    if missing:
        pytest.skip(f"set {' and '.join(missing)}: the worker pods need an image with podq and the contract "
                    f"handler at {K8S_HANDLER}, and a Redis they reach (docs/kubernetes.md)")
    redis_url = os.environ["PODQ_TEST_K8S_REDIS_URL"]
    return KubernetesCluster(kubeconfig=kubeconfig, namespace=os.environ.get("PODQ_TEST_K8S_NAMESPACE") or "default",
                             image=os.environ["PODQ_TEST_K8S_IMAGE"], redis_url=redis_url,
                             local_redis_url=os.environ.get("PODQ_TEST_K8S_REDIS_LOCAL_URL") or redis_url)


@pytest.fixture
def docker_backend(docker_engine: DockerEngine) -> DockerBackend:  # noqa: F811
    """A DockerBackend on the test engine, whose default image runs the host's Python."""
    return DockerBackend(docker_engine.options())


DockerBackends = Callable[..., DockerBackend]


@asynccontextmanager
async def docker_backends(engine: DockerEngine, endpoint: str,
                          then: Callable[[], object] = lambda: None) -> AsyncIterator[DockerBackends]:
    """Make DockerBackends on `engine` (`make(**DockerOptions changes)`) for the block.

    Args:
        engine: the session's Docker engine.
        endpoint: the endpoint under test.
        then: what else goes once the endpoint's containers are gone and before the backends
            close (the endpoint's volume, which its containers mount).

    Returns:
        A context whose value is the factory. On exit a fresh backend removes the endpoint's
        containers, `then()` runs, and every backend made is closed.
    """
    made: list[DockerBackend] = []

    def make(**changes: object) -> DockerBackend:
        made.append(DockerBackend(engine.options(**changes)))
        return made[-1]

    try:
        yield make
    finally:
        cleaner = make()
        for handle in await cleaner.list():
            if handle.endpoint_id == endpoint:
                await cleaner.stop(handle, 0)
        then()
        for backend in made:
            await backend.close()


@pytest.fixture
def swarm_backend(swarm_engine: SwarmNode) -> SwarmBackend:  # noqa: F811
    """A SwarmBackend on the test engine's one-node swarm, running the host's Python."""
    return SwarmBackend(swarm_engine.engine.options(), grace_s=SWARM_GRACE_S)


@pytest.fixture
def kubernetes_backend(kubernetes_cluster: KubernetesCluster) -> KubernetesBackend:
    """A KubernetesBackend on the cluster of PODQ_TEST_KUBECONFIG, running the test image."""
    options = KubernetesOptions(namespace=kubernetes_cluster.namespace, kubeconfig=kubernetes_cluster.kubeconfig,
                                image=kubernetes_cluster.image)
    return KubernetesBackend(options, grace_s=K8S_GRACE_S)
