"""The Kubernetes backend's decisions, as pure functions of plain dicts: the Pod manifest of a
worker, the GPU products a worker may be placed on, and what a listed Pod means for the scaler.

`scaler/backends/kubernetes.py` only sends these to the API server and reads Pods back, so all
that can be got wrong here is tested by tables and by the official schemas
(tests/backends/test_kubernetes_pods.py), without a cluster.

A worker is one bare Pod (the KubeRay / KubeSpawner model: podq's scaler is the controller and
picks which worker stops, which a Deployment's ReplicaSet would not let it do):

- `restartPolicy: Never`: podq's crash-loop backoff stays the only retry policy and every start
  is a fresh container, as RunPod images need. A kubelet restart in place would also hide a
  crash loop behind phase Running.
- podq's labels (`scaler/backends/base.py`) select the workers when a restarted scaler lists
  them. Label values are at most 63 characters of `[A-Za-z0-9._-]`, and endpoint and worker ids
  may be longer or hold ':', so a label carries `label_value(id)` and the exact ids travel in
  annotations of the same keys, which `handle_of` reads back.
- the name is `podq-<worker id>-<hash>`: a DNS-1123 label (it is the pod's hostname) of at most
  63 characters, the hash of the exact ids keeping cut or rewritten names apart.
- GPUs: `nvidia.com/gpu` limits (the device plugin's resource; requests default to limits), a
  toleration of the `nvidia.com/gpu` taint GPU node pools carry, and a required node affinity
  `In` on the GPU feature discovery label `nvidia.com/gpu.product`. Node affinity has no
  substring or "same model" operator, so the backend lists the nodes and `matching_products`
  keeps the exact label values `scaler.gpus.same_model` accepts.
- cpus / memory_mb become requests = limits (Guaranteed QoS for the container's CPU and memory).
- a podq worker's PODQ_REDIS_URL (it may hold the Redis password) is read from the Secret
  `redis_secret` names (PODQ_K8S_REDIS_SECRET) when one is set: a literal would show the
  password to anyone who can `kubectl get pod -o yaml`. A RunPod worker never gets the URL.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec

from scaler.backends.base import (
    LABEL_ENDPOINT,
    LABEL_MANAGED,
    LABEL_VERSION,
    LABEL_WORKER,
    BackendError,
    WorkerHandle,
    WorkerSpec,
)
from scaler.backends.docker import DEFAULT_PYTHON, LABEL_STARTED, worker_command, worker_env
from scaler.backends.swarm import timestamp_ms
from scaler.gpus import same_model

GPU_RESOURCE = "nvidia.com/gpu"  # NVIDIA's device plugin
GPU_TAINT = "nvidia.com/gpu"  # the taint GPU node pools carry (GKE, AKS, the gpu-operator docs)
DEFAULT_PRODUCT_LABEL = "nvidia.com/gpu.product"  # GPU feature discovery
DEFAULT_NAMESPACE = "default"
CONTAINER_NAME = "worker"
MAX_NAME = 63
REDIS_URL_ENV = "PODQ_REDIS_URL"  # what worker_env names it and worker/ reads
# Container waiting reasons that mean the pod was placed but its container cannot start.
STUCK_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError",
                           "CreateContainerError", "RunContainerError"})
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")  # a Secret's data key (IsConfigMapKey)


class KubernetesOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How the kubernetes backend makes Pods.

    Attributes:
        namespace: where the worker Pods live (the scaler needs RBAC on pods there).
        kubeconfig: a kubeconfig file; None: in-cluster service account, else $KUBECONFIG, else
            ~/.kube/config (lightkube's `KubeConfig.from_env`).
        image: the image of templates that name none; it must be pullable by the nodes.
        python: the interpreter of the default command `python -m worker <handler>`.
        image_pull_secrets: names of Secrets (in `namespace`) the kubelet pulls images with.
        gpu_tolerations: extra tolerations GPU workers get, kubectl's taint syntax:
            `key=value:Effect`, `key:Effect` (any value), `key=value` or `key` (any effect).
        product_label: the node label holding the GPU model.
        redis_secret: `secret-name/key`: a Secret (in `namespace`) whose key holds the Redis URL,
            which podq workers then read from it; '': the URL is a literal in their pod spec.
    """

    namespace: str = DEFAULT_NAMESPACE
    kubeconfig: str | None = None
    image: str = ""
    python: str = DEFAULT_PYTHON
    image_pull_secrets: list[str] = []
    gpu_tolerations: list[str] = []
    product_label: str = DEFAULT_PRODUCT_LABEL
    redis_secret: str = ""

    def __post_init__(self) -> None:
        # refuse a bad setting when it is given, not at the first worker's start
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", self.namespace):
            raise BackendError(f"namespace {self.namespace!r} is not a Kubernetes namespace name: give one of "
                               "lower-case letters, digits and '-', at most 63 (--namespace, PODQ_K8S_NAMESPACE)")
        for secret in self.image_pull_secrets:
            if not is_secret_name(secret):
                raise BackendError(f"image pull secret {secret!r} is not a Secret name (a DNS-1123 subdomain)")
        for text in self.gpu_tolerations:
            toleration(text)
        if not is_label_key(self.product_label):
            raise BackendError(f"GPU product label {self.product_label!r} is not a label key ([prefix/]name)")
        if self.redis_secret:
            secret_key_ref(self.redis_secret)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KubernetesOptions:
        """Options from PODQ_K8S_* variables in `environ` (os.environ when None); unset ones keep
        their defaults, lists are comma-separated."""
        env = os.environ if environ is None else environ
        return cls(
            namespace=env.get("PODQ_K8S_NAMESPACE") or DEFAULT_NAMESPACE,
            image=env.get("PODQ_K8S_IMAGE", ""),
            python=env.get("PODQ_K8S_PYTHON") or DEFAULT_PYTHON,
            image_pull_secrets=_csv(env.get("PODQ_K8S_IMAGE_PULL_SECRETS", "")),
            gpu_tolerations=_csv(env.get("PODQ_K8S_GPU_TOLERATIONS", "")),
            product_label=env.get("PODQ_K8S_PRODUCT_LABEL") or DEFAULT_PRODUCT_LABEL,
            redis_secret=env.get("PODQ_K8S_REDIS_SECRET", ""),
        )


class PodState(msgspec.Struct, frozen=True, kw_only=True):
    """What a listed Pod means for the scaler.

    Attributes:
        running: the pod exists and its worker may run or start (False: it ended, or is being
            deleted).
        pending: not placed on a node yet, and the scheduler's reason; '' once placed.
        problem: why a placed pod's container cannot start, or why it ended ('' for none).
        started_at: ms since the epoch: when the pod was placed on its node, else created.
    """

    running: bool = True
    pending: str = ""
    problem: str = ""
    started_at: int = 0


def is_label_key(key: str) -> bool:
    """`[prefix/]name`: a DNS-1123 subdomain prefix, a name of at most 63 characters."""
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= 253 and _DNS_SUBDOMAIN.match(prefix)):
        return False
    return bool(_KEY_NAME.match(name))


def is_secret_name(name: str) -> bool:
    """A Secret's name is a DNS-1123 subdomain of at most 253 characters."""
    return len(name) <= 253 and bool(_DNS_SUBDOMAIN.fullmatch(name))


def secret_key_ref(text: str) -> dict[str, str]:
    """`secret-name/key` as a secretKeyRef's `{name, key}` (pure).

    Raises:
        BackendError: the text is not a Secret name, '/' and a data key; the message shows the form.
    """
    name, slash, key = text.partition("/")
    # the API server refuses the keys '.' and '..' and those starting with '..' (IsConfigMapKey)
    if not (slash and is_secret_name(name) and _SECRET_KEY.fullmatch(key) and not key.startswith("..")
            and key != "."):
        raise BackendError(f"Redis URL Secret {text!r} is not NAME/KEY (a Secret's name, '/', a key of "
                           "[-._a-zA-Z0-9]): set PODQ_K8S_REDIS_SECRET to the Secret in the workers' "
                           "namespace and its key that holds the Redis URL, e.g. podq-redis/redis-url")
    return {"name": name, "key": key}


def redis_url_in_spec(spec: WorkerSpec, options: KubernetesOptions) -> bool:
    """Whether the worker's Pod carries the Redis URL as a literal (pure): a podq worker's does
    unless `redis_secret` names the Secret it reads it from; a RunPod worker's never has it."""
    return spec.protocol != "runpod" and not options.redis_secret


def password_in_spec(spec: WorkerSpec, options: KubernetesOptions) -> bool:
    """Whether the worker's Pod shows a Redis password: the URL is a literal there and holds one
    (a password-less in-cluster URL hides nothing, so nothing is worth a warning)."""
    return redis_url_in_spec(spec, options) and urlsplit(spec.redis_url).password is not None


def _hashed(safe: str, key: str, limit: int) -> str:
    """`safe`, cut to leave room for `-<hash of key>` within `limit`, then that hash."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    head = re.sub(r"[^A-Za-z0-9]+$", "", safe[:limit - len(digest) - 1])
    return f"{head}-{digest}" if head else digest


def label_value(text: str) -> str:
    """`text` as a label value (at most 63 of [A-Za-z0-9._-], alphanumeric at both ends): as it
    is when it already is one, else rewritten and ending in a hash of `text` (pure)."""
    if _LABEL_VALUE.match(text):
        return text
    return _hashed(re.sub(r"^[^A-Za-z0-9]+", "", re.sub(r"[^A-Za-z0-9._-]+", "-", text)), text, MAX_NAME)


def pod_name(spec: WorkerSpec) -> str:
    """`podq-<worker id>-<hash of the endpoint and worker ids>`, lower-case, a DNS-1123 label of
    at most 63 characters (pure)."""
    safe = re.sub(r"[^a-z0-9]+", "-", f"podq-{spec.worker_id}".lower()).strip("-")
    return _hashed(safe, f"{spec.endpoint_id}\0{spec.worker_id}", MAX_NAME)


def cpu_quantity(cpus: float) -> str:
    """CPU cores as a Kubernetes quantity: whole cores "2", else millicores "500m" (pure)."""
    millis = round(cpus * 1000)
    if cpus < 0 or (cpus and not millis):
        raise BackendError(f"cpus {cpus!r}: Kubernetes needs a positive number of at least 0.001 cores")
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def memory_quantity(memory_mb: int) -> str:
    """MiB as a Kubernetes quantity ("2048Mi") (pure)."""
    if memory_mb < 0:
        raise BackendError(f"memory_mb {memory_mb!r} is negative")
    return f"{memory_mb}Mi"


def container_resources(spec: WorkerSpec) -> dict[str, Any]:
    """The container's requests and limits: GPUs as limits (requests follow), cpu and memory as
    requests = limits; {} for a worker that asks for none (pure)."""
    limits: dict[str, str] = {}
    if spec.cpus:
        limits["cpu"] = cpu_quantity(spec.cpus)
    if spec.memory_mb:
        limits["memory"] = memory_quantity(spec.memory_mb)
    resources: dict[str, Any] = {"requests": dict(limits)} if limits else {}
    if spec.gpu_count:
        limits[GPU_RESOURCE] = str(spec.gpu_count)
    if limits:
        resources["limits"] = limits
    return resources


def toleration(text: str) -> dict[str, str]:
    """One toleration from kubectl's taint syntax, `key[=value][:Effect]` (pure).

    Raises:
        BackendError: the text is not of that form; the message shows the forms.
    """
    rest, colon, effect = text.rpartition(":") if ":" in text else (text, "", "")
    key, equals, value = rest.partition("=")
    if not is_label_key(key) or (colon and effect not in _EFFECTS) or (equals and not _LABEL_VALUE.match(value)):
        raise BackendError(f"GPU toleration {text!r} is not key=value:Effect, key:Effect, key=value or key "
                           f"(Effect: {', '.join(_EFFECTS)}), e.g. nvidia.com/gpu=present:NoSchedule")
    made = {"key": key, "operator": "Equal", "value": value} if equals else {"key": key, "operator": "Exists"}
    return {**made, "effect": effect} if effect else made


def gpu_tolerations(spec: WorkerSpec, options: KubernetesOptions) -> list[dict[str, str]]:
    """A GPU worker tolerates the `nvidia.com/gpu` taint, and the configured ones; a CPU worker
    none, so it never takes a GPU node's place (pure)."""
    if not spec.gpu_count:
        return []
    return [{"key": GPU_TAINT, "operator": "Exists", "effect": "NoSchedule"},
            *(toleration(t) for t in options.gpu_tolerations)]


def node_products(nodes: list[Mapping[str, Any]], label: str) -> list[str]:
    """The distinct values of the product label on the nodes, sorted (pure)."""
    return sorted({((n.get("metadata") or {}).get("labels") or {}).get(label, "") for n in nodes} - {""})


def matching_products(products: list[str], gpu_names: list[str], label: str) -> list[str]:
    """The product label values of the models the worker accepts (`same_model`, pure).

    Args:
        products: the values the cluster's nodes carry (`node_products`).
        gpu_names: the models the worker accepts (WorkerSpec.gpu_names).
        label: the label's key, for the message.

    Raises:
        BackendError: none matches; the message names what the cluster has and the fix.
    """
    found = [p for p in products if any(same_model(w, p) for w in gpu_names)]
    if found:
        return found
    wanted = ", ".join(gpu_names)
    if not products:
        raise BackendError(
            f"no node of the cluster has the label {label}, so no node can be chosen for a GPU of {wanted}: "
            "install NVIDIA GPU feature discovery (the gpu-operator installs it) so GPU nodes carry their "
            "model, or set PODQ_K8S_PRODUCT_LABEL to the label your nodes use (see docs/kubernetes.md)")
    raise BackendError(
        f"no node of the cluster has a GPU of {wanted}: its nodes' {label} labels are {', '.join(products)}; "
        "change the endpoint's gpu_ids to one of those models (or ANY), or add nodes with that GPU")


def product_affinity(products: list[str], label: str) -> dict[str, Any]:
    """A required node affinity: the node's product label is one of `products` (pure)."""
    term = {"matchExpressions": [{"key": label, "operator": "In", "values": sorted(products)}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def pod_labels(spec: WorkerSpec) -> dict[str, str]:
    """The endpoint's labels, then podq's (pure).

    Raises:
        BackendError: an endpoint label that Kubernetes would refuse, named with the fix.
    """
    for key, value in spec.labels.items():
        if not is_label_key(key) or not _LABEL_VALUE.match(value):
            raise BackendError(f"endpoint label {key}={value!r} is not a valid Kubernetes label (key: "
                               "[prefix/]name of at most 63 characters; value: at most 63 of [A-Za-z0-9._-], "
                               "alphanumeric at both ends): change the endpoint's labels")
    return {**spec.labels, LABEL_MANAGED: "1", LABEL_ENDPOINT: label_value(spec.endpoint_id),
            LABEL_WORKER: label_value(spec.worker_id), LABEL_VERSION: str(spec.version)}


def container_env(spec: WorkerSpec, options: KubernetesOptions) -> list[dict[str, Any]]:
    """The container's env (pure). A RunPod worker gets exactly its spec's env (it talks to the
    gateway, never to Redis); a podq worker `worker_env`, whose PODQ_REDIS_URL is a reference to
    the Secret `redis_secret` names when set, so neither the URL nor its password is in the pod."""
    if spec.protocol == "runpod":
        return [{"name": k, "value": v} for k, v in spec.env.items()]
    ref = secret_key_ref(options.redis_secret) if options.redis_secret else None
    return [{"name": k, "valueFrom": {"secretKeyRef": ref}} if ref and k == REDIS_URL_ENV
            else {"name": k, "value": v} for k, v in worker_env(spec).items()]


def worker_container(spec: WorkerSpec, options: KubernetesOptions) -> dict[str, Any]:
    """The worker's one container (pure). The command is the docker backend's choice: the
    spec's command, else `python -m worker <handler>`, else the image's own; it goes in `args`,
    which replaces the image's CMD and keeps its ENTRYPOINT, as the Engine API's Cmd does. The
    env is `container_env`'s."""
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image or options.image,
        "env": container_env(spec, options),
    }
    command = worker_command(spec, options.python)
    if command:
        container["args"] = command
    resources = container_resources(spec)
    if resources:
        container["resources"] = resources
    return container


def pod_manifest(spec: WorkerSpec, options: KubernetesOptions, products: list[str] | None,
                 created_at: int, grace_s: float) -> dict[str, Any]:
    """The Pod of one worker (pure).

    Args:
        spec: the worker.
        options: namespace, image, python, pull secrets, tolerations, product label, Redis Secret.
        products: the product label values it may be placed on (`matching_products`); None: any node.
        created_at: ms since the epoch, kept in an annotation.
        grace_s: terminationGracePeriodSeconds, for deletions that name none (a node drain,
            `kubectl delete`); the backend's own stops pass theirs.

    Returns:
        The manifest, as the API takes it.
    """
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": max(1, math.ceil(grace_s)),
        "enableServiceLinks": False,  # no *_SERVICE_HOST variables: the env is the spec's
        "containers": [worker_container(spec, options)],
    }
    if options.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in options.image_pull_secrets]
    tolerations = gpu_tolerations(spec, options)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if products is not None:
        pod_spec["affinity"] = product_affinity(products, options.product_label)
    annotations = {LABEL_ENDPOINT: spec.endpoint_id, LABEL_WORKER: spec.worker_id, LABEL_STARTED: str(created_at)}
    metadata = {"name": pod_name(spec), "namespace": options.namespace, "labels": pod_labels(spec),
                "annotations": annotations}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def pod_state(pod: Mapping[str, Any]) -> PodState:
    """What a Pod's phase and conditions mean for the scaler (pure):

    - being deleted (deletionTimestamp): not running (it is going away);
    - Succeeded or Failed: not running; `problem` says how it ended (OOMKilled, Evicted, ...);
    - Pending and not on a node: `pending` is the scheduler's message ("0/3 nodes are available:
      3 Insufficient nvidia.com/gpu."), or that the scheduler has not looked at it yet;
    - Pending on a node, Running, Unknown: running, placed; a container that cannot start
      (ImagePullBackOff, ...) or a node that stopped reporting (Unknown) sets `problem`.
    """
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    annotations = meta.get("annotations") or {}
    created = int(annotations.get(LABEL_STARTED) or 0) or timestamp_ms(meta.get("creationTimestamp"))
    placed_at = timestamp_ms(status.get("startTime")) or created
    phase = status.get("phase") or "Pending"
    if meta.get("deletionTimestamp"):
        return PodState(running=False, problem=f"pod is being deleted (since {meta['deletionTimestamp']})",
                        started_at=placed_at)
    if phase in ("Succeeded", "Failed"):
        return PodState(running=False, problem=_how_it_ended(status, phase), started_at=placed_at)
    scheduled = _condition(status, "PodScheduled")
    if phase == "Pending" and not (pod.get("spec") or {}).get("nodeName") and scheduled.get("status") != "True":
        reason = (scheduled.get("message") or scheduled.get("reason")) if scheduled.get("status") == "False" else ""
        return PodState(pending=reason or "waiting for the Kubernetes scheduler", started_at=created)
    if phase == "Unknown":
        return PodState(problem="pod phase Unknown: its node stopped reporting", started_at=placed_at)
    return PodState(problem=_stuck(status), started_at=placed_at)


def handle_of(pod: Mapping[str, Any]) -> WorkerHandle:
    """A WorkerHandle from one listed Pod: exact ids from its annotations, state from
    `pod_state` (pure)."""
    meta = pod.get("metadata") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    state = pod_state(pod)
    return WorkerHandle(
        worker_id=annotations.get(LABEL_WORKER) or labels.get(LABEL_WORKER, ""),
        endpoint_id=annotations.get(LABEL_ENDPOINT) or labels.get(LABEL_ENDPOINT, ""),
        version=int(labels.get(LABEL_VERSION) or 0), ref=meta.get("name", ""),
        running=state.running, started_at=state.started_at, pending=state.pending, problem=state.problem,
    )


def selector(endpoint_id: str | None = None) -> dict[str, str]:
    """The label selector of podq's worker Pods, or of one endpoint's (pure)."""
    labels = {LABEL_MANAGED: "1"}
    if endpoint_id is not None:
        labels[LABEL_ENDPOINT] = label_value(endpoint_id)
    return labels


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def _container_states(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [s.get("state") or {} for s in status.get("containerStatuses") or []]


def _stuck(status: Mapping[str, Any]) -> str:
    """Why a placed pod's container cannot start, or ''."""
    for state in _container_states(status):
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            return f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
    return ""


def _how_it_ended(status: Mapping[str, Any], phase: str) -> str:
    """The pod's own reason ("Evicted: The node was low on resource: memory."), else its
    container's ("OOMKilled (exit code 137)"), else the phase."""
    if status.get("reason"):
        return f"{status['reason']}: {status['message']}" if status.get("message") else status["reason"]
    for state in _container_states(status):
        ended = state.get("terminated") or {}
        if ended:
            return f"{ended.get('reason') or phase} (exit code {ended.get('exitCode', '?')})"
    return phase


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
