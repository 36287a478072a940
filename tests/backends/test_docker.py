"""The docker backend: its create config (pure), then real containers on a real engine.

The engine is the session's own dockerd (tests/backends/docker_engine.py); workers run the
host's Python from an empty imported image, on the host network, against the real redis-server.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator

import aiodocker
import msgspec
import pytest

from scaler.backends.base import (
    LABEL_ENDPOINT,
    LABEL_MANAGED,
    LABEL_VERSION,
    LABEL_WORKER,
    BackendError,
    WorkerSpec,
)
from scaler.backends.docker import DockerBackend, DockerOptions, container_config, handle_of, worker_command
from scaler.logs_cli import format_lines, main as logs_main, read_logs
from serverless.model import RunRequest, Status
from serverless.settings import Settings
from serverless.store import JobStore
from tests.backends.conftest import DockerBackends, docker_backends
from tests.backends.docker_engine import IMAGE, DockerEngine, say
from tests.worker.conftest import HANDLERS, wait_for_worker

SLEEPY = str(HANDLERS / "sleepy.py")
GPUS = ["GPU-0a1b2c3d-0000-1111-2222-333344445555", "GPU-9f8e7d6c-6666-7777-8888-999900001111"]


def make_spec(endpoint: str, worker_id: str, redis_url: str = "redis://127.0.0.1:6379/0",
              **changes: object) -> WorkerSpec:
    env = {"PODQ_HEARTBEAT_MS": "300", "PODQ_LEASE_MS": "2000", "PODQ_LOG_LEVEL": "INFO"}
    spec = WorkerSpec(endpoint_id=endpoint, worker_id=worker_id, version=3, redis_url=redis_url,
                      image=IMAGE, handler=SLEEPY, env=env)
    return msgspec.structs.replace(spec, **changes)


def req(payload: object) -> RunRequest:
    return RunRequest(input=msgspec.Raw(msgspec.json.encode(payload)))


# -- the create config, without an engine ---------------------------------------------------


def test_container_config_carries_command_env_labels_and_policies() -> None:
    spec = make_spec("ep1", "w1", labels={"team": "ml"})
    config = container_config(spec, DockerOptions(binds=["/models:/models:ro"]), started_at=1234)
    assert config["Image"] == IMAGE
    assert config["Cmd"] == ["python", "-m", "worker", SLEEPY]
    assert {"PODQ_REDIS_URL=redis://127.0.0.1:6379/0", "PODQ_ENDPOINT_ID=ep1", "PODQ_WORKER_ID=w1",
            "PODQ_WORKER_VERSION=3", "PODQ_LOG_LEVEL=INFO"} <= set(config["Env"])
    assert not any(e.startswith("CUDA_VISIBLE_DEVICES=") for e in config["Env"])
    assert config["Labels"] == {"team": "ml", LABEL_MANAGED: "1", LABEL_ENDPOINT: "ep1",
                                LABEL_WORKER: "w1", LABEL_VERSION: "3", "podq.gpus": "",
                                "podq.started_at": "1234"}
    assert config["HostConfig"] == {
        "NetworkMode": "host",
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
        "Binds": ["/models:/models:ro"],
    }


def test_gpu_workers_get_a_device_request_by_uuid_and_cuda_visible_devices() -> None:
    config = container_config(make_spec("ep1", "w1", gpu_uuids=GPUS), DockerOptions(), started_at=0)
    assert config["HostConfig"]["DeviceRequests"] == [
        {"Driver": "nvidia", "DeviceIDs": GPUS, "Capabilities": [["gpu"]]}]
    assert f"CUDA_VISIBLE_DEVICES={','.join(GPUS)}" in config["Env"]
    assert config["Labels"]["podq.gpus"] == ",".join(GPUS)


@pytest.mark.parametrize("command,handler,expected", [
    ([], "/app/handler.py", ["py", "-m", "worker", "/app/handler.py"]),  # the default command
    (["python", "serve.py"], "/app/handler.py", ["python", "serve.py"]),  # the template's wins
    ([], None, []),  # neither: the image's own CMD runs
])
def test_worker_command(command: list[str], handler: str | None, expected: list[str]) -> None:
    assert worker_command(make_spec("ep", "w", command=command, handler=handler), "py") == expected


def test_no_command_leaves_the_image_cmd() -> None:
    assert "Cmd" not in container_config(make_spec("ep", "w", handler=None), DockerOptions(), 0)


def test_handle_of_reads_labels_and_state() -> None:
    summary = {"Id": "abc", "State": "exited", "Created": 1700000000,
               "Labels": {LABEL_MANAGED: "1", LABEL_ENDPOINT: "ep", LABEL_WORKER: "w9",
                          LABEL_VERSION: "7", "podq.gpus": ",".join(GPUS)}}
    handle = handle_of(summary)
    assert (handle.worker_id, handle.endpoint_id, handle.version, handle.ref) == ("w9", "ep", 7, "abc")
    assert handle.running is False and handle.gpu_uuids == GPUS
    assert handle.started_at == 1700000000_000  # no start label: the engine's Created time


def test_options_from_env() -> None:
    options = DockerOptions.from_env({
        "DOCKER_HOST": "tcp://10.0.0.5:2375", "PODQ_DOCKER_NETWORK": "podq",
        "PODQ_DOCKER_BINDS": "/a:/a:ro,/b:/b", "PODQ_DOCKER_RESTART_RETRIES": "5"})
    assert options == DockerOptions(host="tcp://10.0.0.5:2375", image="podq-worker:latest",
                                    network_mode="podq", binds=["/a:/a:ro", "/b:/b"], restart_retries=5)
    with pytest.raises(BackendError, match="PODQ_DOCKER_RESTART_RETRIES has value 'many'"):
        DockerOptions.from_env({"PODQ_DOCKER_RESTART_RETRIES": "many"})


async def test_unreachable_engine_names_the_fix(tmp_path) -> None:
    host = f"unix://{tmp_path}/docker.sock"
    backend = DockerBackend(DockerOptions(host=host))
    try:
        with pytest.raises(BackendError, match=f"^Docker engine not reachable at {host}: start "
                                               "dockerd or set DOCKER_HOST"):
            await backend.list()
    finally:
        await backend.close()


def test_log_lines_are_prefixed_with_a_padded_worker_column() -> None:
    assert format_lines([("w1", "a"), ("w-long", "b")]) == ["w1     | a", "w-long | b"]


def test_podq_logs_without_an_engine_exits_with_the_fix(tmp_path) -> None:
    host = f"unix://{tmp_path}/docker.sock"
    with pytest.raises(SystemExit, match=f"^podq logs: Docker engine not reachable at {host}: start "):
        logs_main(["ep1", "--docker-host", host])


# -- real containers ---------------------------------------------------------------------------


@pytest.fixture
async def backends(docker_engine: DockerEngine, endpoint: str) -> AsyncIterator[DockerBackends]:
    """Makes DockerBackends on the session's engine; removes the endpoint's containers after."""
    async with docker_backends(docker_engine, endpoint) as make:
        yield make


async def inspect(engine: DockerEngine, ref: str) -> dict:
    async with aiodocker.Docker(url=engine.host) as docker:
        return await docker.containers.container(ref).show()


async def test_worker_serves_a_job_and_drains_on_stop(backends, docker_engine: DockerEngine, store: JobStore,
                                                      settings: Settings, endpoint: str, request) -> None:
    backend = backends()
    loop = asyncio.get_running_loop()
    began = loop.time()
    handle = await backend.start(make_spec(endpoint, "w-docker", settings.redis_url))
    started = loop.time() - began
    await wait_for_worker(store, endpoint, "w-docker", timeout=30)
    say(request.config, f"cold start: start() {started:.2f} s, first heartbeat {loop.time() - began:.2f} s")
    assert handle.running and len(handle.ref) == 64
    assert [b.version for b in await store.workers(endpoint)] == [3]

    served = await store.wait((await store.submit(endpoint, req({"seconds": 0}))).id, 20)
    assert served.status is Status.COMPLETED and served.worker_id == "w-docker"
    assert msgspec.json.decode(served.output)["worker"] == "w-docker"  # PODQ_WORKER_ID reached it
    assert any("w-docker | " in line and "serving endpoint" in line   # what `podq logs` prints
               for line in await read_logs(endpoint, 50, docker_engine.options()))

    in_flight = await store.submit(endpoint, req({"seconds": 1.5}))
    await _wait_status(store, in_flight.id, Status.IN_PROGRESS)
    await backend.stop(handle, grace_s=10)  # SIGTERM: the worker finishes its job, then exits
    assert (await store.get(in_flight.id)).status is Status.COMPLETED
    assert [h for h in await backend.list() if h.endpoint_id == endpoint] == []
    assert await store.workers(endpoint) == []


async def _wait_status(store: JobStore, job_id: str, status: Status, timeout: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (await store.get(job_id)).status is not status:
        assert loop.time() < deadline, f"job {job_id} never reached {status}"
        await asyncio.sleep(0.05)


async def test_restarted_scaler_adopts_its_containers(backends, store: JobStore, settings: Settings,
                                                      endpoint: str) -> None:
    first = backends()
    started = [await first.start(make_spec(endpoint, w, settings.redis_url, version=v))
               for w, v in (("w-a", 4), ("w-b", 5))]
    await first.close()  # the scaler restarts: nothing of it survives but the containers
    for handle in started:
        await wait_for_worker(store, endpoint, handle.worker_id, timeout=30)

    second = backends()
    adopted = sorted((h for h in await second.list() if h.endpoint_id == endpoint), key=lambda h: h.worker_id)
    assert adopted == started  # same ids, endpoint, versions, refs, start times; running

    await asyncio.gather(*(second.stop(h, grace_s=5) for h in adopted))
    assert [h for h in await second.list() if h.endpoint_id == endpoint] == []


async def test_exited_container_is_listed_as_not_running(backends, docker_engine: DockerEngine,
                                                         endpoint: str) -> None:
    backend = backends()
    done = make_spec(endpoint, "w-exits", command=[docker_engine.options().python, "-c", "pass"])
    handle = await backend.start(done)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while (listed := [h for h in await backend.list() if h.ref == handle.ref]) and listed[0].running:
        assert loop.time() < deadline, "the container never exited"
        await asyncio.sleep(0.1)
    assert listed and listed[0].worker_id == "w-exits"  # exit 0: on-failure does not restart it
    await backend.stop(handle, grace_s=0)
    assert [h for h in await backend.list() if h.ref == handle.ref] == []


async def test_gpu_device_request_reaches_the_engine(backends, docker_engine: DockerEngine,
                                                     endpoint: str) -> None:
    backend = backends()
    handle = await backend.create(make_spec(endpoint, "w-gpu", gpu_uuids=GPUS))
    host_config = (await inspect(docker_engine, handle.ref))["HostConfig"]
    [request] = host_config["DeviceRequests"]
    assert (request["Driver"], request["DeviceIDs"], request["Capabilities"]) == ("nvidia", GPUS, [["gpu"]])
    assert host_config["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert host_config["NetworkMode"] == "host"
    [adopted] = [h for h in await backends().list() if h.ref == handle.ref]
    assert adopted.gpu_uuids == GPUS and adopted.running is False  # created, never started


def test_cpu_and_memory_limits_become_nanocpus_and_memory() -> None:
    config = container_config(make_spec("ep1", "w1", cpus=1.5, memory_mb=2048), DockerOptions(), 0)
    assert (config["HostConfig"]["NanoCpus"], config["HostConfig"]["Memory"]) == (1_500_000_000, 2 << 30)


async def test_cpu_and_memory_limits_reach_the_engine(backends, docker_engine: DockerEngine,
                                                      endpoint: str) -> None:
    handle = await backends().create(make_spec(endpoint, "w-limits", cpus=0.5, memory_mb=256))
    host_config = (await inspect(docker_engine, handle.ref))["HostConfig"]
    assert (host_config["NanoCpus"], host_config["Memory"]) == (500_000_000, 256 << 20)


async def test_gpu_start_without_the_toolkit_fails_cleanly(backends, endpoint: str) -> None:
    backend = backends()
    with pytest.raises(BackendError) as caught:
        await backend.start(make_spec(endpoint, "w-gpu", gpu_uuids=GPUS))
    if shutil.which("nvidia-container-runtime-hook") is None:
        assert "install the NVIDIA Container Toolkit on it and restart dockerd" in str(caught.value)
    assert [h for h in await backend.list() if h.endpoint_id == endpoint] == []  # nothing left


async def test_missing_image_names_the_build_command(backends, endpoint: str) -> None:
    expected = ("image 'podq-absent:9' not found locally: build it (docker build -t podq-absent:9 "
                "-f docker/Dockerfile.worker .) or pull it (docker pull podq-absent:9)")
    with pytest.raises(BackendError, match=f"^{re.escape(expected)}$"):
        await backends().start(make_spec(endpoint, "w-x", image="podq-absent:9"))
