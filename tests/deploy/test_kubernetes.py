"""`podq deploy kubernetes`: the builders as tables, every object through the official schemas
and podq's own API-server checks (tests/kubernetes_checks.py), the committed default render,
and the CLI through a real `podq` process. No API server runs here (docs/kubernetes.md)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from scaler.backends.base import WorkerSpec
from scaler.backends.kubernetes_pods import KubernetesOptions, pod_manifest
from serverless.deploy import cli
from serverless.deploy.kubernetes import (
    DEFAULT_IMAGE,
    DEFAULT_REDIS_IMAGE,
    ExternalRedis,
    InClusterRedis,
    DeployOptions,
    render,
    to_yaml,
)
from serverless.errors import ConfigError
from serverless.gateway import GatewayOptions, start_gateway
from serverless.settings import Settings, load_settings
from tests.kubernetes_checks import validate

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docker" / "k8s" / "podq.yaml"
REGENERATE = ".venv/bin/podq deploy kubernetes > docker/k8s/podq.yaml"
PODQ = Path(sys.executable).with_name("podq")  # the venv's console script
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
DEFAULT = DeployOptions()
FULL_WORKERS = DeployOptions(worker_image_pull_secrets=("a",), gpu_tolerations=("k=v:NoSchedule",))


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def containers(objects: list[dict]) -> dict[str, dict]:
    """Every container of every workload, by name (gateway, scaler, redis)."""
    return {c["name"]: c for o in objects if o["kind"] in ("Deployment", "StatefulSet")
            for c in o["spec"]["template"]["spec"]["containers"]}


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


def podq(*args: str) -> subprocess.CompletedProcess[str]:
    assert PODQ.exists(), f"{PODQ} is missing: install podq into the venv (.venv/bin/pip install -e .)"
    return subprocess.run([str(PODQ), *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


# ---- every object passes the schemas of 1.30 and 1.37 (strict) and the API server's rules ----

OPTION_SETS = {
    "defaults": DEFAULT,
    "namespace x, 5 gateways, 2 scalers": DeployOptions(namespace="x", gateway_replicas=5, scaler_replicas=2),
    "external Redis with a password": DeployOptions(redis=ExternalRedis(url="rediss://:pw@r.example.com:6380/1")),
    "external Redis from a Secret": DeployOptions(redis=ExternalRedis(secret="my-redis")),
    "storage class, pull secrets, own image": DeployOptions(
        redis=InClusterRedis(storage="20Gi", storage_class="fast-ssd"), image_pull_secrets=("regcred", "other"),
        image="registry.example.com/podq-control-plane:0.1.0", image_pull_policy="Always"),
    "existing namespace": DeployOptions(namespace="default", create_namespace=False),
    "worker pull secrets and GPU taints": FULL_WORKERS,
}


@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_every_object_is_valid_kubernetes(options: DeployOptions) -> None:
    objects = render(options)
    assert objects
    for obj in objects:
        validate(obj)


# ---- builders, as tables ----

@pytest.mark.parametrize("gateways,scalers", [(2, 1), (1, 1), (7, 3)])
def test_replicas(gateways: int, scalers: int) -> None:
    deployments = by_kind(render(DeployOptions(gateway_replicas=gateways, scaler_replicas=scalers)), "Deployment")
    assert deployments["podq-gateway"]["spec"]["replicas"] == gateways
    assert deployments["podq-scaler"]["spec"]["replicas"] == scalers


def test_defaults_are_two_gateways_and_one_scaler() -> None:
    assert (DEFAULT.gateway_replicas, DEFAULT.scaler_replicas) == (2, 1)


@pytest.mark.parametrize("ns", ["podq", "x", "gpu-prod-1"])
def test_namespace_everywhere(ns: str) -> None:
    objects = render(DeployOptions(namespace=ns))
    for obj in objects:
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"], obj["kind"]
        else:
            assert obj["metadata"]["namespace"] == ns, obj["kind"]
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"] == [ns]
    for binding in [*by_kind(objects, "RoleBinding").values(), *by_kind(objects, "ClusterRoleBinding").values()]:
        assert [s["namespace"] for s in binding["subjects"]] == [ns]
    # cluster-scoped names carry the namespace: two installations do not share (or delete) them
    cluster_names = {f"podq-scaler-nodes-{ns}"}
    assert set(by_kind(objects, "ClusterRole")) == set(by_kind(objects, "ClusterRoleBinding")) == cluster_names
    scaler = containers(objects)["scaler"]
    assert scaler["args"][-2:] == ["--namespace", ns]
    assert f".{ns}.svc.cluster.local" in env_of(scaler)["PODQ_GATEWAY_URL"]["value"]
    assert f".{ns}.svc.cluster.local" in env_of(scaler)["PODQ_REDIS_URL"]["value"]


def test_an_existing_namespace_is_not_rendered() -> None:
    objects = render(DeployOptions(namespace="team-a", create_namespace=False))
    assert "Namespace" not in {o["kind"] for o in objects}
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] not in CLUSTER_SCOPED} == {"team-a"}


IN_CLUSTER_URL = {"name": "PODQ_REDIS_URL", "value": "redis://podq-redis.podq.svc.cluster.local:6379/0"}
SECRET_URL = {"name": "PODQ_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "podq-redis", "key": "redis-url"}}}


@pytest.mark.parametrize("redis,url_env,redis_kinds", [
    # no --redis-url: a StatefulSet and its headless Service, named by cluster DNS
    (InClusterRedis(), IN_CLUSTER_URL, {("Service", "podq-redis"), ("StatefulSet", "podq-redis")}),
    # an external Redis without a password: its URL as is, and no Redis objects
    (ExternalRedis(url="redis://redis.example.com:6379/0"),
     {"name": "PODQ_REDIS_URL", "value": "redis://redis.example.com:6379/0"}, set()),
    # with a password: the URL goes into a Secret, and the pods reference it
    (ExternalRedis(url="rediss://:s3cret@redis.example.com:6380/1"), SECRET_URL, {("Secret", "podq-redis")}),
    # a Secret the user made: referenced, not rendered
    (ExternalRedis(secret="my-redis"),
     {"name": "PODQ_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "my-redis", "key": "redis-url"}}}, set()),
])
def test_redis_url_reaches_every_component(redis: InClusterRedis | ExternalRedis, url_env: dict,
                                           redis_kinds: set[tuple[str, str]]) -> None:
    objects = render(DeployOptions(redis=redis))
    podq_containers = {name: c for name, c in containers(objects).items() if name != "redis"}
    assert set(podq_containers) == {"gateway", "scaler"}
    for name, container in podq_containers.items():
        assert env_of(container)["PODQ_REDIS_URL"] == url_env, name
    assert {(o["kind"], o["metadata"]["name"]) for o in objects
            if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "redis"} == redis_kinds


@pytest.mark.parametrize("redis,worker_secret", [
    (InClusterRedis(), None),  # a literal URL already: the workers' stays a literal (the scaler warns)
    (ExternalRedis(url="redis://redis.example.com:6379/0"), None),
    (ExternalRedis(url="rediss://:s3cret@redis.example.com:6380/1"), "podq-redis/redis-url"),
    (ExternalRedis(secret="my-redis"), "my-redis/redis-url"),
])
def test_the_scaler_hands_its_redis_secret_to_the_worker_pods(redis: InClusterRedis | ExternalRedis,
                                                              worker_secret: str | None) -> None:
    """When the components read PODQ_REDIS_URL from a Secret, the scaler gets
    PODQ_K8S_REDIS_SECRET naming the same Secret and key, and its kubernetes backend, configured
    from that env as at start, renders worker pods that reference it too."""
    objects = render(DeployOptions(redis=redis))
    scaler, gateway = containers(objects)["scaler"], containers(objects)["gateway"]
    assert "PODQ_K8S_REDIS_SECRET" not in env_of(gateway)
    entry = env_of(scaler).get("PODQ_K8S_REDIS_SECRET")
    assert entry == ({"name": "PODQ_K8S_REDIS_SECRET", "value": worker_secret} if worker_secret else None)
    options = KubernetesOptions.from_env({e["name"]: e["value"] for e in scaler["env"] if "value" in e})
    spec = WorkerSpec(endpoint_id="ep", worker_id="ep-0", version=1, redis_url="redis://:pw@r:6379/0",
                      image="w:1", handler="/h.py")
    [worker] = pod_manifest(spec, options, None, 1, 25.0)["spec"]["containers"]
    assert env_of(worker)["PODQ_REDIS_URL"].get("valueFrom") == (
        env_of(scaler)["PODQ_REDIS_URL"]["valueFrom"] if worker_secret else None)


def test_a_redis_password_appears_only_in_its_secret() -> None:
    url = "redis://:s3cret@redis.example.com:6379/0"
    objects = render(DeployOptions(redis=ExternalRedis(url=url)))
    assert by_kind(objects, "Secret")["podq-redis"]["stringData"] == {"redis-url": url}
    assert [o["kind"] for o in objects if "s3cret" in yaml.safe_dump(o)] == ["Secret"]


@pytest.mark.parametrize("options,redis_url,gateway_url", [
    (DEFAULT,
     "redis://podq-redis.podq.svc.cluster.local:6379/0", "http://podq-gateway.podq.svc.cluster.local:8000"),
    (DeployOptions(namespace="ml", cluster_domain="corp.internal"),
     "redis://podq-redis.ml.svc.corp.internal:6379/0", "http://podq-gateway.ml.svc.corp.internal:8000"),
    (DeployOptions(redis=ExternalRedis(url="redis://10.0.0.5:6379/2")),
     "redis://10.0.0.5:6379/2", "http://podq-gateway.podq.svc.cluster.local:8000"),
])
def test_the_scaler_env_is_what_podq_settings_read(options: DeployOptions, redis_url: str,
                                                   gateway_url: str) -> None:
    """The variable names are the ones serverless/settings.py reads: the scaler's env, loaded as
    podq loads it, gives the Redis its workers get and the gateway URL RunPod workers call."""
    env = {e["name"]: e["value"] for e in containers(render(options))["scaler"]["env"]}
    settings = load_settings(env)
    assert (settings.redis_url, settings.gateway_url) == (redis_url, gateway_url)


def test_the_gateway_service_serves_the_url_the_scaler_hands_out() -> None:
    objects = render(DEFAULT)
    service = by_kind(objects, "Service")["podq-gateway"]
    gateway = containers(objects)["gateway"]
    url = load_settings({e["name"]: e["value"] for e in containers(objects)["scaler"]["env"]}).gateway_url
    (port,) = service["spec"]["ports"]
    assert url == f"http://{service['metadata']['name']}.podq.svc.cluster.local:{port['port']}"
    template = by_kind(objects, "Deployment")["podq-gateway"]["spec"]["template"]
    assert service["spec"]["selector"] == template["metadata"]["labels"]
    assert {p["name"]: p["containerPort"] for p in gateway["ports"]}[port["targetPort"]] == 8000
    assert gateway["args"] == ["podq", "gateway", "--host", "0.0.0.0", "--port", "8000"]


def test_rbac_is_exactly_pods_logs_and_reading_nodes() -> None:
    objects = render(DEFAULT)
    assert by_kind(objects, "Role")["podq-scaler"]["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete", "get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]
    assert by_kind(objects, "ClusterRole")["podq-scaler-nodes-podq"]["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
    ]
    account = {"kind": "ServiceAccount", "name": "podq-scaler", "namespace": "podq"}
    assert "podq-scaler" in by_kind(objects, "ServiceAccount")
    assert by_kind(objects, "RoleBinding")["podq-scaler"]["subjects"] == [account]
    assert by_kind(objects, "RoleBinding")["podq-scaler"]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "podq-scaler"}
    assert by_kind(objects, "ClusterRoleBinding")["podq-scaler-nodes-podq"]["subjects"] == [account]
    assert by_kind(objects, "ClusterRoleBinding")["podq-scaler-nodes-podq"]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "podq-scaler-nodes-podq"}
    pods = {name: d["spec"]["template"]["spec"] for name, d in by_kind(objects, "Deployment").items()}
    assert pods["podq-scaler"]["serviceAccountName"] == "podq-scaler"
    # only the scaler calls the API server: nobody else gets a token
    assert pods["podq-gateway"]["automountServiceAccountToken"] is False
    redis_pod = by_kind(objects, "StatefulSet")["podq-redis"]["spec"]["template"]["spec"]
    assert redis_pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("probe", ["readinessProbe", "livenessProbe"])
def test_gateway_probes_get_healthz_on_the_http_port(probe: str) -> None:
    gateway = containers(render(DEFAULT))["gateway"]
    assert gateway[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert "http" in {p["name"] for p in gateway["ports"]}


async def test_the_probe_path_answers_without_a_key(settings: Settings) -> None:
    """The kubelet sends no API key: the probe's path must answer 200 on a gateway whose admin
    key is set, where a keyed route refuses the same request."""
    probe = containers(render(DEFAULT))["gateway"]["readinessProbe"]["httpGet"]["path"]
    gateway = await start_gateway(settings, "127.0.0.1", 0, GatewayOptions(admin_key="admin-key-for-this-test"))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(gateway.url + probe) as reply:
                assert reply.status == 200
            async with http.get(gateway.url + "/v1/endpoints") as reply:
                assert reply.status == 401
    finally:
        await gateway.close()


def test_the_admin_key_comes_from_a_secret() -> None:
    gateway = containers(render(DeployOptions(api_key_secret="ops-keys")))["gateway"]
    assert env_of(gateway)["PODQ_API_KEY"] == {
        "name": "PODQ_API_KEY", "valueFrom": {"secretKeyRef": {"name": "ops-keys", "key": "api-key"}}}


@pytest.mark.parametrize("options,args", [
    (DEFAULT, ["--backends", "kubernetes", "--namespace", "podq"]),
    (DeployOptions(namespace="x"), ["--backends", "kubernetes", "--namespace", "x"]),
    # the worker pods' pull secrets and GPU taints go to the scaler, which starts those pods
    (DeployOptions(worker_image_pull_secrets=("a", "b"), gpu_tolerations=("gpu-only:NoSchedule",)),
     ["--backends", "kubernetes", "--namespace", "podq", "--image-pull-secret", "a", "--image-pull-secret", "b",
      "--gpu-toleration", "gpu-only:NoSchedule"]),
    # the control plane's own pull secrets are not the workers'
    (DeployOptions(image_pull_secrets=("regcred",)), ["--backends", "kubernetes", "--namespace", "podq"]),
])
def test_scaler_args(options: DeployOptions, args: list[str]) -> None:
    assert containers(render(options))["scaler"]["args"] == ["podq", "scaler", *args]


def test_the_rendered_scaler_command_runs(redis_url: str, tmp_path: Path) -> None:
    """The scaler container's args and env, run as they are (Redis swapped for this test's, no
    cluster reachable): the real `podq scaler` accepts every flag and its kubernetes backend's
    options, connects through PODQ_REDIS_URL, takes the leader lease and asks its kubernetes
    backend for workers; SIGTERM ends it."""
    scaler = containers(render(FULL_WORKERS))["scaler"]
    env = {e["name"]: e["value"] for e in scaler["env"]} | {"PODQ_REDIS_URL": redis_url}
    env |= {"PATH": str(PODQ.parent), "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    log = tmp_path / "scaler.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(PODQ), *scaler["args"][1:]], env=env, cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT)
    # the leader's first tick lists workers through the kubernetes backend, which finds no cluster
    signs = ("took the leader lease",
             "backend kubernetes could not list workers: no usable Kubernetes configuration")
    try:
        deadline = time.monotonic() + 30
        while not all(sign in log.read_text() for sign in signs) and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert all(sign in log.read_text() for sign in signs), log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def test_the_rendered_gateway_flags_exist_in_the_real_cli() -> None:
    rendered = containers(render(DEFAULT))["gateway"]["args"]
    done = podq("gateway", "--help")
    assert done.returncode == 0, done.stderr
    for flag in ("--host", "--port"):
        assert flag in rendered
        assert flag in done.stdout, f"`podq gateway --help` does not mention {flag}"


def test_every_object_carries_podq_labels_by_component() -> None:
    components = {"podq-gateway": "gateway", "podq-scaler": "scaler", "podq-redis": "redis",
                  "podq-scaler-nodes-podq": "scaler"}
    for obj in render(DEFAULT):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "podq"
        if obj["kind"] != "Namespace":
            assert labels["app.kubernetes.io/component"] == components[obj["metadata"]["name"]], obj["kind"]
        if obj["kind"] in ("Deployment", "StatefulSet"):
            assert obj["spec"]["template"]["metadata"]["labels"] == labels
            assert obj["spec"]["selector"]["matchLabels"] == labels


@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_every_container_has_requests_and_limits(options: DeployOptions) -> None:
    for name, container in containers(render(options)).items():
        for part in ("requests", "limits"):
            assert set(container["resources"][part]) == {"cpu", "memory"}, (name, part)


def test_images_default_to_the_ones_compose_runs() -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]
    assert DEFAULT_IMAGE == compose["gateway"]["image"] == compose["scaler"]["image"]
    assert DEFAULT_REDIS_IMAGE == compose["redis"]["image"]
    assert {c["image"] for c in containers(render(DEFAULT)).values()} == {DEFAULT_IMAGE, DEFAULT_REDIS_IMAGE}


def test_image_overrides_the_control_plane_only() -> None:
    image = "registry.example.com/podq-control-plane:0.2.0"
    found = {name: c["image"] for name, c in containers(render(DeployOptions(image=image))).items()}
    assert found == {"gateway": image, "scaler": image, "redis": DEFAULT_REDIS_IMAGE}


def test_redis_statefulset_is_append_only_on_a_claim() -> None:
    options = DeployOptions(redis=InClusterRedis(storage="8Gi", storage_class="ssd"))
    redis = by_kind(render(options), "StatefulSet")["podq-redis"]
    container = redis["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["redis-server", "--appendonly", "yes"]
    assert container["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "8Gi"}},
                             "storageClassName": "ssd"}
    assert redis["spec"]["serviceName"] == "podq-redis"
    assert by_kind(render(DEFAULT), "Service")["podq-redis"]["spec"]["clusterIP"] == "None"


def test_pull_secrets_and_policy_reach_every_podq_pod() -> None:
    objects = render(DeployOptions(image_pull_secrets=("regcred",), image_pull_policy="Always"))
    for deployment in by_kind(objects, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["containers"][0]["imagePullPolicy"] == "Always"


@pytest.mark.parametrize("options,message", [
    (DeployOptions(image_pull_policy="Sometimes"),
     "image pull policy 'Sometimes' is not one of Always, IfNotPresent, Never"),
    (DeployOptions(log_level="LOUD"), "log level 'LOUD' is not one of DEBUG, INFO, WARNING, ERROR"),
    (DeployOptions(cluster_domain="bad_domain"), "cluster domain 'bad_domain' is not a DNS name"),
    (DeployOptions(redis=ExternalRedis()),
     "an external Redis needs exactly one of --redis-url and --redis-secret"),
    (DeployOptions(image_pull_secrets=("UPPER",)), "Secret name 'UPPER' is not a DNS-1123 subdomain"),
    (DeployOptions(scaler_replicas=0), "replicas must be at least 1 (gateway 2, scaler 0)"),
    (DeployOptions(namespace="x" * 64), f"namespace '{'x' * 64}' is not a DNS-1123 label"),
    # the scaler's own checks, run at render time rather than when its pod starts
    (DeployOptions(gpu_tolerations=("k=v:Bogus",)), "GPU toleration 'k=v:Bogus' is not key=value:Effect"),
    (DeployOptions(worker_image_pull_secrets=("No_Such",)), "image pull secret 'No_Such' is not a Secret name"),
])
def test_render_refuses_bad_options(options: DeployOptions, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        render(options)


def test_render_output_is_fresh_each_time() -> None:
    """Callers may edit what render returns (add a toleration, raise a limit) without changing
    the next render: no object shares its lists or maps with module constants."""
    first = render(DEFAULT)
    containers(first)["gateway"]["resources"]["limits"]["memory"] = "64Gi"
    by_kind(first, "Role")["podq-scaler"]["rules"][0]["verbs"].append("patch")
    assert render(DEFAULT) == list(yaml.safe_load_all(COMMITTED.read_text()))


# ---- the committed default render ----

def test_committed_manifest_is_the_default_render() -> None:
    assert COMMITTED.exists(), f"{COMMITTED} is missing; create it with: {REGENERATE}"
    assert COMMITTED.read_text() == to_yaml(render(DEFAULT), []), (
        f"docker/k8s/podq.yaml differs from `podq deploy kubernetes`; regenerate it with: {REGENERATE}")


def test_yaml_has_no_aliases_and_reads_back() -> None:
    text = to_yaml(render(DEFAULT), [])
    assert "&id" not in text and "*id" not in text
    assert list(yaml.safe_load_all(text)) == render(DEFAULT)


# ---- the CLI ----

def test_cli_prints_the_render_for_its_flags() -> None:
    done = podq("deploy", "kubernetes", "--namespace", "x")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Rendered by `podq deploy kubernetes --namespace x`")
    assert list(yaml.safe_load_all(done.stdout)) == render(DeployOptions(namespace="x"))


def test_cli_refuses_an_unknown_target_naming_the_supported_ones() -> None:
    done = podq("deploy", "nomad")
    assert done.returncode == 2
    assert done.stderr.strip() == ("podq deploy: unknown target 'nomad'; supported: kubernetes "
                                   "(e.g. podq deploy kubernetes --help)")
    assert done.stdout == ""


@pytest.mark.parametrize("argv,expected", [
    ([], DeployOptions()),
    (["--namespace", "x", "--gateway-replicas", "3", "--scaler-replicas", "2"],
     DeployOptions(namespace="x", gateway_replicas=3, scaler_replicas=2)),
    (["--redis-url", "redis://r:6379/0"], DeployOptions(redis=ExternalRedis(url="redis://r:6379/0"))),
    (["--redis-secret", "my-redis"], DeployOptions(redis=ExternalRedis(secret="my-redis"))),
    (["--redis-storage", "5Gi", "--storage-class", "ssd", "--redis-image", "redis:7.4"],
     DeployOptions(redis=InClusterRedis(storage="5Gi", storage_class="ssd", image="redis:7.4"))),
    (["--image", "reg/podq:1", "--image-pull-secret", "a", "--image-pull-secret", "b",
      "--image-pull-policy", "Always"],
     DeployOptions(image="reg/podq:1", image_pull_secrets=("a", "b"), image_pull_policy="Always")),
    (["--namespace", "default", "--no-create-namespace", "--cluster-domain", "k8s.local", "--log-level", "DEBUG",
      "--api-key-secret", "keys"],
     DeployOptions(namespace="default", create_namespace=False, cluster_domain="k8s.local", log_level="DEBUG",
                   api_key_secret="keys")),
    (["--worker-image-pull-secret", "w", "--gpu-toleration", "a=b:NoExecute", "--gpu-toleration", "c"],
     DeployOptions(worker_image_pull_secrets=("w",), gpu_tolerations=("a=b:NoExecute", "c"))),
])
def test_flags_become_options(argv: list[str], expected: DeployOptions) -> None:
    assert cli.kubernetes_options(argv) == expected


@pytest.mark.parametrize("argv,message", [
    (["--namespace", "Team_A"], "namespace 'Team_A' is not a DNS-1123 label"),
    (["--namespace", "default"], "namespace 'default' always exists and podq must not own it "
                                 "(kubectl delete -f would delete it): pass --no-create-namespace"),
    (["--gateway-replicas", "0"], "replicas must be at least 1 (gateway 0, scaler 1)"),
    (["--redis-url", "http://redis:6379"], "Redis URL 'http://redis:6379' must start with redis:// or rediss://"),
    (["--redis-url", "redis://r", "--redis-secret", "s"], "needs exactly one of --redis-url and --redis-secret"),
    (["--redis-url", "redis://r", "--redis-storage", "5Gi", "--storage-class", "ssd"],
     "--redis-storage, --storage-class: for the in-cluster Redis only, which --redis-url replaces; "
     "drop one or the other"),
    (["--redis-secret", "s", "--redis-image", "redis:7"],
     "--redis-image: for the in-cluster Redis only, which --redis-secret replaces"),
    (["--redis-storage", "lots"], "Redis storage 'lots' is not a Kubernetes quantity: write e.g. 1Gi or 500Mi"),
    (["--api-key-secret", "Keys!"], "Secret name 'Keys!' is not a DNS-1123 subdomain"),
    (["--image-pull-policy", "Sometimes"], "invalid choice: 'Sometimes'"),
])
def test_bad_flags_exit_2_with_the_fix(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.kubernetes_options(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
