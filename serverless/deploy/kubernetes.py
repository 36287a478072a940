"""`podq deploy kubernetes`: podq's control plane (gateway, scaler, Redis, RBAC) as Kubernetes objects.

Every builder is a pure function of `DeployOptions` that returns one object as a plain dict,
the shape `kubectl apply -f` reads, and `render()` lists them in the order apply needs
(namespace and RBAC before the pods that use them). Nothing here talks to a cluster: the
scaler's kubernetes backend (scaler/backends/kubernetes.py) starts the workers once this runs.

    gateway   Deployment (stateless, N replicas) + ClusterIP Service; probes on GET /healthz
    scaler    Deployment (1 replica by default: scaler/leader.py lets only one replica act, so
              more are standbys) + ServiceAccount, Role (pods, pods/log), ClusterRole (nodes)
    redis     StatefulSet (AOF on a PersistentVolumeClaim) + headless Service, or nothing
              when an external Redis is given (its URL reaches every component instead)

Settings reach the containers as the PODQ_* variables serverless/settings.py reads; a Redis URL
with a password and the admin key travel in Secrets, never as literals in these pod specs. When
the Redis URL is in a Secret the scaler also gets PODQ_K8S_REDIS_SECRET, so the worker pods it
starts read the URL from that Secret too.
"""

from __future__ import annotations

import copy
import re
import shlex
from urllib.parse import urlsplit

import msgspec
import yaml

from serverless.errors import ConfigError
from serverless.gateway.auth import ADMIN_KEY_ENV
from serverless.gateway.server import DEFAULT_PORT

DEFAULT_IMAGE = "podq-control-plane:latest"  # docker/Dockerfile.control-plane, docker/compose.yaml
DEFAULT_REDIS_IMAGE = "redis:7-alpine"  # the image docker/compose.yaml runs
REDIS_PORT = 6379
REDIS_URL_ENV = "PODQ_REDIS_URL"  # serverless/settings.py: Settings.redis_url
GATEWAY_URL_ENV = "PODQ_GATEWAY_URL"  # serverless/settings.py: Settings.gateway_url
LOG_LEVEL_ENV = "PODQ_LOG_LEVEL"  # serverless/logs.py
WORKER_REDIS_SECRET_ENV = "PODQ_K8S_REDIS_SECRET"  # scaler/backends/kubernetes_pods.py: KubernetesOptions
REDIS_SECRET_KEY = "redis-url"  # the key of the Secret that holds a Redis URL
API_KEY_SECRET_KEY = "api-key"  # the key of the Secret that holds the admin key
# namespaces every cluster has: podq must not own them (`kubectl delete -f` would delete them)
BUILTIN_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# requests / limits per container; edit the rendered YAML to size them for your load
RESOURCES = {
    "gateway": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
    "scaler": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
    "redis": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
}

# https://kubernetes.io/docs/concepts/overview/working-with-objects/names/ (RFC 1123 label)
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/ (the common forms)
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
# a Secret's name: an RFC 1123 subdomain
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")  # serverless/logs.py: PODQ_LOG_LEVEL


class InClusterRedis(msgspec.Struct, frozen=True, kw_only=True, tag="statefulset"):
    """Redis as a one-pod StatefulSet with append-only persistence on its own volume."""

    image: str = DEFAULT_REDIS_IMAGE
    storage: str = "1Gi"  # the PersistentVolumeClaim's request
    storage_class: str | None = None  # None: the cluster's default StorageClass


class ExternalRedis(msgspec.Struct, frozen=True, kw_only=True, tag="external"):
    """A Redis that runs elsewhere: its URL, or an existing Secret's `redis-url` key holding it."""

    url: str | None = None
    secret: str | None = None


class DeployOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What `podq deploy kubernetes` renders; the defaults are docker/k8s/podq.yaml."""

    namespace: str = "podq"
    create_namespace: bool = True  # render the Namespace object itself
    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    gateway_replicas: int = 2
    scaler_replicas: int = 1
    redis: InClusterRedis | ExternalRedis = InClusterRedis()
    api_key_secret: str = "podq-api-key"  # an existing Secret whose `api-key` is the admin key
    cluster_domain: str = "cluster.local"
    log_level: str = "INFO"
    # passed to the scaler for the worker pods it starts (scaler/cli.py's kubernetes flags)
    worker_image_pull_secrets: tuple[str, ...] = ()
    gpu_tolerations: tuple[str, ...] = ()  # KEY[=VALUE][:EFFECT], besides nvidia.com/gpu


def check(o: DeployOptions) -> None:
    """Refuse options that would render objects the API server rejects or pods that cannot start.

    Args:
        o: the options to check.

    Raises:
        ConfigError: naming the bad value and the fix.
    """
    if o.create_namespace and o.namespace in BUILTIN_NAMESPACES:
        raise ConfigError(f"namespace {o.namespace!r} always exists and podq must not own it "
                          "(kubectl delete -f would delete it): pass --no-create-namespace")
    if o.gateway_replicas < 1 or o.scaler_replicas < 1:
        raise ConfigError(f"replicas must be at least 1 (gateway {o.gateway_replicas}, scaler "
                          f"{o.scaler_replicas}): a control plane without them serves nothing")
    if o.image_pull_policy not in PULL_POLICIES:
        raise ConfigError(f"image pull policy {o.image_pull_policy!r} is not one of {', '.join(PULL_POLICIES)}")
    if o.log_level not in LOG_LEVELS:
        raise ConfigError(f"log level {o.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    _check_names(o)
    _check_redis(o.redis)
    _check_scaler_flags(o)


def _check_names(o: DeployOptions) -> None:
    if not _DNS_LABEL.fullmatch(o.namespace):
        raise ConfigError(f"namespace {o.namespace!r} is not a DNS-1123 label: use at most 63 "
                          "lowercase letters, digits and '-', starting and ending alphanumeric")
    if not _DNS_SUBDOMAIN.fullmatch(o.cluster_domain):
        raise ConfigError(f"cluster domain {o.cluster_domain!r} is not a DNS name: use the kubelet's "
                          "clusterDomain (cluster.local unless your cluster was set up otherwise)")
    secrets = [o.api_key_secret, *o.image_pull_secrets]
    if isinstance(o.redis, ExternalRedis) and o.redis.secret is not None:
        secrets.append(o.redis.secret)
    for name in secrets:
        if not _DNS_SUBDOMAIN.fullmatch(name):
            raise ConfigError(f"Secret name {name!r} is not a DNS-1123 subdomain: use lowercase "
                              "letters, digits, '-' and '.', starting and ending alphanumeric")


def _check_scaler_flags(o: DeployOptions) -> None:
    """What the scaler would refuse at start (its kubernetes backend's own option checks)."""
    from scaler.backends.base import BackendError
    from scaler.backends.kubernetes_pods import KubernetesOptions

    try:
        KubernetesOptions(namespace=o.namespace, image_pull_secrets=list(o.worker_image_pull_secrets),
                          gpu_tolerations=list(o.gpu_tolerations), redis_secret=worker_redis_secret(o))
    except BackendError as e:
        raise ConfigError(f"{e}: the scaler would refuse it at start") from e


def _check_redis(redis: InClusterRedis | ExternalRedis) -> None:
    match redis:
        case InClusterRedis(storage=storage) if not _QUANTITY.fullmatch(storage):
            raise ConfigError(f"Redis storage {storage!r} is not a Kubernetes quantity: write e.g. 1Gi or 500Mi")
        case ExternalRedis(url=None, secret=None) | ExternalRedis(url=str(), secret=str()):
            raise ConfigError("an external Redis needs exactly one of --redis-url and --redis-secret")
        case ExternalRedis(url=str(url)) if urlsplit(url).scheme not in ("redis", "rediss"):
            raise ConfigError(f"Redis URL {url!r} must start with redis:// or rediss:// "
                              "(e.g. redis://:PASSWORD@redis.example.com:6379/0)")


def labels(component: str) -> dict[str, str]:
    """The recommended labels every object carries; with `component` they select its pods."""
    return {"app.kubernetes.io/name": "podq", "app.kubernetes.io/component": component}


def _meta(o: DeployOptions, name: str, component: str) -> dict[str, object]:
    return {"name": name, "namespace": o.namespace, "labels": labels(component)}


def service_host(o: DeployOptions, service: str) -> str:
    """The cluster DNS name of `service` in the options' namespace, reachable from any pod."""
    return f"{service}.{o.namespace}.svc.{o.cluster_domain}"


def gateway_url(o: DeployOptions) -> str:
    """Where workers reach the gateway (RunPod-protocol workers' RUNPOD_WEBHOOK_* point here)."""
    return f"http://{service_host(o, 'podq-gateway')}:{DEFAULT_PORT}"


def redis_url_secret(o: DeployOptions) -> str | None:
    """The Secret whose `redis-url` key the components read the Redis URL from: the user's
    (--redis-secret), podq-redis for a URL with a password; None: the URL is a literal."""
    match o.redis:
        case ExternalRedis(secret=str(secret)):
            return secret
        case ExternalRedis() if _url_with_password(o):
            return "podq-redis"
    return None


def redis_url_env(o: DeployOptions) -> dict[str, object]:
    """PODQ_REDIS_URL as every component gets it: a literal, or a reference to a Secret."""
    secret = redis_url_secret(o)
    if secret is not None:
        return _secret_env(REDIS_URL_ENV, secret, REDIS_SECRET_KEY)
    match o.redis:
        case InClusterRedis():
            return {"name": REDIS_URL_ENV, "value": f"redis://{service_host(o, 'podq-redis')}:{REDIS_PORT}/0"}
        case ExternalRedis(url=url):
            return {"name": REDIS_URL_ENV, "value": url}


def worker_redis_secret(o: DeployOptions) -> str:
    """The scaler's PODQ_K8S_REDIS_SECRET (`name/key`): the Secret the components read the Redis
    URL from, so the worker pods read it from there too; '' when the URL is a literal anyway."""
    secret = redis_url_secret(o)
    return f"{secret}/{REDIS_SECRET_KEY}" if secret is not None else ""


def _url_with_password(o: DeployOptions) -> str | None:
    """An external Redis URL that carries a password: it travels in the podq-redis Secret."""
    url = o.redis.url if isinstance(o.redis, ExternalRedis) else None
    return url if url and urlsplit(url).password is not None else None


def _secret_env(name: str, secret: str, key: str) -> dict[str, object]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def namespace(o: DeployOptions) -> dict[str, object]:
    """The Namespace everything else lives in."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": o.namespace, "labels": {"app.kubernetes.io/name": "podq"}}}


def redis_secret(o: DeployOptions) -> dict[str, object]:
    """The Secret holding an external Redis URL that carries a password."""
    url = _url_with_password(o)
    assert url, "only for a --redis-url with a password"
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(o, "podq-redis", "redis"),
            "type": "Opaque", "stringData": {REDIS_SECRET_KEY: url}}


def _container(o: DeployOptions, component: str, args: list[str],
               env: list[dict[str, object]]) -> dict[str, object]:
    # the image runs as its own unprivileged user (docker/Dockerfile.control-plane: USER podq)
    return {"name": component, "image": o.image, "imagePullPolicy": o.image_pull_policy,
            "args": args, "env": [redis_url_env(o), {"name": LOG_LEVEL_ENV, "value": o.log_level}, *env],
            "resources": copy.deepcopy(RESOURCES[component]),
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}


def _pod_spec(o: DeployOptions, container: dict[str, object], **extra: object) -> dict[str, object]:
    # no service links: a Service named podq-gateway would put PODQ_GATEWAY_PORT=tcp://... and
    # other PODQ_* look-alikes into every pod's env, where podq reads its own settings
    spec: dict[str, object] = {"enableServiceLinks": False, **extra, "containers": [container]}
    if o.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in o.image_pull_secrets]
    return spec


def _deployment(o: DeployOptions, component: str, replicas: int,
                pod: dict[str, object]) -> dict[str, object]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(o, f"podq-{component}", component),
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels(component)},
                 "template": {"metadata": {"labels": labels(component)}, "spec": pod}},
    }


def _healthz(period_s: int, failures: int) -> dict[str, object]:
    return {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": period_s,
            "timeoutSeconds": 2, "failureThreshold": failures}


def gateway_deployment(o: DeployOptions) -> dict[str, object]:
    """The gateway: stateless replicas behind the Service; the admin key from a Secret."""
    args = ["podq", "gateway", "--host", "0.0.0.0", "--port", str(DEFAULT_PORT)]
    container = _container(o, "gateway", args, [_secret_env(ADMIN_KEY_ENV, o.api_key_secret, API_KEY_SECRET_KEY)])
    container["ports"] = [{"name": "http", "containerPort": DEFAULT_PORT, "protocol": "TCP"}]
    container["readinessProbe"] = _healthz(period_s=5, failures=2)
    container["livenessProbe"] = {**_healthz(period_s=10, failures=3), "initialDelaySeconds": 10}
    pod = _pod_spec(o, container, automountServiceAccountToken=False)
    return _deployment(o, "gateway", o.gateway_replicas, pod)


def gateway_service(o: DeployOptions) -> dict[str, object]:
    """The gateway's stable address inside the cluster (clients, workers, an Ingress)."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(o, "podq-gateway", "gateway"),
            "spec": {"type": "ClusterIP", "selector": labels("gateway"),
                     "ports": [{"name": "http", "port": DEFAULT_PORT, "targetPort": "http", "protocol": "TCP"}]}}


def scaler_args(o: DeployOptions) -> list[str]:
    """The scaler's command line: workers become pods in the control plane's namespace."""
    return ["podq", "scaler", "--backends", "kubernetes", "--namespace", o.namespace,
            *(a for name in o.worker_image_pull_secrets for a in ("--image-pull-secret", name)),
            *(a for taint in o.gpu_tolerations for a in ("--gpu-toleration", taint))]


def scaler_deployment(o: DeployOptions) -> dict[str, object]:
    """The scaler; extra replicas wait on the Redis leader lease (scaler/leader.py)."""
    env: list[dict[str, object]] = [{"name": GATEWAY_URL_ENV, "value": gateway_url(o)}]
    secret = worker_redis_secret(o)
    if secret:  # its worker pods take the URL from the same Secret, not as a literal
        env.append({"name": WORKER_REDIS_SECRET_ENV, "value": secret})
    container = _container(o, "scaler", scaler_args(o), env)
    pod = _pod_spec(o, container, serviceAccountName="podq-scaler", automountServiceAccountToken=True)
    return _deployment(o, "scaler", o.scaler_replicas, pod)


def scaler_service_account(o: DeployOptions) -> dict[str, object]:
    """The identity the scaler's kubernetes backend calls the API server as."""
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(o, "podq-scaler", "scaler")}


# the scaler's kubernetes backend: bare worker pods in its namespace, their logs for `podq logs`
ROLE_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete", "get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]
# GPU placement reads the nodes' nvidia.com/gpu.product labels (read-only, cluster-wide)
CLUSTER_ROLE_RULES = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]
RBAC_GROUP = "rbac.authorization.k8s.io"


def _rbac(kind: str, metadata: dict[str, object], **body: object) -> dict[str, object]:
    return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": kind, "metadata": metadata, **body}


def _grant(o: DeployOptions, kind: str, metadata: dict[str, object], role_kind: str) -> dict[str, object]:
    """A binding of the role named like itself to the scaler's ServiceAccount."""
    subjects = [{"kind": "ServiceAccount", "name": "podq-scaler", "namespace": o.namespace}]
    return _rbac(kind, metadata, subjects=subjects,
                 roleRef={"apiGroup": RBAC_GROUP, "kind": role_kind, "name": metadata["name"]})


def scaler_role(o: DeployOptions) -> dict[str, object]:
    """Worker pods in the namespace: create, delete, get, list, watch; and their logs."""
    return _rbac("Role", _meta(o, "podq-scaler", "scaler"), rules=copy.deepcopy(ROLE_RULES))


def scaler_role_binding(o: DeployOptions) -> dict[str, object]:
    """Grants the Role to the scaler's ServiceAccount."""
    return _grant(o, "RoleBinding", _meta(o, "podq-scaler", "scaler"), "Role")


def _cluster_meta(o: DeployOptions) -> dict[str, object]:
    # cluster-scoped names carry the namespace, so installations in two namespaces coexist
    return {"name": f"podq-scaler-nodes-{o.namespace}", "labels": labels("scaler")}


def scaler_cluster_role(o: DeployOptions) -> dict[str, object]:
    """Read-only access to nodes, for matching GPU models against their labels."""
    return _rbac("ClusterRole", _cluster_meta(o), rules=copy.deepcopy(CLUSTER_ROLE_RULES))


def scaler_cluster_role_binding(o: DeployOptions) -> dict[str, object]:
    """Grants the ClusterRole to the scaler's ServiceAccount."""
    return _grant(o, "ClusterRoleBinding", _cluster_meta(o), "ClusterRole")


def redis_service(o: DeployOptions) -> dict[str, object]:
    """The headless Service that names the Redis pod (the StatefulSet's serviceName)."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(o, "podq-redis", "redis"),
            "spec": {"clusterIP": "None", "selector": labels("redis"),
                     "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}]}}


def redis_statefulset(o: DeployOptions) -> dict[str, object]:
    """One Redis pod, append-only file on its PersistentVolumeClaim: jobs survive a restart."""
    assert isinstance(o.redis, InClusterRedis), "only without an external Redis"
    # no password: reachable inside the cluster only, as on compose's private network
    container = {
        "name": "redis", "image": o.redis.image,
        "args": ["redis-server", "--appendonly", "yes", "--protected-mode", "no"],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 10, "failureThreshold": 3},
        "resources": copy.deepcopy(RESOURCES["redis"]),
    }
    claim: dict[str, object] = {"accessModes": ["ReadWriteOnce"],
                                "resources": {"requests": {"storage": o.redis.storage}}}
    if o.redis.storage_class:
        claim["storageClassName"] = o.redis.storage_class
    pod = {"enableServiceLinks": False, "automountServiceAccountToken": False, "containers": [container]}
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(o, "podq-redis", "redis"),
        "spec": {"serviceName": "podq-redis", "replicas": 1, "selector": {"matchLabels": labels("redis")},
                 "template": {"metadata": {"labels": labels("redis")}, "spec": pod},
                 "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": labels("redis")},
                                           "spec": claim}]},
    }


def _redis_objects(o: DeployOptions) -> list[dict[str, object]]:
    match o.redis:
        case InClusterRedis():
            return [redis_service(o), redis_statefulset(o)]
        case _:
            return [redis_secret(o)] if _url_with_password(o) else []


def render(o: DeployOptions) -> list[dict[str, object]]:
    """Every object of the control plane, in the order `kubectl apply -f` should create them.

    Args:
        o: the options (checked first).

    Returns:
        Plain dicts, one per object: Namespace (unless not created), RBAC, Redis, gateway, scaler.

    Raises:
        ConfigError: the options are invalid (see `check`).
    """
    check(o)
    rbac = [scaler_service_account(o), scaler_role(o), scaler_role_binding(o),
            scaler_cluster_role(o), scaler_cluster_role_binding(o)]
    return [*([namespace(o)] if o.create_namespace else []), *rbac, *_redis_objects(o),
            gateway_service(o), gateway_deployment(o), scaler_deployment(o)]


def to_yaml(objects: list[dict[str, object]], argv: list[str]) -> str:
    """The multi-document YAML `podq deploy kubernetes ARGV` prints, with a header naming it."""
    header = (f"# Rendered by `{shlex.join(['podq', 'deploy', 'kubernetes', *argv])}`; "
              "apply with `kubectl apply -f` (docs/kubernetes.md).\n")
    return header + yaml.safe_dump_all(objects, sort_keys=False)
