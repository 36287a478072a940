"""Workers as Docker Swarm services: the swarm's scheduler places them, GPUs included.

Each worker is one service (replicas 1) on a swarm manager, through the Docker Engine API
(aiodocker). Its container is the docker backend's (`scaler/backends/docker.py`
`container_config`: image, command, env, labels, binds, network), with two differences:

- `RestartPolicy` condition `none`: podq owns retries, so every start is a fresh task, and a
  task that ended is listed as not running (the scaler removes the service and starts another);
- `StopGracePeriod` is the backend's `grace_s`: Swarm reads it when the service is removed, so
  it is fixed at create (`stop(handle, grace_s)` can only wait, not change it).

`list()` finds services by podq's labels, and their tasks, so a new backend instance (a
restarted scaler) adopts what exists; nothing in memory is the truth. A task the scheduler has
not put on a node (state new/allocated/pending) lists as `pending` with Swarm's reason ("no
suitable node (insufficient resources on 1 node)"); a running one with the GPUs Swarm assigned
it; an ended one (complete, failed, shutdown, rejected, ...) with running=False.

The task's container carries podq's labels too, except `podq.managed`, which is `swarm` there
instead of `1`: the docker backend lists containers by `podq.managed=1`, and must not take a
swarm task's container (on an engine both backends use) for a worker of its own.

GPUs are Swarm *generic resources*: each GPU node's dockerd advertises its devices
(`--node-generic-resource NVIDIA-GPU=<uuid>`, one per GPU), a worker reserves `gpu_count` of
that kind, and Swarm hands the chosen ids to the container as `DOCKER_RESOURCE_NVIDIA-GPU`.
Isolation (which GPUs the container can see) is up to the NVIDIA runtime's config on the node
(docs/swarm.md).

The model (`WorkerSpec.gpu_names`) is a node label, `gpu.product` by default, holding the
product name as NVIDIA writes it (`NVIDIA-H100-80GB-HBM3`, matched with `scaler.gpus.same_model`).
Swarm's constraints are ANDed and have no "in" operator, so "any of these models" cannot be said
directly. The backend lists the nodes at each start and, among the nodes that advertise GPUs:

- no labelled node has a wanted model: `BackendError` naming the products the swarm has (the
  fix: label the nodes, or change the endpoint's gpu_ids);
- the wanted models appear under exactly one label value (the usual case): the constraint
  `node.labels.gpu.product==<value>`. It is exact: unlabelled nodes, and nodes that join
  later with another product, are never chosen;
- under several values (H100 asked for, and the swarm has both `...-H100-80GB-HBM3` and
  `...-H100-PCIe`; or "H100,H200"): the complement, `node.labels.gpu.product!=<value>` for
  every other product seen, and `node.id!=<id>` for every GPU node without the label (a missing
  label reads as "" in Swarm, so `!=` alone would admit it). This is exact for the nodes that
  exist at start. Its one gap: while the worker waits for placement, a node that joins with a
  product not seen before, or without the label, could take it; where that matters, give the
  nodes of the models an endpoint accepts one common label and one product value each.
- `gpu_names` None (gpu_ids ANY): no constraint; `gpu_count` 0: no reservation either.
  A swarm where no node advertises the GPU kind at all is an error naming the dockerd flag.

Every engine error becomes a `BackendError` (the docker backend's `explain`, plus the swarm
cases: not a manager, a name already taken).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import aiodocker
import aiohttp
import msgspec

from scaler.backends.base import (
    LABEL_ENDPOINT,
    LABEL_MANAGED,
    LABEL_VERSION,
    LABEL_WORKER,
    BackendError,
    WorkerHandle,
    WorkerSpec,
    refuse_volume_and_ports,
)
from scaler.backends.docker import (
    LABEL_SCOPE,
    LABEL_STARTED,
    DockerOptions,
    log_time,
    container_config,
    engine_url,
    explain,
    worker_labels,
)
from scaler.gpus import same_model
from serverless.store import now_ms

DEFAULT_GPU_KIND = "NVIDIA-GPU"
DEFAULT_PRODUCT_LABEL = "gpu.product"
DEFAULT_GRACE_S = 25.0  # Settings.grace_period_s's default
# `podq.managed` on a task's container: not "1", so the docker backend never lists it
CONTAINER_MANAGED = "swarm"
MAX_NAME = 63  # Swarm service names are DNS labels
# how long stop() waits, past the grace period, for the task's container to exit
STOP_MARGIN_S = 10.0
STOP_POLL_S = 0.2

# Task states (swarmkit's TaskState, lower-cased by the Engine API), in order.
_UNPLACED = frozenset({"new", "allocated", "pending"})  # no node yet: the scheduler's turn
_STARTING = frozenset({"assigned", "accepted", "preparing", "ready", "starting"})  # on a node
_RUNNING = "running"


class SwarmOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What only the swarm backend reads (the rest is the docker backend's `DockerOptions`).

    Attributes:
        gpu_kind: the generic resource kind GPU nodes advertise (`--node-generic-resource
            <kind>=<uuid>`); Swarm gives the container `DOCKER_RESOURCE_<kind>`.
        product_label: the node label holding the GPU model (`node.labels.<label>`).
    """

    gpu_kind: str = DEFAULT_GPU_KIND
    product_label: str = DEFAULT_PRODUCT_LABEL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SwarmOptions:
        """Options from PODQ_SWARM_GPU_KIND and PODQ_SWARM_PRODUCT_LABEL; unset ones keep defaults."""
        env = os.environ if environ is None else environ
        return cls(gpu_kind=env.get("PODQ_SWARM_GPU_KIND") or DEFAULT_GPU_KIND,
                   product_label=env.get("PODQ_SWARM_PRODUCT_LABEL") or DEFAULT_PRODUCT_LABEL)


class GpuNode(msgspec.Struct, frozen=True, kw_only=True):
    """What placement needs to know of one swarm node."""

    id: str
    name: str  # its hostname, for messages
    product: str = ""  # the product label's value; '' when the node has none
    gpus: int = 0  # generic resources of the GPU kind it advertises


def gpu_node(node: Mapping[str, Any], options: SwarmOptions) -> GpuNode:
    """One entry of `GET /nodes` as a GpuNode (pure)."""
    description = node.get("Description") or {}
    count = 0
    for resource in (description.get("Resources") or {}).get("GenericResources") or []:
        named, discrete = resource.get("NamedResourceSpec"), resource.get("DiscreteResourceSpec")
        if named and named.get("Kind") == options.gpu_kind:
            count += 1
        elif discrete and discrete.get("Kind") == options.gpu_kind:
            count += int(discrete.get("Value") or 0)
    labels = (node.get("Spec") or {}).get("Labels") or {}
    return GpuNode(id=node.get("ID", ""), name=description.get("Hostname") or node.get("ID", ""),
                   product=labels.get(options.product_label, ""), gpus=count)


def gpu_constraints(nodes: list[GpuNode], gpu_names: list[str] | None, options: SwarmOptions) -> list[str]:
    """Placement constraints that keep a GPU worker on nodes of the models it accepts (pure;
    the choice is explained in the module's docstring).

    Args:
        nodes: the swarm's nodes.
        gpu_names: the models the worker accepts (exact, `same_model`); None: any.
        options: the GPU kind and the product label.

    Returns:
        Constraints (`node.labels.<label>==<product>`, or the complement of the other products).

    Raises:
        BackendError: no node advertises GPUs, or none of the wanted models; the message names
            what the swarm has and the fix.
    """
    key = f"node.labels.{options.product_label}"
    gpu = [n for n in nodes if n.gpus]
    if not gpu:
        raise BackendError(
            f"no node of the swarm advertises {options.gpu_kind} resources: start each GPU node's dockerd "
            f"with --node-generic-resource {options.gpu_kind}=<GPU uuid> for each of its GPUs "
            "(or node-generic-resources in daemon.json), see docs/swarm.md")
    if gpu_names is None:
        return []
    products: dict[str, str] = {}  # Swarm compares constraint values ignoring case
    for n in gpu:
        if n.product:
            products.setdefault(n.product.casefold(), n.product)
    wanted = {k: v for k, v in products.items() if any(same_model(w, v) for w in gpu_names)}
    if not wanted:
        have = ", ".join(sorted(products.values())) or "none"
        unlabelled = sorted(n.name for n in gpu if not n.product)
        without = f"; GPU nodes without the label: {', '.join(unlabelled)}" if unlabelled else ""
        raise BackendError(
            f"no swarm node has a GPU of {', '.join(gpu_names)}: the {options.product_label} labels of "
            f"its GPU nodes are {have}{without}; label each GPU node with its model "
            f"(docker node update --label-add {options.product_label}=NVIDIA-H100-80GB-HBM3 <node>), "
            "or change the endpoint's gpu_ids")
    if len(wanted) == 1:
        return [f"{key}=={next(iter(wanted.values()))}"]
    others = sorted(v for k, v in products.items() if k not in wanted)
    unlabelled_ids = sorted(n.id for n in gpu if not n.product)
    return [f"{key}!={p}" for p in others] + [f"node.id!={i}" for i in unlabelled_ids]


def service_name(spec: WorkerSpec) -> str:
    """`podq-<endpoint>-<worker>`, lower-case letters, digits and '-' (a DNS label, as Swarm
    wants), at most 63 characters; a name that had to be changed or cut ends in a hash of the
    ids, so two workers never get the same name."""
    raw = f"podq-{spec.endpoint_id}-{spec.worker_id}"
    safe = re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")
    if safe == raw and len(safe) <= MAX_NAME:
        return safe
    digest = hashlib.sha256(f"{spec.endpoint_id}\0{spec.worker_id}".encode()).hexdigest()[:8]
    return f"{safe[:MAX_NAME - len(digest) - 1].rstrip('-')}-{digest}"


def bind_mount(bind: str) -> dict[str, Any]:
    """A `HostConfig.Binds` string ("/src:/dst[:ro]") as a service's `Mounts` entry (pure)."""
    parts = bind.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise BackendError(f"bind {bind!r} is not /host/path:/container/path[:ro]")
    mount: dict[str, Any] = {"Type": "bind", "Source": parts[0], "Target": parts[1]}
    for option in (parts[2].split(",") if len(parts) == 3 else []):
        if option == "ro":
            mount["ReadOnly"] = True
        elif option in ("rprivate", "private", "rshared", "shared", "rslave", "slave"):
            mount["BindOptions"] = {"Propagation": option}
        elif option != "rw":
            raise BackendError(f"bind {bind!r}: option {option!r} is not supported by Swarm mounts "
                               "(use ro, rw or a propagation mode)")
    return mount


def service_spec(spec: WorkerSpec, options: DockerOptions, swarm: SwarmOptions, grace_s: float,
                 constraints: list[str], created_at: int) -> dict[str, Any]:
    """The body of `POST /services/create` for one worker (pure).

    Args:
        spec: the worker (`gpu_count` GPUs; `gpu_uuids` is not used: Swarm picks them).
        options: image, network, binds, python and scope, as for the docker backend.
        swarm: the GPU kind.
        grace_s: seconds between SIGTERM and SIGKILL when the service is removed.
        constraints: placement constraints (`gpu_constraints`).
        created_at: ms since the epoch, kept in a label.

    Returns:
        The service spec.
    """
    container = container_config(spec, options, created_at)
    labels = worker_labels(spec, options.scope, created_at)
    container_spec: dict[str, Any] = {
        "Image": container["Image"],
        # a worker finds its GPUs as DOCKER_RESOURCE_<kind> (serverless/nvml.adopt_swarm_gpus)
        "Env": container["Env"] + ([f"PODQ_SWARM_GPU_KIND={swarm.gpu_kind}"]
                                   if swarm.gpu_kind != DEFAULT_GPU_KIND else []),
        "Labels": {**labels, LABEL_MANAGED: CONTAINER_MANAGED},
        "StopSignal": container["StopSignal"],
        "StopGracePeriod": int(max(0.0, grace_s) * 1e9),  # nanoseconds
        "Mounts": [bind_mount(b) for b in container["HostConfig"]["Binds"]],
    }
    if "Cmd" in container:  # Args replaces the image's CMD, as Cmd does for a container
        container_spec["Args"] = container["Cmd"]
    task: dict[str, Any] = {
        "ContainerSpec": container_spec,
        "RestartPolicy": {"Condition": "none"},  # podq owns retries: every start is a fresh task
        "Networks": [{"Target": options.network_mode}],
    }
    resources: dict[str, Any] = {}
    if spec.gpu_count:
        resources["Reservations"] = {"GenericResources": [
            {"DiscreteResourceSpec": {"Kind": swarm.gpu_kind, "Value": spec.gpu_count}}]}
    limits = {"NanoCPUs": container["HostConfig"].get("NanoCpus"),
              "MemoryBytes": container["HostConfig"].get("Memory")}
    if any(limits.values()):  # the container's limits, as Swarm's task resources
        resources["Limits"] = {k: v for k, v in limits.items() if v}
    if resources:
        task["Resources"] = resources
    if constraints:
        task["Placement"] = {"Constraints": list(constraints)}
    return {"Name": service_name(spec), "Labels": labels, "TaskTemplate": task,
            "Mode": {"Replicated": {"Replicas": 1}}}


def timestamp_ms(stamp: str | None) -> int:
    """An Engine API RFC 3339 time ("2026-11-30T10:11:12.123456789Z") in ms since the epoch;
    0 for none or Go's zero time (pure)."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$", stamp or "")
    if not m:
        return 0
    whole, fraction, zone = m.groups()
    when = datetime.fromisoformat(whole + ("+00:00" if zone in (None, "Z") else zone))
    ms = int(when.timestamp()) * 1000 + int((fraction or "0")[:3].ljust(3, "0"))
    return max(0, ms)


def _task_state(task: Mapping[str, Any]) -> str:
    return str((task.get("Status") or {}).get("State") or "")


def _is_alive(task: Mapping[str, Any]) -> bool:
    """The task's container may exist and run: it is on a node and has not ended."""
    state = _task_state(task)
    return bool(task.get("NodeID")) and (state in _STARTING or state == _RUNNING)


def current_task(tasks: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The service's task that stands for the worker: the one Swarm wants running, else the
    newest (with restart condition none there is normally only one)."""
    if not tasks:
        return None
    def order(t: Mapping[str, Any]) -> tuple[bool, int]:
        return ((t.get("DesiredState") == _RUNNING), int((t.get("Version") or {}).get("Index") or 0))
    return max(tasks, key=order)


def assigned_gpus(task: Mapping[str, Any], gpu_kind: str) -> list[str]:
    """The GPU ids Swarm gave the task (its `DOCKER_RESOURCE_<kind>`), [] for none."""
    # the API names the field GenericResources (20.10) or AssignedGenericResources (its docs)
    assigned = task.get("AssignedGenericResources") or task.get("GenericResources") or []
    return [r["NamedResourceSpec"]["Value"] for r in assigned
            if (r.get("NamedResourceSpec") or {}).get("Kind") == gpu_kind]


_GOING = frozenset({"shutdown", "remove"})  # desired states of a task Swarm is ending


def handle_of(service: Mapping[str, Any], tasks: list[Mapping[str, Any]],
              gpu_kind: str = DEFAULT_GPU_KIND) -> WorkerHandle:
    """A WorkerHandle from one entry of `GET /services` and its tasks (pure).

    - no task yet (Swarm creates it right after the service): starting, from the service's
      creation;
    - a task not on a node: `pending` is Swarm's reason (the task's Err, else its Message);
    - on a node, starting or running: placed, `started_at` the task's last state change;
    - ended (complete, failed, shutdown, rejected, orphaned, remove), or still reported running
      while Swarm wants it shut down (its node went down: the state stays stale until the node
      returns): running=False.
    """
    labels = (service.get("Spec") or {}).get("Labels") or {}
    created = int(labels.get(LABEL_STARTED) or 0) or timestamp_ms(service.get("CreatedAt"))
    base = WorkerHandle(worker_id=labels.get(LABEL_WORKER, ""), endpoint_id=labels.get(LABEL_ENDPOINT, ""),
                        version=int(labels.get(LABEL_VERSION) or 0), ref=service.get("ID", ""),
                        started_at=created)
    task = current_task(tasks)
    if task is None:
        return base
    status = task.get("Status") or {}
    state = _task_state(task)
    if state in _UNPLACED:
        reason = status.get("Err") or status.get("Message") or f"task {state}"
        return msgspec.structs.replace(base, pending=str(reason))
    if (state in _STARTING or state == _RUNNING) and task.get("DesiredState") not in _GOING:
        return msgspec.structs.replace(base, gpu_uuids=assigned_gpus(task, gpu_kind),
                                       started_at=timestamp_ms(status.get("Timestamp")) or created)
    return msgspec.structs.replace(base, running=False, gpu_uuids=assigned_gpus(task, gpu_kind),
                                   problem=str(status.get("Err") or ""))


def explain_swarm(error: aiodocker.DockerError, doing: str, host: str, image: str | None) -> str:
    """`explain` with the swarm's own failures first (pure)."""
    message = str(error.message).strip()
    if error.status == 503 and "swarm" in message.lower():
        return (f"{doing}: the Docker engine at {host} is not a swarm manager ({message}): run "
                "`docker swarm init` there, or point PODQ_DOCKER_HOST at a manager of the swarm")
    if error.status == 409:
        return f"{doing}: {message}: remove the old service (docker service rm <name>) or use a new worker id"
    return explain(error, doing, host, image)


@contextmanager
def _engine_errors(doing: str, host: str, image: str | None = None) -> Iterator[None]:
    """The one place engine errors become BackendError."""
    try:
        yield
    except aiodocker.DockerError as e:
        raise BackendError(explain_swarm(e, doing, host, image)) from e
    except (aiohttp.ClientError, OSError) as e:
        raise BackendError(f"{doing}: Docker engine at {host} failed: {e!r}") from e


class SwarmBackend:
    """Workers as one-replica services on a Docker Swarm, placed by the swarm's scheduler.

    Args:
        options: image, network, binds, python, scope and the engine (a manager of the swarm);
            by default read from PODQ_DOCKER_* and DOCKER_HOST, as for the docker backend.
        swarm: the GPU kind and the product label; by default from PODQ_SWARM_*.
        grace_s: the services' StopGracePeriod (SIGTERM to SIGKILL when a worker is stopped).
    """

    name = "swarm"
    places_gpus = True  # the swarm's scheduler picks nodes and GPUs (generic resources)

    def __init__(self, options: DockerOptions | None = None, swarm: SwarmOptions | None = None,
                 grace_s: float = DEFAULT_GRACE_S) -> None:
        self.options = options or DockerOptions.from_env()
        self.swarm = swarm or SwarmOptions.from_env()
        self.grace_s = grace_s
        self.host = engine_url(self.options.host)
        self._docker: aiodocker.Docker | None = None

    def constructor_args(self) -> dict[str, Any]:
        """Keyword arguments that build an equal backend (`type(b)(**b.constructor_args())`)."""
        return {"options": self.options, "swarm": self.swarm, "grace_s": self.grace_s}

    def _client(self) -> aiodocker.Docker:
        # created on first use: aiodocker opens an aiohttp session, which wants a running loop
        if self._docker is None:
            try:
                self._docker = aiodocker.Docker(url=self.host)
            except ValueError as e:
                raise BackendError(f"Docker host {self.host!r} is not an engine address: use "
                                   "unix:///path/to/docker.sock or tcp://host:2375") from e
        return self._docker

    async def start(self, spec: WorkerSpec) -> WorkerHandle:
        """Create the worker's service; Swarm places its task (see `list()` for the outcome).

        Args:
            spec: the worker; `gpu_count` and `gpu_names` say which GPUs it needs.

        Returns:
            Its handle; `ref` is the service id.
        """
        refuse_volume_and_ports(spec, self.name)
        image = spec.image or self.options.image
        if not image:
            raise BackendError(f"worker {spec.worker_id}: no image: set the template's image_name "
                               "or PODQ_DOCKER_IMAGE to a worker image (see docs/docker.md)")
        constraints: list[str] = []
        if spec.gpu_count:
            with _engine_errors(f"listing the swarm's nodes for worker {spec.worker_id}", self.host):
                nodes = await self._client().nodes.list()
            constraints = gpu_constraints([gpu_node(n, self.swarm) for n in nodes], spec.gpu_names, self.swarm)
        created = now_ms()
        body = service_spec(spec, self.options, self.swarm, self.grace_s, constraints, created)
        task = body["TaskTemplate"]
        # aiodocker takes the env as a mapping and writes the API's list itself
        env = dict(item.split("=", 1) for item in task["ContainerSpec"]["Env"])
        task = {**task, "ContainerSpec": {**task["ContainerSpec"], "Env": env}}
        with _engine_errors(f"creating worker {spec.worker_id}", self.host, image):
            made = await self._client().services.create(task, name=body["Name"], labels=body["Labels"],
                                                        mode=body["Mode"])
        return WorkerHandle(worker_id=spec.worker_id, endpoint_id=spec.endpoint_id, version=spec.version,
                            ref=made["ID"], started_at=created)

    async def stop(self, handle: WorkerHandle, grace_s: float) -> None:
        """Remove the worker's service: Swarm sends SIGTERM (the worker drains), then SIGKILL
        after the StopGracePeriod set at create. Waits until the task's container has exited.

        Args:
            handle: the worker; one already gone is not an error.
            grace_s: bounds the wait (with the backend's own grace, plus a margin); the engine
                applies the grace the service was created with.
        """
        with _engine_errors(f"stopping worker {handle.worker_id}", self.host):
            try:
                await self._client().services.delete(handle.ref)
            except aiodocker.DockerError as e:
                if e.status != 404:
                    raise
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(grace_s, self.grace_s) + STOP_MARGIN_S
        while loop.time() < deadline:
            # tasks outlive their service until they have shut down (desired state "remove")
            tasks = await self._tasks({LABEL_WORKER: handle.worker_id})
            if not any(t.get("ServiceID") == handle.ref and _is_alive(t) for t in tasks):
                return
            await asyncio.sleep(STOP_POLL_S)

    async def list(self) -> list[WorkerHandle]:
        """Every podq service on the swarm (in this scope), with its task's state."""
        wanted = self._labels({})
        with _engine_errors("listing workers", self.host):
            services = await self._client().services.list(filters={"label": wanted})
        by_service: dict[str, list[Mapping[str, Any]]] = {}
        for task in await self._tasks({}):
            by_service.setdefault(task.get("ServiceID", ""), []).append(task)
        return [handle_of(s, by_service.get(s.get("ID", ""), []), self.swarm.gpu_kind) for s in services]

    async def logs(self, endpoint_id: str, tail: int = 100) -> list[tuple[str, str]]:
        """The last `tail` log lines of each of the endpoint's services, oldest first (the docker
        backend's shape).

        Args:
            endpoint_id: the endpoint.
            tail: lines per worker.

        Returns:
            (worker_id, line) pairs; each line starts with the engine's RFC 3339 timestamp.
        """
        with _engine_errors(f"listing workers of {endpoint_id}", self.host):
            services = await self._client().services.list(
                filters={"label": self._labels({LABEL_ENDPOINT: endpoint_id})})
        lines: list[tuple[str, str]] = []
        for service in services:
            worker = ((service.get("Spec") or {}).get("Labels") or {}).get(LABEL_WORKER, "")
            with _engine_errors(f"reading logs of worker {worker}", self.host):
                chunks = await self._client().services.logs(
                    service["ID"], stdout=True, stderr=True, timestamps=True, tail=str(max(0, tail)))
            lines += [(worker, line) for line in "".join(chunks).splitlines() if line]  # type: ignore[arg-type]
        return sorted(lines, key=lambda pair: log_time(pair[1]))

    def _labels(self, labels: dict[str, str]) -> list[str]:
        wanted = {LABEL_MANAGED: "1", **labels}
        if self.options.scope:
            wanted[LABEL_SCOPE] = self.options.scope
        return [f"{k}={v}" for k, v in wanted.items()]

    async def _tasks(self, labels: dict[str, str]) -> list[Mapping[str, Any]]:
        # a task's `label` filter matches its service's labels (swarmkit ListTasks)
        with _engine_errors("listing the swarm's tasks", self.host):
            return await self._client().tasks.list(filters={"label": self._labels(labels)})

    async def close(self) -> None:
        """Close the connection to the engine; services keep running."""
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

