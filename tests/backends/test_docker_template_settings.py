"""A template's volume, ports and disk size in the docker backend: the create config and the
engine's /info reading (pure, tables), then real volumes, mounts and published ports on the
session's real engine (vfs on this machine's filesystem: no quotas, so sizes are warned about)."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiodocker
import pytest

from scaler.backends.base import LABEL_ENDPOINT, BackendError, container_settings, refuse_volume_and_ports
from scaler.backends.docker import DockerOptions, container_config
from scaler.backends.docker_template import disk_limit_refusal, volume_name
from serverless.model import Template
from tests.backends.conftest import DockerBackends, docker_backends
from tests.backends.docker_engine import DockerEngine, api
from tests.backends.test_docker import inspect, make_spec

# ---- pure ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fields,expected", [
    ({}, {"volume_gb": 0, "volume_mount_path": "", "ports": [], "disk_gb": 10}),  # RunPod's defaults
    ({"volume_in_gb": 20}, {"volume_gb": 20, "volume_mount_path": "/runpod-volume", "ports": [], "disk_gb": 10}),
    ({"volume_in_gb": 5, "volume_mount_path": "/models", "ports": "8888/http,22/tcp", "container_disk_in_gb": 0},
     {"volume_gb": 5, "volume_mount_path": "/models", "ports": [8888, 22], "disk_gb": 0}),
])
def test_a_template_becomes_the_specs_container_settings(fields: dict, expected: dict) -> None:
    assert container_settings(Template(id="t", name="t", image_name="i", **fields)) == expected


def test_volume_mount_ports_and_disk_in_the_create_config() -> None:
    spec = make_spec("ep:1", "w1", volume_gb=5, volume_mount_path="/models", ports=[8888, 22], disk_gb=20)
    host = container_config(spec, DockerOptions(), 0, disk_limit=True)
    assert host["HostConfig"]["Mounts"] == [{"Type": "volume", "Source": "podq-vol-ep-1", "Target": "/models"}]
    assert host["ExposedPorts"] == {"8888/tcp": {}, "22/tcp": {}}
    assert "PortBindings" not in host["HostConfig"]  # the host network has nothing to publish
    assert host["HostConfig"]["StorageOpt"] == {"size": "20G"}
    bridge = container_config(spec, DockerOptions(network_mode="podq-net"), 0, disk_limit=False)
    assert bridge["HostConfig"]["PortBindings"] == {"8888/tcp": [{"HostPort": ""}], "22/tcp": [{"HostPort": ""}]}
    assert "StorageOpt" not in bridge["HostConfig"]  # the engine cannot limit it


def test_a_spec_without_settings_adds_nothing() -> None:
    config = container_config(make_spec("ep1", "w1", disk_gb=10), DockerOptions(), 0, disk_limit=False)
    assert set(config["HostConfig"]) == {"NetworkMode", "RestartPolicy", "Binds"}
    assert "ExposedPorts" not in config


@pytest.mark.parametrize("info,refused", [
    ({"Driver": "devicemapper"}, None),
    ({"Driver": "btrfs"}, None),
    ({"Driver": "zfs"}, None),
    ({"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "xfs"], ["Supports d_type", "true"]]}, None),
    ({"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]]}, "storage driver overlay2 over extfs"),
    ({"Driver": "vfs", "DriverStatus": None}, "storage driver vfs cannot limit a container's disk"),
    ({}, "storage driver unknown cannot"),
])
def test_the_engines_storage_driver_decides_the_disk_limit(info: dict, refused: str | None) -> None:
    reason = disk_limit_refusal(info)
    assert reason is None if refused is None else reason is not None and reason.startswith(refused)


def test_volume_names_are_per_endpoint_and_docker_safe() -> None:
    assert volume_name("ep-1") == "podq-vol-ep-1"
    assert volume_name("team:sd") == "podq-vol-team-sd"


def test_backends_without_volumes_or_ports_refuse_a_spec_with_them() -> None:
    refuse_volume_and_ports(make_spec("ep1", "w1", disk_gb=10), "swarm")
    with pytest.raises(BackendError, match="worker w1: the kubernetes backend cannot apply the template's "
                                           "volume_in_gb and ports: use the docker backend"):
        refuse_volume_and_ports(make_spec("ep1", "w1", volume_gb=1, ports=[80]), "kubernetes")


# ---- a real engine ------------------------------------------------------------------------

NET = "podq-settings-net"


@pytest.fixture
async def backends(docker_engine: DockerEngine, endpoint: str) -> AsyncIterator[DockerBackends]:
    """DockerBackends on the session's engine; the endpoint's containers and volume go after."""
    def remove_volume() -> None:
        api(docker_engine.socket_path, "DELETE", f"/volumes/{volume_name(endpoint)}?force=1")

    async with docker_backends(docker_engine, endpoint, then=remove_volume) as make:
        yield make


async def _volume(engine: DockerEngine, name: str) -> dict[str, Any]:
    async with aiodocker.Docker(url=engine.host) as docker:
        return await (await docker.volumes.get(name)).show()


async def test_the_endpoints_volume_is_made_once_mounted_and_sizes_warned_once(
    backends, docker_engine: DockerEngine, endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = backends()
    spec = dict(volume_gb=2, volume_mount_path="/models", ports=[8899], disk_gb=10)
    with caplog.at_level(logging.WARNING, logger="podq.scaler"):
        first = await backend.create(make_spec(endpoint, "w-vol-1", **spec))
        second = await backend.create(make_spec(endpoint, "w-vol-2", **spec))
    volume = await _volume(docker_engine, volume_name(endpoint))
    assert volume["Labels"] == {"podq.managed": "1", LABEL_ENDPOINT: endpoint}
    for handle in (first, second):
        shown = await inspect(docker_engine, handle.ref)
        [mount] = [m for m in shown["Mounts"] if m["Type"] == "volume"]  # besides the binds
        assert (mount["Type"], mount["Name"], mount["Destination"]) == ("volume", volume_name(endpoint), "/models")
        assert "8899/tcp" in shown["Config"]["ExposedPorts"]
        assert not shown["HostConfig"].get("StorageOpt")  # vfs here: no disk limit
    warnings = [r.getMessage() for r in caplog.records]
    # each warning once per endpoint, naming the setting, the endpoint and why
    assert len(warnings) == 3, warnings
    assert any(w.startswith(f"volume {volume_name(endpoint)} of endpoint {endpoint} is created without its "
                            "size (2 GB): the volume driver refused it (") for w in warnings)
    assert any(w.startswith(f"container_disk_in_gb 10 of endpoint {endpoint} is not applied: storage driver "
                            "vfs cannot limit a container's disk") for w in warnings)
    assert any(w.startswith(f"ports 8899 of endpoint {endpoint} are not published: on the host network")
               for w in warnings)


async def test_ports_are_published_to_a_host_port_on_a_bridge_network(
    backends, docker_engine: DockerEngine, endpoint: str
) -> None:
    status, body = api(docker_engine.socket_path, "POST", "/networks/create",
                       json.dumps({"Name": NET, "Driver": "bridge"}).encode())
    # the suite's own dockerd (no iptables, no docker0) still makes user bridge networks
    assert status == 201 or b"already exists" in body, f"the engine made no bridge network: {status} {body!r}"
    backend = backends(network_mode=NET)
    python = docker_engine.options().python
    spec = make_spec(endpoint, "w-port", ports=[8899], command=[python, "-m", "http.server", "8899", "-d", "/usr"])
    handle = await backend.start(spec)
    ports = (await inspect(docker_engine, handle.ref))["NetworkSettings"]["Ports"]["8899/tcp"]
    host_port = int(ports[0]["HostPort"])  # picked by the engine, as `docker port` shows it

    def fetch() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{host_port}/", timeout=2) as response:
            return response.status

    for _ in range(100):  # the server inside takes a moment to listen
        try:
            assert await asyncio.to_thread(fetch) == 200
            return
        except OSError:
            await asyncio.sleep(0.1)
    pytest.fail(f"nothing answered on the published port {host_port}")
