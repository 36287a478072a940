"""Workers as Docker containers, through the Docker Engine API (aiodocker).

Each worker is one container of the template's image running `python -m worker <handler>`
(or the spec's command, or the image's own CMD), with podq's labels on it. `list()` finds
containers by label, stopped ones included, so a restarted scaler adopts what exists. GPUs are
given as an NVIDIA device request by NVML uuid, the Engine API's form of `docker run --gpus`.

Every error the engine returns becomes a `BackendError` in one place, `_engine_errors`, with a
message that names the fix.

A template's container settings (volume, ports, disk) are applied as docker_template.py
says, or said out loud (one warning per endpoint) where the engine cannot.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import aiodocker
import aiohttp
import msgspec
from aiodocker.containers import DockerContainer

from scaler.backends.base import (
    LABEL_ENDPOINT,
    LABEL_MANAGED,
    LABEL_VERSION,
    LABEL_WORKER,
    BackendError,
    WorkerHandle,
    WorkerSpec,
)
from scaler.backends.docker_template import (
    apply_template_settings, disk_limit_refusal, is_quota_refusal, volume_name,
)
from serverless.store import now_ms

log = logging.getLogger("podq.scaler")

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DEFAULT_NETWORK_MODE = "host"
DEFAULT_RESTART_RETRIES = 3
DEFAULT_PYTHON = "python"
DEFAULT_IMAGE = "podq-worker:latest"  # what docker/Dockerfile.worker builds
# Labels only this backend reads: GPUs and start time survive a scaler restart through them.
LABEL_GPUS = "podq.gpus"
LABEL_STARTED = "podq.started_at"
LABEL_SCOPE = "podq.scope"
# Container states (Engine API `State`) in which the worker process exists or is coming back.
_ALIVE_STATES = frozenset({"running", "restarting"})


class DockerOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How the docker backend creates containers.

    Attributes:
        host: Engine address (`unix://...`, `tcp://host:2375`); None: $DOCKER_HOST, else
            the local socket.
        image: the image of workers whose template names none.
        network_mode: `HostConfig.NetworkMode`: "host", "bridge" or a network's name; the
            workers must reach Redis from it.
        restart_retries: `on-failure` restart policy's MaximumRetryCount.
        binds: extra bind mounts, `HostConfig.Binds` strings ("/src:/dst:ro").
        python: the interpreter of the default command `python -m worker <handler>`.
        scope: when set, containers are labelled with it and `list()` sees only those, so
            several podq installations can share one engine.
    """

    host: str | None = None
    image: str = DEFAULT_IMAGE
    network_mode: str = DEFAULT_NETWORK_MODE
    restart_retries: int = DEFAULT_RESTART_RETRIES
    binds: list[str] = []
    python: str = DEFAULT_PYTHON
    scope: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DockerOptions:
        """Options from PODQ_DOCKER_* variables (DOCKER_HOST too); unset ones keep defaults.

        Args:
            environ: the environment to read; os.environ when None.

        Returns:
            The options.
        """
        env = os.environ if environ is None else environ
        retries = env.get("PODQ_DOCKER_RESTART_RETRIES", str(DEFAULT_RESTART_RETRIES))
        if not retries.isdigit():
            raise BackendError(f"PODQ_DOCKER_RESTART_RETRIES has value {retries!r}: not a whole number")
        binds = env.get("PODQ_DOCKER_BINDS", "")
        return cls(
            host=env.get("PODQ_DOCKER_HOST") or env.get("DOCKER_HOST") or None,
            image=env.get("PODQ_DOCKER_IMAGE") or DEFAULT_IMAGE,
            network_mode=env.get("PODQ_DOCKER_NETWORK") or DEFAULT_NETWORK_MODE,
            restart_retries=int(retries),
            binds=[b for b in binds.split(",") if b],
            python=env.get("PODQ_DOCKER_PYTHON") or DEFAULT_PYTHON,
            scope=env.get("PODQ_DOCKER_SCOPE") or None,
        )


def engine_url(host: str | None) -> str:
    """The engine address to use: `host`, else $DOCKER_HOST, else the local socket."""
    return host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def container_name(spec: WorkerSpec) -> str:
    """`podq-<endpoint>-<worker>`, with characters Docker refuses in names replaced by `-`."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"podq-{spec.endpoint_id}-{spec.worker_id}")


def worker_command(spec: WorkerSpec, python: str) -> list[str]:
    """The argv the container runs; empty means the image's own CMD."""
    if spec.command:
        return list(spec.command)
    return [python, "-m", "worker", spec.handler] if spec.handler else []


def worker_env(spec: WorkerSpec) -> dict[str, str]:
    """The spec's env plus what the worker runtime reads to find its endpoint and Redis."""
    env = {**spec.env, "PODQ_REDIS_URL": spec.redis_url, "PODQ_ENDPOINT_ID": spec.endpoint_id,
           "PODQ_WORKER_ID": spec.worker_id, "PODQ_WORKER_VERSION": str(spec.version)}
    if spec.gpu_uuids:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(spec.gpu_uuids)
    return env


def worker_labels(spec: WorkerSpec, scope: str | None, started_at: int) -> dict[str, str]:
    """The labels `list()` reads back: who the worker is, its GPUs and when it started."""
    labels = {**spec.labels, LABEL_MANAGED: "1", LABEL_ENDPOINT: spec.endpoint_id,
              LABEL_WORKER: spec.worker_id, LABEL_VERSION: str(spec.version),
              LABEL_GPUS: ",".join(spec.gpu_uuids), LABEL_STARTED: str(started_at)}
    if scope:
        labels[LABEL_SCOPE] = scope
    return labels


def device_requests(gpu_uuids: list[str]) -> list[dict[str, Any]]:
    """`docker run --gpus device=<uuids>` as the Engine API spells it; [] without GPUs."""
    if not gpu_uuids:
        return []
    return [{"Driver": "nvidia", "DeviceIDs": list(gpu_uuids), "Capabilities": [["gpu"]]}]


def restart_policy(spec: WorkerSpec, options: DockerOptions) -> dict[str, Any]:
    """podq workers restart in place on failure; a RunPod worker never does: each start must be
    a fresh container (SDK 1.7.12-1.10.0 deadlock on the job file a dead one left behind), so
    the scaler replaces it instead."""
    if spec.protocol == "runpod":
        return {"Name": "no"}
    return {"Name": "on-failure", "MaximumRetryCount": options.restart_retries}


def container_config(spec: WorkerSpec, options: DockerOptions, started_at: int,
                     disk_limit: bool = False) -> dict[str, Any]:
    """The body of `POST /containers/create` for one worker (pure).

    Args:
        spec: the worker to start.
        options: the backend's options.
        started_at: ms since the epoch, kept in a label.
        disk_limit: the engine limits a container's disk: spec.disk_gb becomes StorageOpt size.

    Returns:
        The create config.
    """
    host_config: dict[str, Any] = {
        "NetworkMode": options.network_mode,
        "RestartPolicy": restart_policy(spec, options),
        "Binds": list(options.binds),
    }
    if spec.gpu_uuids:
        host_config["DeviceRequests"] = device_requests(spec.gpu_uuids)
    if spec.cpus:
        host_config["NanoCpus"] = round(spec.cpus * 1e9)
    if spec.memory_mb:
        host_config["Memory"] = spec.memory_mb * 1024 * 1024
    config: dict[str, Any] = {
        "Image": spec.image or options.image,
        "Env": [f"{k}={v}" for k, v in worker_env(spec).items()],
        "Labels": worker_labels(spec, options.scope, started_at),
        "StopSignal": "SIGTERM",
        "HostConfig": host_config,
    }
    command = worker_command(spec, options.python)
    if command:
        config["Cmd"] = command
    apply_template_settings(spec, options.network_mode, disk_limit, config)
    return config


def handle_of(summary: Mapping[str, Any]) -> WorkerHandle:
    """A WorkerHandle from one entry of `GET /containers/json` (pure)."""
    labels = summary.get("Labels") or {}
    return WorkerHandle(
        worker_id=labels.get(LABEL_WORKER, ""),
        endpoint_id=labels.get(LABEL_ENDPOINT, ""),
        version=int(labels.get(LABEL_VERSION) or 0),
        ref=summary["Id"],
        running=summary.get("State") in _ALIVE_STATES,
        gpu_uuids=[g for g in labels.get(LABEL_GPUS, "").split(",") if g],
        started_at=int(labels.get(LABEL_STARTED) or int(summary.get("Created", 0)) * 1000),
    )


def explain(error: aiodocker.DockerError, doing: str, host: str, image: str | None) -> str:
    """What went wrong talking to the engine, and the fix, as one message (pure)."""
    message = str(error.message).strip()
    if error.status == 900:  # aiodocker's code for "could not connect"
        return f"Docker engine not reachable at {host}: start dockerd or set DOCKER_HOST ({message})"
    if error.status == 404 and image and "image" in message.lower():
        return (f"image {image!r} not found locally: build it "
                f"(docker build -t {image} -f docker/Dockerfile.worker .) or pull it (docker pull {image})")
    if "could not select device driver" in message:
        return (f"{doing}: the Docker host cannot give GPUs to containers ({message}): install the "
                "NVIDIA Container Toolkit on it and restart dockerd")
    if error.status == 409:
        return f"{doing}: {message}: remove the old container (docker rm -f <name>) or use a new worker id"
    if "port is already allocated" in message or "address already in use" in message:
        return (f"{doing}: {message}: another container or process holds a port of the template; "
                "free it, or set PODQ_DOCKER_NETWORK to a bridge network so each worker gets its own host port")
    return f"{doing}: Docker engine at {host} answered {error.status}: {message}"


@contextmanager
def _engine_errors(doing: str, host: str, image: str | None = None) -> Iterator[None]:
    """The one place engine errors become BackendError."""
    try:
        yield
    except aiodocker.DockerError as e:
        raise BackendError(explain(e, doing, host, image)) from e
    except (aiohttp.ClientError, OSError) as e:
        raise BackendError(f"{doing}: Docker engine at {host} failed: {e!r}") from e


class DockerBackend:
    """Workers as containers on one Docker engine.

    Args:
        options: how containers are made; by default read from PODQ_DOCKER_* and DOCKER_HOST.
    """

    name = "docker"
    places_gpus = False  # this host's devices, picked by the scaler (scaler/gpus.py)

    def __init__(self, options: DockerOptions | None = None) -> None:
        self.options = options or DockerOptions.from_env()
        self.host = engine_url(self.options.host)
        self._docker: aiodocker.Docker | None = None
        # why this engine cannot limit a container's disk ('' when it can); read on first need
        self._disk_refusal: str | None = None
        self._warned: set[tuple[str, str]] = set()  # (endpoint, topic): each warning once

    def constructor_args(self) -> dict[str, Any]:
        """Keyword arguments that build an equal backend (`type(b)(**b.constructor_args())`)."""
        return {"options": self.options}

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
        """Create and start the worker's container; on a failed start nothing is left behind.

        Args:
            spec: the worker.

        Returns:
            Its handle; `ref` is the container id.
        """
        handle = await self.create(spec)
        image = spec.image or self.options.image
        try:
            with _engine_errors(f"starting worker {spec.worker_id}", self.host, image):
                await self._client().containers.container(handle.ref).start()
        except BackendError:
            await self._remove(handle.ref)
            raise
        return msgspec.structs.replace(handle, running=True)

    async def create(self, spec: WorkerSpec) -> WorkerHandle:
        """Create the worker's container without starting it (`start()` is create + start).

        Args:
            spec: the worker.

        Returns:
            Its handle, with running=False.
        """
        image = spec.image or self.options.image
        if not image:
            raise BackendError(f"worker {spec.worker_id}: no image: set the template's image_name "
                               "or PODQ_DOCKER_IMAGE to a worker image (see docs/docker.md)")
        if spec.volume_gb:
            await self._ensure_volume(spec)
        if spec.ports and self.options.network_mode == "host":
            self._warn_once(spec.endpoint_id, "ports", (
                f"ports {', '.join(map(str, spec.ports))} of endpoint {spec.endpoint_id} are not published: on "
                "the host network a worker's ports are the host's own, so a second worker on this host "
                "cannot bind them; set PODQ_DOCKER_NETWORK to a bridge network for a host port per worker"))
        started_at = now_ms()
        config = container_config(spec, self.options, started_at, await self._disk_limit(spec))
        container = await self._create_container(spec, config, image)
        return WorkerHandle(worker_id=spec.worker_id, endpoint_id=spec.endpoint_id,
                            version=spec.version, ref=container.id, running=False,
                            gpu_uuids=list(spec.gpu_uuids), started_at=started_at)

    async def _create_container(self, spec: WorkerSpec, config: dict[str, Any],
                                image: str) -> DockerContainer:
        """Create it; when the engine refuses the disk limit, once more without it (warned)."""
        try:
            with _engine_errors(f"creating worker {spec.worker_id}", self.host, image):
                return await self._client().containers.create(config, name=container_name(spec))
        except BackendError as e:
            storage = config["HostConfig"].pop("StorageOpt", None)
            if storage is None or not is_quota_refusal(engine_message(e)):
                raise
            self._disk_refusal = f"the engine refused a disk limit ({engine_message(e)})"
            self._warn_disk(spec)
        with _engine_errors(f"creating worker {spec.worker_id}", self.host, image):
            return await self._client().containers.create(config, name=container_name(spec))

    async def _disk_limit(self, spec: WorkerSpec) -> bool:
        """Whether spec.disk_gb can be applied here; warns once per endpoint when not."""
        if not spec.disk_gb:
            return False
        if self._disk_refusal is None:
            with _engine_errors("reading the engine's storage driver", self.host):
                info = await self._client().system.info()
            self._disk_refusal = disk_limit_refusal(info) or ""
        if self._disk_refusal:
            self._warn_disk(spec)
        return not self._disk_refusal

    def _warn_disk(self, spec: WorkerSpec) -> None:
        self._warn_once(spec.endpoint_id, "disk", (
            f"container_disk_in_gb {spec.disk_gb} of endpoint {spec.endpoint_id} is not applied: "
            f"{self._disk_refusal}; its workers' disk is not limited (set container_disk_in_gb 0 "
            "to say so, or run dockerd on a driver that limits it)"))

    def _warn_once(self, endpoint_id: str, topic: str, message: str) -> None:
        if (endpoint_id, topic) not in self._warned:
            self._warned.add((endpoint_id, topic))
            log.warning("%s", message)

    async def _ensure_volume(self, spec: WorkerSpec) -> None:
        """Create the endpoint's volume if missing: sized where the driver allows, else warned."""
        name = volume_name(spec.endpoint_id)
        volumes = self._client().volumes
        with _engine_errors(f"reading volume {name}", self.host):
            try:
                await volumes.get(name)
                return  # it exists: kept as it is (a new size does not resize it)
            except aiodocker.DockerError as e:
                if e.status != 404:
                    raise
        config = {"Name": name, "Labels": {LABEL_MANAGED: "1", LABEL_ENDPOINT: spec.endpoint_id},
                  "DriverOpts": {"size": f"{spec.volume_gb}G"}}
        try:
            with _engine_errors(f"creating volume {name}", self.host):
                await volumes.create(config)
                return
        except BackendError as e:
            if not is_quota_refusal(engine_message(e)):
                raise
            self._warn_once(spec.endpoint_id, "volume", (
                f"volume {name} of endpoint {spec.endpoint_id} is created without its size "
                f"({spec.volume_gb} GB): the volume driver refused it ({engine_message(e)}); it can "
                "fill the engine's disk (a size needs the data root on xfs mounted with pquota)"))
        with _engine_errors(f"creating volume {name}", self.host):
            await volumes.create({**config, "DriverOpts": {}})

    async def stop(self, handle: WorkerHandle, grace_s: float) -> None:
        """SIGTERM (the worker drains), SIGKILL after `grace_s`, then remove the container.

        Args:
            handle: the worker; one already gone is not an error.
            grace_s: seconds between SIGTERM and SIGKILL (rounded up: the API takes whole seconds).
        """
        container = self._client().containers.container(handle.ref)
        with _engine_errors(f"stopping worker {handle.worker_id}", self.host):
            try:
                await container.stop(t=max(0, math.ceil(grace_s)))
            except aiodocker.DockerError as e:
                if e.status != 404:
                    raise
        await self._remove(handle.ref)

    async def _remove(self, ref: str) -> None:
        container = self._client().containers.container(ref)
        with _engine_errors(f"removing container {ref[:12]}", self.host):
            try:
                await container.delete(force=True)
            except aiodocker.DockerError as e:
                if e.status not in (404, 409):  # gone, or its removal is already in progress
                    raise

    async def list(self) -> list[WorkerHandle]:
        """Every podq container on the engine (in this scope), stopped ones with running=False."""
        return [handle_of(summary) for summary in await self._summaries({})]

    async def logs(self, endpoint_id: str, tail: int = 100) -> list[tuple[str, str]]:
        """The last `tail` log lines of each of the endpoint's containers, oldest first.

        Args:
            endpoint_id: the endpoint.
            tail: lines per container.

        Returns:
            (worker_id, line) pairs; each line starts with the engine's RFC 3339 timestamp.
        """
        lines: list[tuple[str, str]] = []
        for summary in await self._summaries({LABEL_ENDPOINT: endpoint_id}):
            worker = summary["Labels"].get(LABEL_WORKER, "")
            container = self._client().containers.container(summary["Id"])
            with _engine_errors(f"reading logs of worker {worker}", self.host):
                chunks = await container.log(stdout=True, stderr=True, tail=tail, timestamps=True)
            lines += [(worker, line) for line in "".join(chunks).splitlines() if line]
        return sorted(lines, key=lambda pair: log_time(pair[1]))

    async def _summaries(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        wanted = {LABEL_MANAGED: "1", **labels}
        if self.options.scope:
            wanted[LABEL_SCOPE] = self.options.scope
        filters = {"label": [f"{k}={v}" for k, v in wanted.items()]}
        with _engine_errors("listing workers", self.host):
            containers = await self._client().containers.list(all=True, filters=filters)
        return [{key: c[key] for key in ("Id", "Labels", "State", "Created") if key in c}
                for c in containers]

    async def close(self) -> None:
        """Close the connection to the engine; containers keep running."""
        if self._docker is not None:
            await self._docker.close()
            self._docker = None


def engine_message(error: BackendError) -> str:
    """The engine's own words behind a BackendError (its message when it came from one)."""
    cause = error.__cause__
    return str(cause.message).strip() if isinstance(cause, aiodocker.DockerError) else str(error)


def log_time(line: str) -> str:
    # RFC 3339 as Docker writes it drops trailing zeros ("...09.94Z"); pad so strings sort as times
    whole, _, fraction = line.split(" ", 1)[0].rstrip("Z").partition(".")
    return f"{whole}.{fraction:0<9}"
