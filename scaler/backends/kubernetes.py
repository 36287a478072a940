"""Workers as bare Pods on a Kubernetes cluster, through lightkube's AsyncClient.

This module only talks to the API server; what a worker's Pod holds and what a listed Pod means
are pure functions in `scaler/backends/kubernetes_pods.py` (their docstring says why one bare
Pod per worker, and how GPUs are asked for).

- `start`: for a GPU worker of given models, LIST the nodes that carry the product label and
  keep the values `same_model` accepts (none: a `BackendError` naming what the cluster has);
  then CREATE the Pod. The scheduler places it; until then `list()` shows it `pending` with the
  scheduler's message.
- `stop(handle, grace_s)`: DELETE with `gracePeriodSeconds` = grace_s rounded up, at least 1
  (0 is a force deletion: the object goes at once while the container may still run on its
  node). The kubelet sends SIGTERM, the worker drains, SIGKILL follows after the grace period.
  Then wait until the Pod is gone, as the docker backend's stop returns once the container has
  exited; past grace_s plus a margin a `BackendError` says the pod is still terminating (a node
  that is down keeps it so), and the scaler tries again on its next tick.
- `list()`: LIST the namespace's Pods by podq's labels. lightkube sends no resourceVersion, so
  this is a consistent read and a Pod created a moment ago is always listed (no cache lag, no
  "expectations" as KubeRay needs). A restarted scaler adopts what it finds.
- `logs()`: each of an endpoint's Pods' log (pods/log), the docker backend's shape.
- without PODQ_K8S_REDIS_SECRET a podq worker's Pod carries the Redis URL as a literal; the
  first start of a backend whose URL holds a password logs one warning that says so and the fix.

No API server can run where podq's suite runs, so this shell is exercised by the contract suite
against a real cluster only (PODQ_TEST_KUBECONFIG, docs/kubernetes.md).

Every API or transport error becomes a `BackendError` in one place, `_api_errors`, with the
message of `explain`, which names the fix.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx2
import yaml
from lightkube import ApiError, AsyncClient, ConfigError, KubeConfig
from lightkube.resources.core_v1 import Node, Pod

from scaler.backends.base import BackendError, WorkerHandle, WorkerSpec, refuse_volume_and_ports
from scaler.backends.docker import log_time
from scaler.backends.kubernetes_pods import (
    KubernetesOptions,
    handle_of,
    matching_products,
    node_products,
    pod_manifest,
    pod_state,
    password_in_spec,
    selector,
)
from serverless.store import now_ms

log = logging.getLogger("podq.scaler")

DEFAULT_GRACE_S = 25.0  # Settings.grace_period_s's default
# how long stop() waits, past the grace period, for the kubelet to confirm the pod is gone
STOP_MARGIN_S = 10.0
STOP_POLL_S = 0.5
FIELD_MANAGER = "podq-scaler"
RBAC = ("pods: create, get, list, watch, delete and pods/log: get in the namespace; nodes: get, list "
        "(a ClusterRole)")
LITERAL_REDIS_URL = (
    "worker pods in namespace %s get PODQ_REDIS_URL as a literal in their spec: anyone who can read pods "
    "(kubectl get pod -o yaml) reads the Redis URL and any password in it. Put the URL in a Secret there "
    "(kubectl -n %s create secret generic podq-redis-url --from-literal=redis-url=URL) and set "
    "PODQ_K8S_REDIS_SECRET=podq-redis-url/redis-url for the scaler (docs/kubernetes.md)")


def explain(code: int, reason: str, message: str, doing: str, namespace: str) -> str:
    """What the API server's refusal means, and the fix, as one message (pure).

    Args:
        code: the HTTP status.
        reason: the Status' reason (Forbidden, NotFound, AlreadyExists, Invalid, ...).
        message: the Status' message.
        doing: what the backend was doing ("creating worker w-1").
        namespace: the backend's namespace.
    """
    if code == 401:
        return (f"{doing}: the Kubernetes API refused the credentials ({message}): renew the kubeconfig's "
                "token or certificate (or the service account's token)")
    if code == 403:
        return (f"{doing}: forbidden ({message}): give the scaler's service account the RBAC of "
                f"docs/kubernetes.md: {RBAC}")
    if code == 404 and "namespace" in message:
        return (f"{doing}: {message}: create the namespace (kubectl create namespace {namespace}) or "
                "point the scaler at another (--namespace, PODQ_K8S_NAMESPACE)")
    if code == 409:
        return (f"{doing}: {message}: delete the old pod (kubectl -n {namespace} delete pod <name>) or use "
                "a new worker id")
    if code == 422:
        return f"{doing}: the API server refused the pod ({message}): fix the endpoint or template field it names"
    return f"{doing}: the Kubernetes API answered {code} {reason}: {message}".rstrip(": ")


@contextmanager
def _api_errors(doing: str, server: str, namespace: str) -> Iterator[None]:
    """The one place API and transport errors become BackendError."""
    try:
        yield
    except ApiError as e:
        status = e.status
        code = int(status.code or e.response.status_code)
        raise BackendError(explain(code, status.reason or "", status.message or "", doing, namespace)) from e
    except httpx2.HTTPStatusError as e:  # an answer that is not a Kubernetes Status (a proxy's)
        raise BackendError(f"{doing}: {server} answered {e.response.status_code}, not as a Kubernetes API "
                           "server: check the kubeconfig's server address") from e
    except (httpx2.HTTPError, OSError) as e:
        raise BackendError(f"{doing}: Kubernetes API server at {server} not reachable ({e!r}): check the "
                           "kubeconfig's server address and that the cluster is up") from e


def load_config(kubeconfig: str | None) -> KubeConfig:
    """The kubeconfig file, else lightkube's order: in-cluster service account, $KUBECONFIG,
    ~/.kube/config.

    Raises:
        BackendError: none can be read; the message says how to give one.
    """
    try:
        return KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    except (ConfigError, OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as e:
        where = kubeconfig or "in-cluster, $KUBECONFIG or ~/.kube/config"
        raise BackendError(f"no usable Kubernetes configuration ({where}): {e}: run the scaler in the "
                           "cluster under a service account, or set KUBECONFIG to a kubeconfig file") from e


class KubernetesBackend:
    """Workers as bare Pods in one namespace of a Kubernetes cluster, placed by its scheduler.

    Args:
        options: namespace, kubeconfig, image, pull secrets, tolerations, product label; by
            default read from PODQ_K8S_* (`KubernetesOptions.from_env`).
        grace_s: the pods' terminationGracePeriodSeconds, for deletions that are not the
            scaler's (a node drain); the scaler's own stops pass their grace.
    """

    name = "kubernetes"
    places_gpus = True  # the cluster's scheduler picks nodes, its device plugin the GPUs

    def __init__(self, options: KubernetesOptions | None = None, grace_s: float = DEFAULT_GRACE_S) -> None:
        self.options = options or KubernetesOptions.from_env()
        self.grace_s = grace_s
        self._kube: AsyncClient | None = None
        self.server = ""
        self._told: dict[str, str] = {}  # pod name -> the problem last logged for it
        self._warned_literal_url = False  # LITERAL_REDIS_URL is logged once per backend

    def constructor_args(self) -> dict[str, Any]:
        """Keyword arguments that build an equal backend (`type(b)(**b.constructor_args())`)."""
        return {"options": self.options, "grace_s": self.grace_s}

    def _client(self) -> AsyncClient:
        if self._kube is None:  # on first use, so a scaler without the backend reads no kubeconfig
            config = load_config(self.options.kubeconfig)
            try:
                self._kube = AsyncClient(config=config, namespace=self.options.namespace,
                                         field_manager=FIELD_MANAGER)
            except ConfigError as e:
                raise BackendError(f"the kubeconfig has no usable context: {e}: set its current-context") from e
            self.server = self._kube.config.cluster.server
        return self._kube

    def _errors(self, doing: str) -> AbstractContextManager[None]:
        return _api_errors(doing, self.server, self.options.namespace)

    async def start(self, spec: WorkerSpec) -> WorkerHandle:
        """Create the worker's Pod; the scheduler places it (`list()` shows the outcome).

        Args:
            spec: the worker; `gpu_count` and `gpu_names` say which GPUs it needs.

        Returns:
            Its handle; `ref` is the pod's name.
        """
        refuse_volume_and_ports(spec, self.name)
        if not (spec.image or self.options.image):
            raise BackendError(f"worker {spec.worker_id}: no image: set the template's image_name or "
                               "PODQ_K8S_IMAGE to a worker image the cluster's nodes can pull (docs/kubernetes.md)")
        products = None
        if spec.gpu_count and spec.gpu_names is not None:
            products = matching_products(await self._products(spec.worker_id), spec.gpu_names,
                                         self.options.product_label)
        created = now_ms()
        manifest = pod_manifest(spec, self.options, products, created, self.grace_s)
        self._warn_literal_url(spec)
        client = self._client()
        with self._errors(f"creating worker {spec.worker_id}"):
            await client.create(Pod.from_dict(manifest))
        return WorkerHandle(worker_id=spec.worker_id, endpoint_id=spec.endpoint_id, version=spec.version,
                            ref=manifest["metadata"]["name"], started_at=created)

    def _warn_literal_url(self, spec: WorkerSpec) -> None:
        """Log LITERAL_REDIS_URL at the first pod that shows a password, not at every start."""
        if not self._warned_literal_url and password_in_spec(spec, self.options):
            self._warned_literal_url = True
            log.warning(LITERAL_REDIS_URL, self.options.namespace, self.options.namespace)

    async def _products(self, worker_id: str) -> list[str]:
        label = self.options.product_label
        client = self._client()
        with self._errors(f"listing the cluster's GPU nodes for worker {worker_id}"):
            nodes = [n.to_dict() async for n in client.list(Node, labels={label: None})]
        return node_products(nodes, label)

    async def stop(self, handle: WorkerHandle, grace_s: float) -> None:
        """Delete the worker's Pod (SIGTERM, the worker drains, SIGKILL after `grace_s`) and wait
        until it is gone.

        Args:
            handle: the worker; one already gone is not an error.
            grace_s: the deletion's gracePeriodSeconds (rounded up, at least 1).

        Raises:
            BackendError: the pod is still there `grace_s` + STOP_MARGIN_S after the delete.
        """
        client = self._client()
        with self._errors(f"stopping worker {handle.worker_id}"):
            try:
                await client.delete(Pod, handle.ref, grace_period=max(1, math.ceil(grace_s)))
            except ApiError as e:
                if e.status.code != 404:
                    raise
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, grace_s) + STOP_MARGIN_S
        while not await self._gone(handle):
            if loop.time() > deadline:
                raise BackendError(
                    f"stopping worker {handle.worker_id}: pod {handle.ref} still terminating "
                    f"{math.ceil(grace_s + STOP_MARGIN_S)} s after its deletion (its node's kubelet has not "
                    f"confirmed; a node that is down keeps it so): kubectl -n {self.options.namespace} "
                    f"describe pod {handle.ref}")
            await asyncio.sleep(STOP_POLL_S)

    async def _gone(self, handle: WorkerHandle) -> bool:
        client = self._client()
        with self._errors(f"waiting for worker {handle.worker_id} to stop"):
            try:
                await client.get(Pod, handle.ref)
            except ApiError as e:
                if e.status.code == 404:
                    return True
                raise
        return False

    async def list(self) -> list[WorkerHandle]:
        """Every podq Pod in the namespace, ended ones with running=False."""
        pods = await self._pods(None)
        self._tell(pods)
        return [handle_of(pod) for pod in pods]

    def _tell(self, pods: list[Mapping[str, Any]]) -> None:
        """Log once why a pod cannot start or why it ended (WorkerHandle has no field for it)."""
        told: dict[str, str] = {}
        for pod in pods:
            name, problem = pod["metadata"]["name"], pod_state(pod).problem
            if problem and self._told.get(name) != problem:
                log.warning("worker pod %s/%s: %s", self.options.namespace, name, problem)
            if problem:
                told[name] = problem
        self._told = told

    async def _pods(self, endpoint_id: str | None) -> list[dict[str, Any]]:
        client = self._client()
        with self._errors("listing workers"):
            return [p.to_dict() async for p in client.list(Pod, labels=selector(endpoint_id))]

    async def logs(self, endpoint_id: str, tail: int = 100) -> list[tuple[str, str]]:
        """The last `tail` log lines of each of the endpoint's Pods, oldest first.

        Args:
            endpoint_id: the endpoint.
            tail: lines per worker.

        Returns:
            (worker_id, line) pairs; each line starts with the kubelet's RFC 3339 timestamp. A pod
            whose container has not started has one line instead, saying why.
        """
        lines: list[tuple[str, str]] = []
        for pod in await self._pods(endpoint_id):
            handle = handle_of(pod)
            if handle.endpoint_id == endpoint_id:  # the label is the id's label_value: check the exact id
                lines += await self._pod_log(pod, handle.worker_id, tail)
        return sorted(lines, key=lambda pair: log_time(pair[1]))

    async def _pod_log(self, pod: Mapping[str, Any], worker: str, tail: int) -> list[tuple[str, str]]:
        name = pod["metadata"]["name"]
        client = self._client()
        with self._errors(f"reading logs of worker {worker}"):
            try:
                text = [line async for line in client.log(name, tail_lines=max(0, tail), timestamps=True,
                                                          newlines=False)]
            except ApiError as e:
                if e.status.code != 400:  # 400: the container is waiting to start
                    raise
                state = pod_state(pod)
                why = state.pending or state.problem or e.status.message
                return [(worker, f"{pod['metadata']['creationTimestamp']} (podq: no log yet: {why})")]
        return [(worker, line) for line in text if line]

    async def close(self) -> None:
        """Close the connection to the API server; pods keep running."""
        if self._kube is not None:
            await self._kube.close()
            self._kube = None
