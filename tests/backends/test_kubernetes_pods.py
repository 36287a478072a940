"""The kubernetes backend up to its API boundary: its pure builders and mappings
(scaler/backends/kubernetes_pods.py), every Pod they render checked against the official
schemas and podq's own API-server checks (tests/kubernetes_checks.py), the checks themselves
proven to fail on bad objects, the error messages, and the CLI wiring.

No API server can run here (docs/kubernetes.md), so the backend's calls to one are exercised
only by the contract suite against a real cluster (test_contract.py, PODQ_TEST_KUBECONFIG).
What needs no cluster runs for real below: reading a kubeconfig, and a refused connection.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import re
import socket
from pathlib import Path
from typing import Any

import msgspec
import pytest

from scaler.backends.base import BackendError, WorkerSpec
from scaler.backends.kubernetes import LITERAL_REDIS_URL, KubernetesBackend, explain
from scaler.backends.kubernetes_pods import (
    KubernetesOptions,
    container_resources,
    cpu_quantity,
    gpu_tolerations,
    handle_of,
    label_value,
    matching_products,
    memory_quantity,
    node_products,
    pod_labels,
    pod_manifest,
    pod_name,
    pod_state,
    redis_url_in_spec,
    secret_key_ref,
    selector,
    toleration,
)
from scaler.cli import kubernetes_options, make_backends
from scaler.gpus import wanted_names
from scaler.logs_cli import build_parser, engine_options
from serverless.errors import PodqError
from serverless.settings import Settings
from tests.kubernetes_checks import check_object, validate

LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LONG_ID = "team:" + "x" * 123  # endpoint ids may be 128 characters and hold ':'
PRODUCTS = ["A100-SXM4-40GB-MIG-1g.5gb", "NVIDIA-A100-SXM4-40GB", "NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe",
            "NVIDIA-L4", "NVIDIA-L40S"]


def worker(**changes: object) -> WorkerSpec:
    fields: dict = {"endpoint_id": "ep-1", "worker_id": "ep-1-0a1b2c3d", "version": 4,
                    "redis_url": "redis://:pw@redis.podq.svc:6379/0", "handler": "/app/handler.py",
                    "env": {"MODEL": "llama"}}
    return WorkerSpec(**{**fields, **changes})


OPTIONS = KubernetesOptions(namespace="podq", image="registry.example.com/podq-worker:1")


# --- names and label values ------------------------------------------------------------------

@pytest.mark.parametrize("endpoint,worker_id,prefix", [
    ("ep-1", "ep-1-0a1b2c3d", "podq-ep-1-0a1b2c3d-"),  # the worker id, then a hash
    ("Llama_70B", "Llama_70B-0a1b2c3d", "podq-llama-70b-0a1b2c3d-"),  # lower-case, '_' becomes '-'
    ("team:chat", "team:chat-0a1b2c3d", "podq-team-chat-0a1b2c3d-"),  # ':' is not allowed
    (LONG_ID, f"{LONG_ID}-0a1b2c3d", "podq-team-xxxxxxxx"),  # cut to 63 with the hash kept
])
def test_a_pod_name_is_the_worker_id_and_a_hash_as_a_dns_label(endpoint: str, worker_id: str, prefix: str) -> None:
    name = pod_name(worker(endpoint_id=endpoint, worker_id=worker_id))
    assert name.startswith(prefix)
    assert DNS_LABEL.match(name) and len(name) <= 63, name
    assert re.search(r"-[0-9a-f]{8}$", name), name


def test_ids_that_read_alike_get_different_pod_names_and_label_values() -> None:
    a, b = worker(endpoint_id="a:b", worker_id="a:b-1"), worker(endpoint_id="a;b", worker_id="a;b-1")
    assert pod_name(a) != pod_name(b)
    assert label_value("a:b") != label_value("a;b")
    long_a, long_b = LONG_ID + "-1", LONG_ID + "-2"  # differ only past the cut
    assert pod_name(worker(worker_id=long_a)) != pod_name(worker(worker_id=long_b))
    assert label_value(long_a) != label_value(long_b)


@pytest.mark.parametrize("text,same", [
    ("ep-1", True),
    ("Llama_70B.v2", True),  # upper case, '_' and '.' are allowed in values
    ("", True),
    ("x" * 63, True),
    ("x" * 64, False),  # too long
    ("team:chat", False),  # ':'
    ("-ep", False),  # must start and end alphanumeric
    ("ep_", False),
    (LONG_ID, False),
])
def test_label_values_are_kept_when_legal_and_rewritten_with_a_hash_when_not(text: str, same: bool) -> None:
    value = label_value(text)
    assert LABEL_VALUE.match(value) and len(value) <= 63, value
    assert (value == text) is same


def test_the_selector_of_an_endpoint_selects_its_pods_whatever_its_id() -> None:
    for endpoint in ("ep-1", "team:chat", LONG_ID):
        labels = pod_manifest(worker(endpoint_id=endpoint), OPTIONS, None, 1, 5)["metadata"]["labels"]
        assert selector(endpoint).items() <= labels.items()
        assert selector().items() <= labels.items()
    assert selector("team:chat") != selector("team;chat")


def test_endpoint_labels_kubernetes_would_refuse_are_named() -> None:
    assert pod_labels(worker(labels={"team": "ml", "example.com/tier": "gold"}))["team"] == "ml"
    with pytest.raises(BackendError, match=r"endpoint label team='ML team' is not a valid Kubernetes label"):
        pod_labels(worker(labels={"team": "ML team"}))
    with pytest.raises(BackendError, match=r"endpoint label my key='x'"):
        pod_labels(worker(labels={"my key": "x"}))


def test_podq_labels_win_over_an_endpoint_label_of_the_same_key() -> None:
    labels = pod_labels(worker(labels={"podq.managed": "0", "podq.version": "9"}))
    assert (labels["podq.managed"], labels["podq.version"]) == ("1", "4")


# --- quantities and resources ----------------------------------------------------------------

@pytest.mark.parametrize("cpus,expected", [
    (0.5, "500m"), (2, "2"), (2.0, "2"), (1.25, "1250m"), (0.001, "1m"), (0.1, "100m"), (16.0, "16"),
])
def test_cpu_quantities(cpus: float, expected: str) -> None:
    assert cpu_quantity(cpus) == expected


@pytest.mark.parametrize("cpus", [0.0004, -1.0])
def test_cpus_below_a_millicore_or_negative_are_refused(cpus: float) -> None:
    with pytest.raises(BackendError, match=rf"cpus {cpus!r}: Kubernetes needs a positive number of at least 0.001"):
        cpu_quantity(cpus)


@pytest.mark.parametrize("memory_mb,expected", [(2048, "2048Mi"), (512, "512Mi"), (1, "1Mi")])
def test_memory_quantities_are_mebibytes(memory_mb: int, expected: str) -> None:
    assert memory_quantity(memory_mb) == expected


@pytest.mark.parametrize("changes,expected", [
    ({}, {}),  # a CPU worker that asks for nothing gets no resources block
    ({"cpus": 0.5}, {"requests": {"cpu": "500m"}, "limits": {"cpu": "500m"}}),
    ({"memory_mb": 2048}, {"requests": {"memory": "2048Mi"}, "limits": {"memory": "2048Mi"}}),
    ({"gpu_count": 1}, {"limits": {"nvidia.com/gpu": "1"}}),  # requests follow limits for GPUs
    ({"gpu_count": 4, "cpus": 8.0, "memory_mb": 65536},
     {"requests": {"cpu": "8", "memory": "65536Mi"}, "limits": {"cpu": "8", "memory": "65536Mi", "nvidia.com/gpu": "4"}}),
])
def test_cpu_and_memory_are_requests_equal_to_limits_and_gpus_are_limits(changes: dict, expected: dict) -> None:
    assert container_resources(worker(**changes)) == expected


# --- tolerations -----------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("dedicated=gpu:NoSchedule", {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}),
    ("example.com/spot:NoExecute", {"key": "example.com/spot", "operator": "Exists", "effect": "NoExecute"}),
    ("dedicated=gpu", {"key": "dedicated", "operator": "Equal", "value": "gpu"}),  # any effect
    ("dedicated=:NoSchedule", {"key": "dedicated", "operator": "Equal", "value": "", "effect": "NoSchedule"}),
    ("nvidia.com/gpu.product", {"key": "nvidia.com/gpu.product", "operator": "Exists"}),
])
def test_tolerations_are_read_in_kubectls_taint_syntax(text: str, expected: dict) -> None:
    assert toleration(text) == expected


@pytest.mark.parametrize("text", ["dedicated=gpu:NoScheduling", "bad key:NoSchedule", "dedicated=a b",
                                  "dedicated=gpu:", ":NoSchedule", ""])
def test_a_toleration_that_is_not_taint_syntax_is_refused_with_the_forms(text: str) -> None:
    with pytest.raises(BackendError, match=r"is not key=value:Effect, key:Effect, key=value or key"):
        toleration(text)


def test_gpu_workers_tolerate_the_gpu_taint_and_the_configured_ones_cpu_workers_none() -> None:
    options = KubernetesOptions(gpu_tolerations=["dedicated=gpu:NoSchedule"])
    assert gpu_tolerations(worker(gpu_count=0), options) == []
    assert gpu_tolerations(worker(gpu_count=2), options) == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]


# --- GPU products ----------------------------------------------------------------------------

def node(product: str | None) -> dict:
    labels = {"kubernetes.io/hostname": "n"} | ({"nvidia.com/gpu.product": product} if product else {})
    return {"metadata": {"name": "n", "labels": labels}}


def test_node_products_are_the_distinct_label_values() -> None:
    nodes = [node("NVIDIA-L4"), node("NVIDIA-H100-80GB-HBM3"), node("NVIDIA-L4"), node(None)]
    assert node_products(nodes, "nvidia.com/gpu.product") == ["NVIDIA-H100-80GB-HBM3", "NVIDIA-L4"]
    assert node_products([node("A100")], "cloud.example.com/accelerator") == []


@pytest.mark.parametrize("gpu_names,expected", [
    (["H100"], ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe"]),  # every form factor of the model
    (["NVIDIA H100 80GB HBM3"], ["NVIDIA-H100-80GB-HBM3"]),  # NVML's name: that one only
    (["L4"], ["NVIDIA-L4"]),  # an L4 is not an L40S
    (["A100"], ["NVIDIA-A100-SXM4-40GB"]),  # a MIG slice is not the whole GPU
    (["L4", "L40S"], ["NVIDIA-L4", "NVIDIA-L40S"]),
    (wanted_names("ADA_24"), ["NVIDIA-L4"]),  # a RunPod pool id, through scaler.gpus
])
def test_the_affinity_values_are_the_products_same_model_accepts(gpu_names: list[str], expected: list[str]) -> None:
    assert matching_products(PRODUCTS, gpu_names, "nvidia.com/gpu.product") == expected


def test_no_matching_product_names_what_the_cluster_has_and_the_fix() -> None:
    with pytest.raises(BackendError) as e:
        matching_products(["NVIDIA-L4", "NVIDIA-L40S"], ["H200"], "nvidia.com/gpu.product")
    assert str(e.value) == (
        "no node of the cluster has a GPU of H200: its nodes' nvidia.com/gpu.product labels are NVIDIA-L4, "
        "NVIDIA-L40S; change the endpoint's gpu_ids to one of those models (or ANY), or add nodes with that GPU")


def test_a_cluster_without_the_product_label_names_gpu_feature_discovery() -> None:
    with pytest.raises(BackendError, match=r"no node of the cluster has the label nvidia.com/gpu.product, .*"
                                           r"install NVIDIA GPU feature discovery .* PODQ_K8S_PRODUCT_LABEL"):
        matching_products([], ["H100"], "nvidia.com/gpu.product")


# --- the pod ---------------------------------------------------------------------------------

def container(pod: dict) -> dict:
    [only] = pod["spec"]["containers"]
    return only


def env_of(pod: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(pod)["env"]}


def affinity_values(pod: dict) -> list[str] | None:
    affinity = pod["spec"].get("affinity")
    if affinity is None:
        return None
    [term] = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    [expression] = term["matchExpressions"]
    assert (expression["key"], expression["operator"]) == ("nvidia.com/gpu.product", "In")
    return expression["values"]


PODS = [  # (what it is, spec changes, options changes, products)
    ("a CPU worker", {"gpu_count": 0}, {}, None),
    ("a CPU worker with cpus and memory", {"cpus": 0.5, "memory_mb": 2048}, {}, None),
    ("one GPU of any model", {"gpu_count": 1}, {}, None),
    ("one H100", {"gpu_count": 1, "gpu_names": ["H100"]}, {}, ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe"]),
    ("eight GPUs, cores, memory, pull secrets and tolerations",
     {"gpu_count": 8, "gpu_names": ["H100"], "cpus": 96.0, "memory_mb": 1_048_576},
     {"image_pull_secrets": ["regcred", "ghcr"], "gpu_tolerations": ["dedicated=gpu:NoSchedule", "spot"]},
     ["NVIDIA-H100-80GB-HBM3"]),
    ("a RunPod worker", {"protocol": "runpod", "handler": None, "gpu_count": 1,
                         "env": {"RUNPOD_POD_ID": "w", "RUNPOD_WEBHOOK_GET_JOB": "http://gw/v2/e/job-take/$ID?gpu="}},
     {}, None),
    ("a worker with its own command", {"command": ["python", "-u", "/app/serve.py"]}, {}, None),
    ("a worker running the image's own command", {"handler": None}, {}, None),
    ("a worker reading the Redis URL from a Secret", {}, {"redis_secret": "podq-redis/redis-url"}, None),
    ("ids that are not label values", {"endpoint_id": LONG_ID, "worker_id": LONG_ID + "-0a1b2c3d",
                                       "labels": {"team": "ml"}}, {}, None),
]


@pytest.mark.parametrize("what,changes,option_changes,products", PODS, ids=[p[0] for p in PODS])
def test_every_pod_passes_the_schemas_and_the_api_servers_checks(what, changes, option_changes, products) -> None:
    options = KubernetesOptions(**{"namespace": "podq", "image": "registry.example.com/podq-worker:1", **option_changes})
    validate(pod_manifest(worker(**changes), options, products, 1_700_000_000_000, 25.0))


def test_a_pod_runs_once_with_podqs_labels_and_the_exact_ids_in_annotations() -> None:
    spec = worker(endpoint_id="team:chat", worker_id="team:chat-0a1b2c3d")
    pod = pod_manifest(spec, OPTIONS, None, 1_700_000_000_123, 25.0)
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 25
    assert pod["metadata"]["namespace"] == "podq"
    assert pod["metadata"]["annotations"] == {"podq.endpoint": "team:chat", "podq.worker": "team:chat-0a1b2c3d",
                                              "podq.started_at": "1700000000123"}
    labels = pod["metadata"]["labels"]
    assert (labels["podq.managed"], labels["podq.version"]) == ("1", "4")
    assert labels["podq.endpoint"] == label_value("team:chat") != "team:chat"


def test_a_podq_worker_runs_its_handler_with_the_env_workers_need() -> None:
    pod = pod_manifest(worker(), OPTIONS, None, 1, 25.0)
    assert container(pod)["image"] == "registry.example.com/podq-worker:1"
    assert container(pod)["args"] == ["python", "-m", "worker", "/app/handler.py"]
    assert "command" not in container(pod)  # the image's ENTRYPOINT stays, as with Docker's Cmd
    assert env_of(pod) == {"MODEL": "llama", "PODQ_REDIS_URL": "redis://:pw@redis.podq.svc:6379/0",
                           "PODQ_ENDPOINT_ID": "ep-1", "PODQ_WORKER_ID": "ep-1-0a1b2c3d", "PODQ_WORKER_VERSION": "4"}
    assert pod["spec"]["enableServiceLinks"] is False


@pytest.mark.parametrize("changes,options,args", [
    ({"command": ["python", "-u", "/app/serve.py"]}, {}, ["python", "-u", "/app/serve.py"]),
    ({"handler": None}, {}, None),  # the image's own CMD
    ({}, {"python": "python3.12"}, ["python3.12", "-m", "worker", "/app/handler.py"]),
    ({"image": "mine:2"}, {}, ["python", "-m", "worker", "/app/handler.py"]),
])
def test_the_command_is_the_docker_backends_choice(changes: dict, options: dict, args: list[str] | None) -> None:
    pod = pod_manifest(worker(**changes), KubernetesOptions(image="base:1", **options), None, 1, 25.0)
    assert container(pod).get("args") == args
    assert container(pod)["image"] == changes.get("image", "base:1")


def test_a_runpod_worker_runs_its_image_with_exactly_its_env() -> None:
    env = {"RUNPOD_POD_ID": "w-1", "RUNPOD_AI_API_KEY": "podq_w_x"}
    pod = pod_manifest(worker(protocol="runpod", handler=None, env=env), OPTIONS, None, 1, 25.0)
    assert "args" not in container(pod)
    assert env_of(pod) == env  # no Redis URL: it talks to the gateway


def test_gpu_placement_limits_tolerations_and_affinity() -> None:
    products = ["NVIDIA-H100-PCIe", "NVIDIA-H100-80GB-HBM3"]
    pod = pod_manifest(worker(gpu_count=2, gpu_names=["H100"]), OPTIONS, products, 1, 25.0)
    assert container(pod)["resources"] == {"limits": {"nvidia.com/gpu": "2"}}
    assert affinity_values(pod) == sorted(products)
    assert pod["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    any_model = pod_manifest(worker(gpu_count=2, gpu_names=None), OPTIONS, None, 1, 25.0)
    assert affinity_values(any_model) is None and container(any_model)["resources"]["limits"]["nvidia.com/gpu"] == "2"
    cpu = pod_manifest(worker(gpu_count=0), OPTIONS, None, 1, 25.0)
    assert "tolerations" not in cpu["spec"] and "resources" not in container(cpu)


def test_another_product_label_is_used_for_the_affinity() -> None:
    options = KubernetesOptions(product_label="cloud.example.com/accelerator")
    pod = pod_manifest(worker(gpu_count=1), options, ["h100"], 1, 25.0)
    [term] = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": "cloud.example.com/accelerator", "operator": "In", "values": ["h100"]}]


def test_image_pull_secrets_are_named() -> None:
    pod = pod_manifest(worker(), KubernetesOptions(image_pull_secrets=["regcred"]), None, 1, 25.0)
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert "imagePullSecrets" not in pod_manifest(worker(), OPTIONS, None, 1, 25.0)["spec"]


REDIS_URL = "redis://:pw@redis.podq.svc:6379/0"  # worker()'s


@pytest.mark.parametrize("changes,redis_secret,url_entry", [
    # no Secret configured: today's literal (the backend warns once, below)
    ({}, "", {"name": "PODQ_REDIS_URL", "value": REDIS_URL}),
    # a Secret: a reference instead, whatever the spec's env held under that name
    ({}, "podq-redis/redis-url",
     {"name": "PODQ_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "podq-redis", "key": "redis-url"}}}),
    ({"env": {"MODEL": "llama", "PODQ_REDIS_URL": REDIS_URL}}, "ops.redis/url_v2",
     {"name": "PODQ_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "ops.redis", "key": "url_v2"}}}),
    # a RunPod worker talks to the gateway: no Redis URL in either form
    ({"protocol": "runpod", "handler": None}, "", None),
    ({"protocol": "runpod", "handler": None}, "podq-redis/redis-url", None),
])
def test_the_redis_url_is_a_secret_reference_when_one_is_configured(changes: dict, redis_secret: str,
                                                                    url_entry: dict | None) -> None:
    pod = pod_manifest(worker(**changes), KubernetesOptions(redis_secret=redis_secret), None, 1, 25.0)
    entries = container(pod)["env"]
    assert [e for e in entries if e["name"] == "PODQ_REDIS_URL"] == ([url_entry] if url_entry else [])
    assert len({e["name"] for e in entries}) == len(entries)  # one entry per name: no literal left behind
    if url_entry != {"name": "PODQ_REDIS_URL", "value": REDIS_URL}:
        assert REDIS_URL not in json.dumps(pod) and ":pw@" not in json.dumps(pod)
    rest = {e["name"]: e["value"] for e in entries if e["name"] != "PODQ_REDIS_URL"}
    if changes.get("protocol") != "runpod":
        assert rest == {"MODEL": "llama", "PODQ_ENDPOINT_ID": "ep-1", "PODQ_WORKER_ID": "ep-1-0a1b2c3d",
                        "PODQ_WORKER_VERSION": "4"}


@pytest.mark.parametrize("protocol,redis_secret,literal", [
    ("podq", "", True), ("podq", "podq-redis/redis-url", False), ("runpod", "", False),
    ("runpod", "podq-redis/redis-url", False)])
def test_only_a_podq_worker_without_a_redis_secret_has_the_url_in_its_spec(protocol: str, redis_secret: str,
                                                                            literal: bool) -> None:
    spec = worker(protocol=protocol)
    assert redis_url_in_spec(spec, KubernetesOptions(redis_secret=redis_secret)) is literal
    pod = pod_manifest(spec, KubernetesOptions(redis_secret=redis_secret), None, 1, 25.0)
    assert (REDIS_URL in json.dumps(pod)) is literal


@pytest.mark.parametrize("text,expected", [
    ("podq-redis/redis-url", {"name": "podq-redis", "key": "redis-url"}),
    ("ops.redis/URL_v2.txt", {"name": "ops.redis", "key": "URL_v2.txt"}),
    ("r/.url", {"name": "r", "key": ".url"}),
])
def test_a_redis_secret_is_a_secret_name_and_a_key(text: str, expected: dict) -> None:
    assert secret_key_ref(text) == expected


@pytest.mark.parametrize("text", ["podq-redis", "podq-redis/", "/redis-url", "Podq_Redis/redis-url",
                                  "podq-redis/redis url", "podq-redis/a/b", "podq-redis/.", "podq-redis/..x",
                                  "podq-redis/url\n", "x" * 254 + "/url", "podq-redis/" + "k" * 254])
def test_a_malformed_redis_secret_is_refused_with_the_form_and_the_variable(text: str) -> None:
    fix = r"is not NAME/KEY .*set PODQ_K8S_REDIS_SECRET .*e\.g\. podq-redis/redis-url"
    with pytest.raises(BackendError, match=fix):
        secret_key_ref(text)
    with pytest.raises(BackendError, match=re.escape(f"Redis URL Secret {text!r}")):
        KubernetesOptions(redis_secret=text)


async def test_a_literal_redis_url_is_warned_about_once_per_backend(caplog: pytest.LogCaptureFixture) -> None:
    """The warning comes before the first API call, so a backend without a cluster shows it: its
    starts fail at the kubeconfig, after the pod was built."""
    async def warnings_of(options: KubernetesOptions, *specs: WorkerSpec) -> list[str]:
        caplog.clear()
        backend = KubernetesBackend(options)
        for spec in specs:
            with pytest.raises(BackendError, match=r"no usable Kubernetes configuration"):
                await backend.start(spec)
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    base = KubernetesOptions(namespace="podq", image="reg/podq:1", kubeconfig="/nonexistent")
    runpod = worker(protocol="runpod", handler=None)
    with caplog.at_level(logging.WARNING, logger="podq.scaler"):
        [warning] = await warnings_of(base, runpod, worker(), worker(worker_id="ep-1-1"), worker())
        assert warning == LITERAL_REDIS_URL % ("podq", "podq")
        assert "kubectl get pod -o yaml" in warning
        assert "PODQ_K8S_REDIS_SECRET=podq-redis-url/redis-url" in warning
        assert len(await warnings_of(base, worker())) == 1  # a new backend warns again
        assert await warnings_of(base, runpod, runpod) == []  # RunPod workers never carry the URL
        # a password-less URL (the in-cluster Redis) hides nothing: no warning
        assert await warnings_of(base, worker(redis_url="redis://redis.podq.svc:6379/0")) == []
        with_secret = msgspec.structs.replace(base, redis_secret="podq-redis/redis-url")
        assert await warnings_of(with_secret, worker(), worker()) == []


# --- listed pods -----------------------------------------------------------------------------

CREATED = "2026-11-30T10:00:00Z"  # 1796032800000 ms since the epoch
PLACED = "2026-11-30T10:00:05Z"


def listed(phase: str, *, node: str = "", conditions: list | None = None, container_state: dict | None = None,
           deleting: bool = False, **status: object) -> dict:
    """A pod as the API lists it, made from the worker's own manifest."""
    pod = pod_manifest(worker(endpoint_id="team:chat", worker_id="team:chat-0a1b2c3d"), OPTIONS, None,
                       1_796_032_800_000, 25.0)
    pod["metadata"]["creationTimestamp"] = CREATED
    if deleting:
        pod["metadata"]["deletionTimestamp"] = "2026-11-30T10:09:00Z"
    if node:
        pod["spec"]["nodeName"] = node
    pod["status"] = {"phase": phase, "conditions": conditions or [], **status}
    if node:
        pod["status"]["startTime"] = PLACED
    if container_state is not None:
        pod["status"]["containerStatuses"] = [{"name": "worker", "state": container_state}]
    return pod


UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}
SCHEDULED = {"type": "PodScheduled", "status": "True"}


def waiting(reason: str, message: str = "") -> dict:
    return {"waiting": {"reason": reason, **({"message": message} if message else {})}}


def ended(reason: str, code: int) -> dict:
    return {"terminated": {"reason": reason, "exitCode": code}}


STATES = [  # (what, pod, running, pending, problem, started_at)
    ("just created: the scheduler has not looked yet", listed("Pending"),
     True, "waiting for the Kubernetes scheduler", "", 1_796_032_800_000),
    ("no node has a free GPU", listed("Pending", conditions=[UNSCHEDULABLE]),
     True, "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.", "", 1_796_032_800_000),
    ("placed, pulling its image", listed("Pending", node="gpu-1", conditions=[SCHEDULED],
                                         container_state=waiting("ContainerCreating")),
     True, "", "", 1_796_032_805_000),
    ("placed, its image cannot be pulled", listed("Pending", node="gpu-1", conditions=[SCHEDULED],
                                                  container_state=waiting("ImagePullBackOff", 'Back-off pulling image "x:1"')),
     True, "", 'ImagePullBackOff: Back-off pulling image "x:1"', 1_796_032_805_000),
    ("placed, pull failed", listed("Pending", node="gpu-1", container_state=waiting("ErrImagePull")),
     True, "", "ErrImagePull", 1_796_032_805_000),
    ("placed, a Secret it needs is missing",
     listed("Pending", node="gpu-1", container_state=waiting("CreateContainerConfigError", 'secret "hf" not found')),
     True, "", 'CreateContainerConfigError: secret "hf" not found', 1_796_032_805_000),
    ("running", listed("Running", node="gpu-1", conditions=[SCHEDULED], container_state={"running": {}}),
     True, "", "", 1_796_032_805_000),
    ("drained and exited", listed("Succeeded", node="gpu-1", container_state=ended("Completed", 0)),
     False, "", "Completed (exit code 0)", 1_796_032_805_000),
    ("out of memory", listed("Failed", node="gpu-1", container_state=ended("OOMKilled", 137)),
     False, "", "OOMKilled (exit code 137)", 1_796_032_805_000),
    ("evicted", listed("Failed", node="gpu-1", reason="Evicted", message="The node was low on resource: memory."),
     False, "", "Evicted: The node was low on resource: memory.", 1_796_032_805_000),
    ("being deleted", listed("Running", node="gpu-1", deleting=True),
     False, "", "pod is being deleted (since 2026-11-30T10:09:00Z)", 1_796_032_805_000),
    ("its node stopped reporting", listed("Unknown", node="gpu-1"),
     True, "", "pod phase Unknown: its node stopped reporting", 1_796_032_805_000),
]


@pytest.mark.parametrize("what,pod,running,pending,problem,started_at", STATES, ids=[s[0] for s in STATES])
def test_a_pods_phase_and_conditions_become_the_workers_state(what, pod, running, pending, problem, started_at) -> None:
    state = pod_state(pod)
    assert (state.running, state.pending, state.problem, state.started_at) == (running, pending, problem, started_at)
    handle = handle_of(pod)
    assert (handle.running, handle.pending, handle.problem, handle.started_at) == (running, pending, problem, started_at)


def test_a_listed_pod_gives_back_the_exact_ids() -> None:
    pod = listed("Running", node="gpu-1")
    handle = handle_of(pod)
    assert (handle.worker_id, handle.endpoint_id, handle.version) == ("team:chat-0a1b2c3d", "team:chat", 4)
    assert handle.ref == pod["metadata"]["name"] and handle.gpu_uuids == []


def test_a_pod_without_podqs_annotations_falls_back_to_its_labels_and_creation_time() -> None:
    pod = listed("Pending")
    pod["metadata"]["annotations"] = {}
    handle = handle_of(pod)
    assert (handle.worker_id, handle.endpoint_id) == (pod["metadata"]["labels"]["podq.worker"],
                                                      pod["metadata"]["labels"]["podq.endpoint"])
    assert handle.started_at == 1_796_032_800_000


# --- options, errors, CLI ----------------------------------------------------------------------

def test_options_from_the_environment() -> None:
    options = KubernetesOptions.from_env({
        "PODQ_K8S_NAMESPACE": "gpu-workers", "PODQ_K8S_IMAGE": "reg/podq:1", "PODQ_K8S_PYTHON": "python3",
        "PODQ_K8S_IMAGE_PULL_SECRETS": "regcred, ghcr", "PODQ_K8S_GPU_TOLERATIONS": "dedicated=gpu:NoSchedule,spot",
        "PODQ_K8S_PRODUCT_LABEL": "cloud.example.com/accelerator",
        "PODQ_K8S_REDIS_SECRET": "podq-redis/redis-url"})
    assert options == KubernetesOptions(namespace="gpu-workers", image="reg/podq:1", python="python3",
                                        image_pull_secrets=["regcred", "ghcr"],
                                        gpu_tolerations=["dedicated=gpu:NoSchedule", "spot"],
                                        product_label="cloud.example.com/accelerator",
                                        redis_secret="podq-redis/redis-url")
    assert KubernetesOptions.from_env({}) == KubernetesOptions()


@pytest.mark.parametrize("changes,message", [
    ({"namespace": "GPU_workers"}, r"namespace 'GPU_workers' is not a Kubernetes namespace name"),
    ({"image_pull_secrets": ["Reg Cred"]}, r"image pull secret 'Reg Cred' is not a Secret name"),
    ({"gpu_tolerations": ["dedicated=gpu:Never"]}, r"GPU toleration 'dedicated=gpu:Never' is not key=value:Effect"),
    ({"product_label": "gpu product"}, r"GPU product label 'gpu product' is not a label key"),
    ({"redis_secret": "podq-redis"}, r"Redis URL Secret 'podq-redis' is not NAME/KEY"),
])
def test_bad_options_are_refused_when_given(changes: dict, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        KubernetesOptions(**changes)


@pytest.mark.parametrize("code,reason,message,expected", [
    (403, "Forbidden", 'pods is forbidden: User "system:serviceaccount:podq:scaler" cannot create resource "pods"',
     "creating worker w-1: forbidden (pods is forbidden: User \"system:serviceaccount:podq:scaler\" cannot create "
     "resource \"pods\"): give the scaler's service account the RBAC of docs/kubernetes.md: pods: create, get, list, "
     "watch, delete and pods/log: get in the namespace; nodes: get, list (a ClusterRole)"),
    (404, "NotFound", 'namespaces "podq" not found',
     "creating worker w-1: namespaces \"podq\" not found: create the namespace (kubectl create namespace podq) or "
     "point the scaler at another (--namespace, PODQ_K8S_NAMESPACE)"),
    (409, "AlreadyExists", 'pods "podq-w-1-0a1b2c3d" already exists',
     "creating worker w-1: pods \"podq-w-1-0a1b2c3d\" already exists: delete the old pod (kubectl -n podq delete "
     "pod <name>) or use a new worker id"),
    (422, "Invalid", 'Pod "x" is invalid: spec.containers[0].image: Required value',
     "creating worker w-1: the API server refused the pod (Pod \"x\" is invalid: spec.containers[0].image: Required "
     "value): fix the endpoint or template field it names"),
    (401, "Unauthorized", "Unauthorized",
     "creating worker w-1: the Kubernetes API refused the credentials (Unauthorized): renew the kubeconfig's token "
     "or certificate (or the service account's token)"),
    (500, "InternalError", "etcdserver: request timed out",
     "creating worker w-1: the Kubernetes API answered 500 InternalError: etcdserver: request timed out"),
])
def test_api_errors_name_the_fix(code: int, reason: str, message: str, expected: str) -> None:
    assert explain(code, reason, message, "creating worker w-1", "podq") == expected


def kubeconfig(tmp_path: Path, server: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
current-context: test
clusters: [{{name: test, cluster: {{server: "{server}"}}}}]
contexts: [{{name: test, context: {{cluster: test, user: test, namespace: podq}}}}]
users: [{{name: test, user: {{token: not-a-real-token}}}}]
""")
    return str(path)


async def test_a_missing_kubeconfig_says_how_to_give_one(tmp_path: Path) -> None:
    backend = KubernetesBackend(KubernetesOptions(kubeconfig=str(tmp_path / "nope")))
    with pytest.raises(BackendError, match=r"no usable Kubernetes configuration .*nope.*set KUBECONFIG"):
        await backend.list()


async def test_an_api_server_that_does_not_answer_is_named_with_its_address(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on: the connection is refused for real
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = KubernetesBackend(KubernetesOptions(kubeconfig=kubeconfig(tmp_path, f"http://127.0.0.1:{port}")))
    try:
        with pytest.raises(BackendError, match=rf"listing workers: Kubernetes API server at http://127.0.0.1:{port} "
                                               r"not reachable .*: check the kubeconfig's server address"):
            await backend.list()
    finally:
        await backend.close()


async def test_a_worker_without_an_image_is_refused_before_any_call() -> None:
    backend = KubernetesBackend(KubernetesOptions(kubeconfig="/nonexistent"))
    with pytest.raises(BackendError, match=r"worker ep-1-0a1b2c3d: no image: set the template's image_name or PODQ_K8S_IMAGE"):
        await backend.start(worker())


def scaler_args(**flags: object) -> argparse.Namespace:
    return argparse.Namespace(**{"namespace": None, "image_pull_secret": None, "gpu_toleration": None, **flags})


def test_the_scaler_builds_the_kubernetes_backend_with_its_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODQ_K8S_NAMESPACE", "from-env")
    monkeypatch.setenv("PODQ_K8S_IMAGE", "reg/podq:1")
    options = kubernetes_options(scaler_args(namespace="gpu", image_pull_secret=["regcred"],
                                             gpu_toleration=["dedicated=gpu:NoSchedule"]), ["process", "kubernetes"])
    assert options == KubernetesOptions(namespace="gpu", image="reg/podq:1", image_pull_secrets=["regcred"],
                                        gpu_tolerations=["dedicated=gpu:NoSchedule"])
    assert kubernetes_options(scaler_args(), ["kubernetes"]).namespace == "from-env"
    [backend] = make_backends(["kubernetes"], Settings(grace_period_s=12.0), options).values()
    assert isinstance(backend, KubernetesBackend) and backend.places_gpus
    assert (backend.options, backend.grace_s) == (options, 12.0)


def test_kubernetes_flags_without_the_kubernetes_backend_are_refused() -> None:
    with pytest.raises(PodqError, match=r"--namespace, --gpu-toleration: for the kubernetes backend only; add kubernetes to --backends"):
        kubernetes_options(scaler_args(namespace="gpu", gpu_toleration=["x"]), ["docker"])
    assert kubernetes_options(scaler_args(), ["docker"]) is None


def test_podq_logs_takes_the_namespace_for_kubernetes_only() -> None:
    parse = build_parser().parse_args
    options = engine_options(parse(["ep-1", "--backend", "kubernetes", "--namespace", "gpu"]))
    assert isinstance(options, KubernetesOptions) and options.namespace == "gpu"
    with pytest.raises(BackendError, match=r"--namespace applies to --backend kubernetes only, not docker"):
        engine_options(parse(["ep-1", "--namespace", "gpu"]))
    with pytest.raises(BackendError, match=r"--docker-host does not apply to --backend kubernetes"):
        engine_options(parse(["ep-1", "--backend", "kubernetes", "--docker-host", "tcp://h:2375"]))


# --- the checks themselves fail on bad objects ---------------------------------------------------

def good_pod() -> dict:
    return pod_manifest(worker(gpu_count=1, cpus=0.5, memory_mb=512), OPTIONS, ["NVIDIA-L4"], 1, 25.0)


def good_deployment() -> dict:
    labels = {"app.kubernetes.io/name": "podq", "app.kubernetes.io/component": "gateway"}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podq-gateway", "namespace": "podq", "labels": labels},
            "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "gateway", "image": "podq:1",
                                                           "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                                                                         "limits": {"memory": "1Gi"}}}]}}}}


def good_statefulset() -> dict:
    labels = {"app.kubernetes.io/name": "redis"}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "redis", "namespace": "podq"},
            "spec": {"serviceName": "redis", "replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "redis", "image": "redis:7"}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                               "spec": {"accessModes": ["ReadWriteOnce"],
                                                        "resources": {"requests": {"storage": "1Gi"}}}}]}}


def good_service() -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "podq-gateway", "namespace": "podq"},
            "spec": {"selector": {"app.kubernetes.io/name": "podq"}, "ports": [{"port": 80, "targetPort": 8000}]}}


def good_cluster_role() -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "podq:scaler-nodes"},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]}


@pytest.mark.parametrize("make", [good_pod, good_deployment, good_statefulset, good_service, good_cluster_role])
def test_valid_objects_of_every_kind_pass(make) -> None:
    validate(make())


def _set(obj: dict, path: tuple, value: object) -> dict:
    """A copy of `obj` with the field at `path` (keys and list indexes) set to `value`."""
    made = copy.deepcopy(obj)
    node: Any = made
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return made


AFFINITY = ("spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms", 0,
            "matchExpressions", 0)
RESOURCES = ("spec", "containers", 0, "resources")
TOLERATION = ("spec", "tolerations", 0)
BAD = [  # (what, object, message the check must give)
    ("a name over 63 characters", _set(good_pod(), ("metadata", "name"), "p" * 64), r"is 64 characters long"),
    ("an upper-case name", _set(good_pod(), ("metadata", "name"), "Podq-w"), r"is not a DNS-1123 label"),
    ("a name with '_'", _set(good_deployment(), ("metadata", "name"), "podq_gateway"), r"is not a DNS-1123 label"),
    ("a Service name starting with a digit", _set(good_service(), ("metadata", "name"), "1gateway"), r"is not a DNS-1035 label"),
    ("a bad namespace", _set(good_pod(), ("metadata", "namespace"), "Podq"), r"metadata.namespace: name 'Podq'"),
    ("a label key with a space", _set(good_pod(), ("metadata", "labels"), {"my key": "x"}), r"name part 'my key'"),
    ("a label key with a bad prefix", _set(good_pod(), ("metadata", "labels"), {"Example.com/x": "y"}),
     r"prefix 'Example.com' must be a DNS-1123 subdomain"),
    ("a label value over 63", _set(good_pod(), ("metadata", "labels"), {"a": "v" * 64}), r"is 64 characters long"),
    ("a label value with ':'", _set(good_pod(), ("metadata", "labels"), {"podq.endpoint": "team:chat"}),
     r"label value 'team:chat' must be empty or"),
    ("a label value ending in '-'", _set(good_pod(), ("metadata", "labels"), {"a": "x-"}), r"label value 'x-'"),
    ("an annotation key with a space", _set(good_pod(), ("metadata", "annotations"), {"a b": "1"}), r"annotations.a b: key"),
    ("a GPU count that is no quantity", _set(good_pod(), (*RESOURCES, "limits"), {"nvidia.com/gpu": "one"}),
     r"quantity 'one' must match"),
    ("a quantity with two points", _set(good_pod(), (*RESOURCES, "limits", "cpu"), "1.5.2"),
     r"quantity '1.5.2' must match"),
    ("a quantity with a bad suffix", _set(good_pod(), (*RESOURCES, "limits", "memory"), "512MB"),
     r"quantity '512MB' must match"),
    ("a negative quantity", _set(good_pod(), (*RESOURCES, "requests", "memory"), "-1Gi"),
     r"must be greater than or equal to 0"),
    ("a cpu request above its limit", _set(good_pod(), (*RESOURCES, "requests", "cpu"), "2"),
     r"requests.cpu: must be less than or equal to the cpu limit"),
    ("half a GPU", _set(good_pod(), (*RESOURCES, "limits", "nvidia.com/gpu"), "0.5"),
     r"must be a whole number"),
    ("GPU requests unlike limits", _set(good_pod(), (*RESOURCES, "requests", "nvidia.com/gpu"), "0"),
     r"must be equal to the nvidia.com/gpu limit"),
    ("an unqualified extended resource", _set(good_pod(), (*RESOURCES, "limits"), {"gpu": "1"}),
     r"resource name 'gpu' must be a standard resource"),
    ("a node affinity operator Contains", _set(good_pod(), (*AFFINITY, "operator"), "Contains"),
     r"'Contains' is not a valid selector operator: must be one of DoesNotExist, Exists, Gt, In, Lt, NotIn"),
    ("In without values", _set(good_pod(), (*AFFINITY, "values"), []), r"must be specified when operator is In"),
    ("Exists with values", _set(good_pod(), (*AFFINITY, "operator"), "Exists"),
     r"may not be specified when operator is Exists"),
    ("Gt with a word", _set(_set(good_pod(), (*AFFINITY, "operator"), "Gt"), (*AFFINITY, "values"), ["many"]),
     r"must be a single integer when operator is Gt"),
    ("a label selector operator Gt",
     _set(good_pod(), ("spec", "affinity", "podAntiAffinity"), {"requiredDuringSchedulingIgnoredDuringExecution": [
         {"topologyKey": "kubernetes.io/hostname",
          "labelSelector": {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}}]}),
     r"'Gt' is not a valid selector operator: must be one of DoesNotExist, Exists, In, NotIn"),
    ("a toleration operator Equals", _set(good_pod(), (*TOLERATION, "operator"), "Equals"),
     r"tolerations\[0\].operator: 'Equals' must be Exists or Equal"),
    ("Exists with a value", _set(good_pod(), (*TOLERATION, "value"), "x"), r"must be empty when operator is Exists"),
    ("a toleration effect NoScheduling", _set(good_pod(), (*TOLERATION, "effect"), "NoScheduling"),
     r"'NoScheduling' must be one of NoSchedule"),
    ("a selector that misses its template", _set(good_deployment(), ("spec", "selector", "matchLabels"),
                                                 {"app.kubernetes.io/name": "other"}),
     r"selector does not match template labels"),
    ("a pod template with a bad label", _set(good_statefulset(), ("spec", "template", "metadata", "labels"),
                                             {"app.kubernetes.io/name": "redis", "bad key": "x"}),
     r"spec.template.metadata.labels.bad key"),
    ("a claim template name with '_'", _set(good_statefulset(), ("spec", "volumeClaimTemplates", 0, "metadata", "name"), "my_data"),
     r"volumeClaimTemplates\[0\].metadata.name: name 'my_data'"),
    ("a Service selector value with ':'", _set(good_service(), ("spec", "selector"), {"app": "a:b"}),
     r"spec.selector.app: label value 'a:b'"),
    ("an RBAC name with '/'", _set(good_cluster_role(), ("metadata", "name"), "podq/scaler"), r"may not contain '/'"),
    ("no name", _set(good_pod(), ("metadata",), {"namespace": "podq"}), r"metadata.name is required"),
]


@pytest.mark.parametrize("what,obj,message", BAD, ids=[b[0] for b in BAD])
def test_each_own_check_fails_on_a_bad_object(what: str, obj: dict, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_object(obj)


def test_the_schemas_catch_what_they_can_and_miss_what_the_own_checks_catch() -> None:
    with pytest.raises(AssertionError, match=r"fails the Kubernetes 1.30 schema at spec: .*'tolerration' was unexpected"):
        validate(_set(good_pod(), ("spec", "tolerration"), []))
    with pytest.raises(AssertionError, match=r"fails the Kubernetes 1.30 schema at spec.containers.0: .*'imagePolicy'"):
        validate(_set(good_pod(), ("spec", "containers", 0, "imagePolicy"), "Always"))
    schema_only_misses = _set(good_pod(), (*AFFINITY, "operator"), "Contains")
    with pytest.raises(AssertionError, match=r"'Contains' is not a valid selector operator"):
        validate(schema_only_misses)  # the schemas pass it; check_object does not
