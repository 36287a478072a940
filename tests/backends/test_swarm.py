"""The swarm backend: its service spec, listing and GPU placement rules (pure), then real
services on the suite's one-node swarm, with fake GPUs advertised as generic resources.

The engine is the session's own dockerd in swarm mode (tests/backends/docker_engine.py,
`swarm_engine`); the contract suite (test_contract.py) also runs against this backend.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import aiodocker
import msgspec
import pytest

from scaler.backends.base import (
    LABEL_ENDPOINT,
    LABEL_MANAGED,
    LABEL_VERSION,
    LABEL_WORKER,
    BackendError,
    WorkerHandle,
    WorkerSpec,
)
from scaler.backends.docker import DockerBackend, DockerOptions
from scaler.logs_cli import read_logs
from scaler.backends.swarm import (
    GpuNode,
    SwarmBackend,
    SwarmOptions,
    bind_mount,
    explain_swarm,
    gpu_constraints,
    gpu_node,
    handle_of,
    service_name,
    service_spec,
    timestamp_ms,
)
from scaler.cli import make_backends
from serverless.settings import Settings
from tests.backends.docker_engine import FAKE_GPUS, IMAGE, SwarmNode, api, say

H100 = "NVIDIA-H100-80GB-HBM3"
# a container's PID 1 ignores SIGTERM unless it handles it: this one exits at once on stop
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; sleep 60 & wait"]
OPTS = SwarmOptions()


def make_spec(endpoint: str, worker_id: str, **changes: object) -> WorkerSpec:
    spec = WorkerSpec(endpoint_id=endpoint, worker_id=worker_id, version=3,
                      redis_url="redis://127.0.0.1:6379/0", image=IMAGE, handler="/app/h.py",
                      env={"PODQ_HEARTBEAT_MS": "300"})
    return msgspec.structs.replace(spec, **changes)


# -- the service spec, without an engine -----------------------------------------------------


def test_service_spec_carries_labels_resources_constraints_grace_and_no_restart() -> None:
    spec = make_spec("ep1", "w1", labels={"team": "ml"}, gpu_count=2, gpu_names=["H100"])
    options = DockerOptions(binds=["/models:/models:ro", "/data:/data"], scope="s1")
    body = service_spec(spec, options, OPTS, grace_s=7.5, constraints=[f"node.labels.gpu.product=={H100}"],
                        created_at=1234)
    labels = {"team": "ml", LABEL_MANAGED: "1", LABEL_ENDPOINT: "ep1", LABEL_WORKER: "w1",
              LABEL_VERSION: "3", "podq.gpus": "", "podq.started_at": "1234", "podq.scope": "s1"}
    assert body["Name"] == "podq-ep1-w1"
    assert body["Labels"] == labels
    assert body["Mode"] == {"Replicated": {"Replicas": 1}}
    task = body["TaskTemplate"]
    assert task["RestartPolicy"] == {"Condition": "none"}
    assert task["Networks"] == [{"Target": "host"}]
    assert task["Resources"] == {"Reservations": {"GenericResources": [
        {"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}]}}
    assert task["Placement"] == {"Constraints": [f"node.labels.gpu.product=={H100}"]}
    container = task["ContainerSpec"]
    assert container["Image"] == IMAGE
    assert container["Args"] == ["python", "-m", "worker", "/app/h.py"]  # the image's CMD, as Cmd
    assert "Command" not in container  # the image's entrypoint stays, as with the docker backend
    assert container["Labels"] == {**labels, LABEL_MANAGED: "swarm"}  # the docker backend skips it
    assert container["StopSignal"] == "SIGTERM" and container["StopGracePeriod"] == 7_500_000_000
    assert {"PODQ_REDIS_URL=redis://127.0.0.1:6379/0", "PODQ_ENDPOINT_ID=ep1", "PODQ_WORKER_ID=w1",
            "PODQ_WORKER_VERSION=3", "PODQ_HEARTBEAT_MS=300"} <= set(container["Env"])
    assert not any(e.startswith("CUDA_VISIBLE_DEVICES=") for e in container["Env"])  # Swarm picks
    assert not any(e.startswith("PODQ_SWARM_GPU_KIND=") for e in container["Env"])  # the default kind
    assert container["Mounts"] == [
        {"Type": "bind", "Source": "/models", "Target": "/models", "ReadOnly": True},
        {"Type": "bind", "Source": "/data", "Target": "/data"},
    ]


def test_a_cpu_worker_reserves_nothing_and_the_image_cmd_stays() -> None:
    body = service_spec(make_spec("ep1", "w1", handler=None), DockerOptions(network_mode="podq"),
                        SwarmOptions(gpu_kind="AMD-GPU"), grace_s=25, constraints=[], created_at=1)
    task = body["TaskTemplate"]
    assert "Resources" not in task and "Placement" not in task
    assert "Args" not in task["ContainerSpec"]
    assert task["Networks"] == [{"Target": "podq"}]
    gpu = service_spec(make_spec("ep1", "w1", gpu_count=1), DockerOptions(), SwarmOptions(gpu_kind="AMD-GPU"),
                       grace_s=25, constraints=[], created_at=1)
    assert gpu["TaskTemplate"]["Resources"]["Reservations"]["GenericResources"] == [
        {"DiscreteResourceSpec": {"Kind": "AMD-GPU", "Value": 1}}]
    # the worker reads its GPUs from DOCKER_RESOURCE_AMD-GPU, so it is told the kind
    assert "PODQ_SWARM_GPU_KIND=AMD-GPU" in gpu["TaskTemplate"]["ContainerSpec"]["Env"]


def test_cpu_and_memory_limits_are_the_tasks_resource_limits() -> None:
    spec = make_spec("ep1", "w1", gpu_count=1, cpus=2, memory_mb=1024)
    task = service_spec(spec, DockerOptions(), OPTS, grace_s=1, constraints=[], created_at=1)["TaskTemplate"]
    assert task["Resources"]["Limits"] == {"NanoCPUs": 2_000_000_000, "MemoryBytes": 1 << 30}
    assert task["Resources"]["Reservations"]["GenericResources"][0]["DiscreteResourceSpec"]["Value"] == 1


@pytest.mark.parametrize("endpoint, worker", [
    ("ep1", "w1"),
    ("Ep_1", "ep.1-W"),
    ("e" * 40, "e" * 40 + "-0123abcd"),
    ("ep", "x" * 80),
])
def test_service_names_are_dns_labels_and_unique(endpoint: str, worker: str) -> None:
    name = service_name(make_spec(endpoint, worker))
    assert len(name) <= 63 and name[0].isalnum() and name[-1].isalnum()
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    if (endpoint, worker) == ("ep1", "w1"):
        assert name == "podq-ep1-w1"
    else:  # changed or cut: a hash of the ids keeps it apart from its neighbours
        other = service_name(make_spec(endpoint, worker[:-1] + "9"))
        assert other != name and len(other) <= 63


@pytest.mark.parametrize("bind, mount", [
    ("/a:/b", {"Type": "bind", "Source": "/a", "Target": "/b"}),
    ("/a:/b:ro", {"Type": "bind", "Source": "/a", "Target": "/b", "ReadOnly": True}),
    ("/a:/b:rw,rslave", {"Type": "bind", "Source": "/a", "Target": "/b", "BindOptions": {"Propagation": "rslave"}}),
])
def test_binds_become_bind_mounts(bind: str, mount: dict) -> None:
    assert bind_mount(bind) == mount


@pytest.mark.parametrize("bind", ["/a", "/a:/b:z", ":/b"])
def test_binds_swarm_cannot_mount_are_refused(bind: str) -> None:
    with pytest.raises(BackendError, match="bind"):
        bind_mount(bind)


# -- listing: a service and its tasks -> a handle ---------------------------------------------


SERVICE = {"ID": "svc1", "CreatedAt": "2026-11-30T10:00:00.5Z",
           "Spec": {"Labels": {LABEL_MANAGED: "1", LABEL_ENDPOINT: "ep1", LABEL_WORKER: "w1",
                               LABEL_VERSION: "4", "podq.started_at": "1796032800500"}}}
AT = "2026-11-30T10:00:07.250000000Z"
AT_MS = 1796032807250


def task(state: str, desired: str = "running", node: str = "n1", index: int = 10, **status: str) -> dict:
    t = {"ID": f"t-{state}", "ServiceID": "svc1", "NodeID": node, "DesiredState": desired,
         "Version": {"Index": index}, "Status": {"State": state, "Timestamp": AT, **status}}
    if state == "running":  # the ids Swarm assigned (dockerd 20.10 names the field so)
        t["GenericResources"] = [{"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": "GPU-a"}},
                                         {"NamedResourceSpec": {"Kind": "OTHER", "Value": "x"}}]
    return t


REASON = "no suitable node (insufficient resources on 1 node)"
CREATED = 1796032800500


@pytest.mark.parametrize("tasks, running, pending, gpus, started", [
    ([], True, "", [], CREATED),  # Swarm has not made the task yet: starting
    ([task("pending", node="", Message="pending task scheduling", Err=REASON)], True, REASON, [], CREATED),
    ([task("pending", node="", Message="pending task scheduling")], True, "pending task scheduling", [], CREATED),
    ([task("new", node="")], True, "task new", [], CREATED),
    ([task("preparing")], True, "", [], AT_MS),  # on a node: placed, the ready timeout counts
    ([task("running")], True, "", ["GPU-a"], AT_MS),
    ([task("complete", desired="shutdown")], False, "", [], CREATED),
    ([task("failed", Err="task: non-zero exit (1)")], False, "", [], CREATED),
    ([task("shutdown", desired="shutdown")], False, "", [], CREATED),
    ([task("rejected", Err="No such image: x:1")], False, "", [], CREATED),
    # its node went down: Swarm wants it shut down, its last report (running) is stale
    ([task("running", desired="shutdown")], False, "", ["GPU-a"], CREATED),
    # the task Swarm wants running stands for the worker, however old the others are
    ([task("failed", desired="shutdown", index=30), task("running", index=20)], True, "", ["GPU-a"], AT_MS),
])
def test_handle_from_service_and_tasks(tasks, running, pending, gpus, started) -> None:
    assert msgspec.structs.replace(handle_of(SERVICE, tasks), problem="") == WorkerHandle(
        worker_id="w1", endpoint_id="ep1", version=4, ref="svc1", running=running, gpu_uuids=gpus,
        started_at=started, pending=pending)


def test_an_ended_tasks_error_is_the_workers_problem() -> None:
    assert handle_of(SERVICE, [task("rejected", Err="No such image: x:1")]).problem == "No such image: x:1"
    assert handle_of(SERVICE, [task("complete", desired="shutdown")]).problem == ""
    assert handle_of(SERVICE, [task("running")]).problem == ""


def test_assigned_gpus_under_the_api_docs_field_name() -> None:
    running = {**task("running"), "AssignedGenericResources": [
        {"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": "GPU-b"}}]}
    del running["GenericResources"]
    assert handle_of(SERVICE, [running]).gpu_uuids == ["GPU-b"]


def test_without_the_start_label_the_service_creation_time_counts() -> None:
    service = {**SERVICE, "Spec": {"Labels": {LABEL_WORKER: "w1"}}}
    assert handle_of(service, []).started_at == 1796032800500


@pytest.mark.parametrize("stamp, ms", [
    ("2026-11-30T10:00:07.250000000Z", AT_MS),
    ("2026-11-30T10:00:07Z", AT_MS - 250),
    ("2026-11-30T11:00:07.25+01:00", AT_MS),
    ("0001-01-01T00:00:00Z", 0),
    ("", 0),
    (None, 0),
])
def test_engine_timestamps(stamp, ms) -> None:
    assert timestamp_ms(stamp) == ms


# -- which nodes a GPU worker may go to --------------------------------------------------------


def node(ident: str, product: str = "", gpus: int = 2) -> GpuNode:
    return GpuNode(id=ident, name=f"host-{ident}", product=product, gpus=gpus)


KEY = "node.labels.gpu.product"


@pytest.mark.parametrize("nodes, names, constraints", [
    # any model: the reservation alone
    ([node("a", H100), node("b")], None, []),
    # one product value matches: an exact constraint (unlabelled and other nodes never qualify)
    ([node("a", H100), node("b", "NVIDIA-A100-SXM4-80GB"), node("c")], ["H100"], [f"{KEY}=={H100}"]),
    ([node("a", H100), node("b", H100.lower())], ["H100"], [f"{KEY}=={H100}"]),  # Swarm ignores case
    ([node("a", H100), node("b", "NVIDIA-H200")], ["H200"], [f"{KEY}==NVIDIA-H200"]),
    # "L4" is not an L40S: exact model match, not substring
    ([node("a", "NVIDIA-L4"), node("b", "NVIDIA-L40S")], ["L4"], [f"{KEY}==NVIDIA-L4"]),
    # several product values match: the complement of the others, and no unlabelled GPU node
    ([node("a", H100), node("b", "NVIDIA-H100-PCIe"), node("c", "NVIDIA-A100-PCIE-40GB"), node("d"),
      node("e", "NVIDIA-L4", gpus=0)],
     ["H100"], [f"{KEY}!=NVIDIA-A100-PCIE-40GB", "node.id!=d"]),
    ([node("a", H100), node("b", "NVIDIA-H200"), node("c", "NVIDIA-GeForce-RTX-4090")],
     ["H100", "H200"], [f"{KEY}!=NVIDIA-GeForce-RTX-4090"]),
])
def test_gpu_constraints(nodes, names, constraints) -> None:
    assert gpu_constraints(nodes, names, OPTS) == constraints


def test_no_node_of_the_model_names_what_the_swarm_has() -> None:
    nodes = [node("a", H100), node("b", "NVIDIA-A100-SXM4-80GB"), node("c"), node("d", "NVIDIA-L4", gpus=0)]
    with pytest.raises(BackendError) as caught:
        gpu_constraints(nodes, ["RTX 4090"], OPTS)
    message = str(caught.value)
    assert message.startswith("no swarm node has a GPU of RTX 4090: the gpu.product labels of its GPU "
                              f"nodes are NVIDIA-A100-SXM4-80GB, {H100}; GPU nodes without the label: host-c")
    assert "docker node update --label-add gpu.product=" in message


def test_a_swarm_without_gpu_nodes_names_the_dockerd_flag() -> None:
    with pytest.raises(BackendError, match="--node-generic-resource NVIDIA-GPU=<GPU uuid>"):
        gpu_constraints([node("a", H100, gpus=0)], None, OPTS)


def test_node_facts_from_the_engine() -> None:
    api_node = {"ID": "n1", "Spec": {"Labels": {"gpu.product": H100}},
                "Description": {"Hostname": "gpu-1", "Resources": {"GenericResources": [
                    {"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": "GPU-0"}},
                    {"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": "GPU-1"}},
                    {"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}},
                    {"DiscreteResourceSpec": {"Kind": "SSD", "Value": 1}}]}}}
    assert gpu_node(api_node, OPTS) == GpuNode(id="n1", name="gpu-1", product=H100, gpus=4)
    assert gpu_node({"ID": "n2"}, SwarmOptions(product_label="gpu.model")) == GpuNode(id="n2", name="n2")


def test_options_from_env_and_the_cli() -> None:
    assert SwarmOptions.from_env({}) == SwarmOptions(gpu_kind="NVIDIA-GPU", product_label="gpu.product")
    assert SwarmOptions.from_env({"PODQ_SWARM_GPU_KIND": "GPU", "PODQ_SWARM_PRODUCT_LABEL": "model"}) == \
        SwarmOptions(gpu_kind="GPU", product_label="model")
    [backend] = make_backends(["swarm"], Settings(grace_period_s=12.0)).values()
    assert isinstance(backend, SwarmBackend) and backend.places_gpus and backend.name == "swarm"
    assert backend.grace_s == 12.0
    again = SwarmBackend(**backend.constructor_args())
    assert (again.options, again.swarm, again.grace_s) == (backend.options, backend.swarm, 12.0)


def test_swarm_errors_name_the_fix() -> None:
    not_manager = aiodocker.DockerError(503, {"message": "This node is not a swarm manager. Use "
                                                         '"docker swarm init" or "docker swarm join"'})
    assert "is not a swarm manager" in explain_swarm(not_manager, "creating worker w1", "unix:///s", None)
    assert "run `docker swarm init` there" in explain_swarm(not_manager, "creating worker w1", "unix:///s", None)
    taken = aiodocker.DockerError(409, {"message": "name conflicts with an existing object"})
    assert "docker service rm" in explain_swarm(taken, "creating worker w1", "unix:///s", None)


async def test_unreachable_engine_names_the_fix(tmp_path) -> None:
    backend = SwarmBackend(DockerOptions(host=f"unix://{tmp_path}/absent.sock"))
    try:
        with pytest.raises(BackendError, match="Docker engine not reachable at unix://"):
            await backend.list()
    finally:
        await backend.close()


# -- real services on the suite's swarm --------------------------------------------------------


@pytest.fixture
async def swarm(swarm_backend: SwarmBackend, endpoint: str) -> AsyncIterator[SwarmBackend]:
    """The swarm backend; the endpoint's services are removed after the test."""
    yield swarm_backend
    for handle in await swarm_backend.list():
        if handle.endpoint_id == endpoint:
            await swarm_backend.stop(handle, 0)
    await swarm_backend.close()


@pytest.fixture
def h100_node(swarm_engine: SwarmNode) -> Iterator[SwarmNode]:
    """The swarm's node, labelled as a node of two H100s (the fake GPUs its dockerd advertises)."""
    have = swarm_engine.generic_resources()
    if have != FAKE_GPUS:
        pytest.skip(f"the swarm node advertises {have or 'no'} NVIDIA-GPU resources, not {FAKE_GPUS}: "
                    "only the suite's own dockerd is started with --node-generic-resource")
    swarm_engine.set_label("gpu.product", H100)
    yield swarm_engine
    swarm_engine.set_label("gpu.product", None)


async def until(predicate, timeout: float = 20, every: float = 0.1):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if value := await predicate():
            return value
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(every)


def container_env(swarm_engine: SwarmNode, worker_id: str) -> list[str]:
    """The env of the worker's task container on this node."""
    filters = quote(json.dumps({"label": [f"{LABEL_WORKER}={worker_id}"]}))
    status, body = api(swarm_engine.engine.socket_path, "GET", f"/containers/json?all=1&filters={filters}")
    [summary] = msgspec.json.decode(body)
    status, body = api(swarm_engine.engine.socket_path, "GET", f"/containers/{summary['Id']}/json")
    return msgspec.json.decode(body)["Config"]["Env"]


@pytest.mark.slow
async def test_gpus_are_placed_by_swarm_and_a_third_worker_waits_for_one(
        swarm: SwarmBackend, h100_node: SwarmNode, endpoint: str, request) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    sleeper = dict(command=SLEEP, gpu_count=1, gpu_names=["H100"])
    with pytest.raises(BackendError, match=f"no swarm node has a GPU of A100: .* are {H100}"):
        await swarm.start(make_spec(endpoint, "w-a100", **{**sleeper, "gpu_names": ["A100"]}))
    started = [await swarm.start(make_spec(endpoint, f"w-gpu{i}", **sleeper)) for i in range(3)]
    assert all(h.pending == "" and h.running for h in started)

    async def two_placed_one_waiting() -> list[WorkerHandle] | None:
        mine = sorted((h for h in await swarm.list() if h.endpoint_id == endpoint), key=lambda h: h.pending)
        placed = [h for h in mine if h.gpu_uuids]
        if len(mine) == 3 and len(placed) == 2 and "insufficient resources" in mine[2].pending:
            return mine
        return None

    first, second, waiting = await until(two_placed_one_waiting)
    placed_in = loop.time() - began
    assert sorted(first.gpu_uuids + second.gpu_uuids) == FAKE_GPUS
    assert waiting.pending == "no suitable node (insufficient resources on 1 node)"
    assert waiting.running and waiting.gpu_uuids == []
    for h in (first, second):  # Swarm's contract: the ids in DOCKER_RESOURCE_<kind>
        env = await until(lambda h=h: _env_when_running(h100_node, h.worker_id))
        assert f"DOCKER_RESOURCE_NVIDIA-GPU={h.gpu_uuids[0]}" in env
    # a fresh backend (a restarted scaler) sees the same: nothing is kept in memory
    fresh = SwarmBackend(**swarm.constructor_args())
    try:
        assert sorted((h.worker_id, h.pending, h.gpu_uuids) for h in await fresh.list()
                      if h.endpoint_id == endpoint) == sorted(
            (h.worker_id, h.pending, h.gpu_uuids) for h in (first, second, waiting))
    finally:
        await fresh.close()

    freed_at = loop.time()
    await swarm.stop(first, 2)

    async def placed_now() -> WorkerHandle | None:
        [h] = [h for h in await swarm.list() if h.worker_id == waiting.worker_id]
        return h if h.gpu_uuids else None

    now_placed = await until(placed_now)
    assert now_placed.pending == "" and now_placed.gpu_uuids == first.gpu_uuids
    say(request.config, f"swarm: 2 of 3 GPU workers placed and 1 pending in {placed_in:.2f} s; "
                        f"the pending one placed {loop.time() - freed_at:.2f} s after a GPU was freed")


async def _env_when_running(node: SwarmNode, worker_id: str) -> list[str] | None:
    try:
        return container_env(node, worker_id)
    except ValueError:  # no container yet (the task is still being prepared)
        return None


async def test_a_service_as_the_engine_shows_it_its_logs_and_the_docker_backend_ignores_it(
        swarm: SwarmBackend, swarm_engine: SwarmNode, endpoint: str) -> None:
    spec = make_spec(endpoint, "w-logs", command=["sh", "-c", f"echo hello-from-swarm; {SLEEP[2]}"])
    handle = await swarm.start(spec)
    async with aiodocker.Docker(url=swarm_engine.engine.host) as docker:
        service = await docker.services.inspect(handle.ref)
    task = service["Spec"]["TaskTemplate"]
    assert service["Spec"]["Name"] == f"podq-{endpoint}-w-logs"
    assert task["RestartPolicy"]["Condition"] == "none"
    assert task["ContainerSpec"]["StopGracePeriod"] == int(swarm.grace_s * 1e9)
    assert task["ContainerSpec"]["Labels"][LABEL_WORKER] == "w-logs"

    async def logged() -> list[tuple[str, str]]:
        return [pair for pair in await swarm.logs(endpoint) if pair[1].endswith("hello-from-swarm")]

    [(worker, line)] = await until(logged)
    assert worker == "w-logs" and line.split(" ", 1)[0].endswith("Z")  # the engine's timestamp
    printed = await read_logs(endpoint, 50, swarm_engine.engine.options(), "swarm")  # podq logs
    assert any(row.startswith("w-logs | ") and row.endswith("hello-from-swarm") for row in printed)
    docker = DockerBackend(swarm_engine.engine.options())
    try:  # the task's container is podq.managed=swarm: never a docker-backend worker
        assert [h for h in await docker.list() if h.endpoint_id == endpoint] == []
    finally:
        await docker.close()
    await swarm.stop(handle, 1)
    assert [h for h in await swarm.list() if h.endpoint_id == endpoint] == []
