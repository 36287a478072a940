"""One contract every backend meets (start, list, stop, adopt), run against each of them.

The docker and swarm backends join through the `docker_backend` and `swarm_backend` fixtures
(tests/backends/conftest.py), which skip with the reason when no Docker engine, or no swarm,
can run here. On Swarm each worker is a one-replica service on the suite's one-node swarm; "swarm2"
runs the same cases on a two-node swarm (tests/backends/swarm_nodes.py: a second dockerd in its own
network namespace), whose workers reach a Redis on the veth address.

The kubernetes backend joins through `kubernetes_backend`, on a real cluster only
(PODQ_TEST_KUBECONFIG; no API server can run here, so these cases skip and say so). Its pods
cannot reach the suite's own redis-server, so for it the jobs and heartbeats go through the
Redis of PODQ_TEST_K8S_REDIS_URL (the worker's side) and PODQ_TEST_K8S_REDIS_LOCAL_URL (this
side), and the handler is the one baked into the test image. That Redis may be shared, so this
module's `store` never flushes (every case has its own endpoint id), and a case stops only the
workers of its own endpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from scaler.backends.base import BackendError, WorkerSpec
from scaler.backends.process import ProcessBackend
from serverless.model import RunRequest, Status
from serverless.queue import connect
from serverless.settings import Settings
from serverless.store import JobStore

HANDLER = Path(__file__).resolve().parents[1] / "scaler" / "handlers" / "work.py"
JOB_WAIT_S = 30.0
# a pod may wait for a node and pull its image before it serves: more time, within the case's timeout
K8S_JOB_WAIT_S = 120.0


@pytest.fixture(params=["process", "docker", "swarm", "swarm2",
                        pytest.param("kubernetes", marks=pytest.mark.timeout(300))])
async def backend(request, redis_url, tmp_path, endpoint):
    if request.param == "process":
        made = ProcessBackend(redis_url, log_dir=str(tmp_path))
    else:
        made = request.getfixturevalue(f"{request.param}_backend")
    yield made
    for handle in await made.list():
        if handle.endpoint_id == endpoint:  # a cluster's namespace may hold other workers
            await made.stop(handle, 1)
    await made.close()


def _backend_param(request: pytest.FixtureRequest) -> str | None:
    callspec = getattr(request.node, "callspec", None)
    return callspec.params.get("backend") if callspec else None


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """The suite's redis-server; for the kubernetes backend, the cluster's test Redis as this
    process reaches it."""
    if _backend_param(request) == "kubernetes":
        return request.getfixturevalue("kubernetes_cluster").local_redis_url
    if _backend_param(request) == "swarm2":  # a Redis on the veth address both nodes reach
        return request.getfixturevalue("two_node_swarm").redis_url
    return request.getfixturevalue("redis_server").url


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[JobStore]:
    """tests/conftest.py's store without its flushdb: the cluster's test Redis may be shared."""
    made = JobStore(await connect(settings.redis_url), settings)
    yield made
    await made.close()


@pytest.fixture
def make_spec(request: pytest.FixtureRequest, redis_url: str) -> Callable[[str, str], WorkerSpec]:
    """spec(endpoint, worker_id) for the case's backend: on Kubernetes, the Redis the pods reach
    and the handler in the test image."""
    if _backend_param(request) == "kubernetes":
        cluster = request.getfixturevalue("kubernetes_cluster")
        return lambda endpoint, worker_id: spec(cluster.redis_url, endpoint, worker_id, cluster.handler)
    return lambda endpoint, worker_id: spec(redis_url, endpoint, worker_id)


def spec(redis_url: str, endpoint: str, worker_id: str = "w-contract", handler: str = str(HANDLER)) -> WorkerSpec:
    return WorkerSpec(endpoint_id=endpoint, worker_id=worker_id, version=3, redis_url=redis_url,
                      handler=handler, env={"PODQ_HEARTBEAT_MS": "200"})


async def test_start_serve_list_stop(backend, store, endpoint, make_spec) -> None:
    handle = await backend.start(make_spec(endpoint, "w-contract"))
    assert (handle.worker_id, handle.endpoint_id, handle.version) == ("w-contract", endpoint, 3)
    listed = [h for h in await backend.list() if h.endpoint_id == endpoint]
    assert [(h.worker_id, h.version, h.running) for h in listed] == [("w-contract", 3, True)]
    rec = await store.submit(endpoint, RunRequest(input=msgspec.Raw(b'{"seconds": 0}')))
    done = await store.wait(rec.id, K8S_JOB_WAIT_S if backend.name == "kubernetes" else JOB_WAIT_S)
    assert done.status is Status.COMPLETED
    assert msgspec.json.decode(done.output)["worker"] == "w-contract"
    await backend.stop(handle, 2)
    assert [h for h in await backend.list() if h.endpoint_id == endpoint] == []
    assert await store.workers(endpoint) == []  # it drained and deregistered


async def test_a_new_backend_instance_adopts_running_workers(backend, endpoint, redis_url, make_spec) -> None:
    await backend.start(make_spec(endpoint, "w-adopt"))
    fresh = type(backend)(**_same_args(backend, redis_url))
    found: list = []
    for _ in range(100):  # a process's labels show in /proc once its execve is through
        found = [h for h in await fresh.list() if h.endpoint_id == endpoint]
        if found:
            break
        await asyncio.sleep(0.05)
    await fresh.close()
    assert [(h.worker_id, h.version) for h in found] == [("w-adopt", 3)]


def _same_args(backend, redis_url: str) -> dict:
    if isinstance(backend, ProcessBackend):
        return {"redis_url": redis_url}
    return backend.constructor_args()


async def test_stop_of_a_worker_that_already_exited_is_harmless(backend, endpoint, make_spec) -> None:
    handle = await backend.start(make_spec(endpoint, "w-gone"))
    await backend.stop(handle, 1)
    await asyncio.wait_for(backend.stop(handle, 1), 30)


async def test_process_backend_lists_what_it_started_before_proc_shows_its_labels(
    endpoint: str, redis_url: str, tmp_path: Path
) -> None:
    """Right after start, /proc/<pid>/environ can read empty (execve sets it late): the backend
    must still list the worker, or the scaler would start it twice. A worker whose command wipes
    its environment (`env -i`) shows the same thing for as long as it runs."""
    backend = ProcessBackend(redis_url, log_dir=str(tmp_path))
    blank = msgspec.structs.replace(spec(redis_url, endpoint, "w-blank"), command=["env", "-i", "sleep", "30"])
    handle = await backend.start(blank)
    try:
        await asyncio.sleep(0.3)  # env -i has exec'd sleep with an empty environment by now
        listed = [h.worker_id for h in await backend.list() if h.endpoint_id == endpoint]
        assert listed == ["w-blank"]
        assert [h.worker_id for h in await ProcessBackend(redis_url).list()
                if h.endpoint_id == endpoint] == []  # another instance cannot see it in /proc
    finally:
        await backend.stop(handle, 0.5)
    assert [h for h in await backend.list() if h.endpoint_id == endpoint] == []


@pytest.mark.parametrize("changes, refused", [
    ({"volume_gb": 5}, "volume_in_gb"), ({"ports": [8888]}, "ports"),
    ({"cpus": 2.0}, "cpus or memory"),
])
async def test_process_backend_refuses_what_it_cannot_apply(endpoint: str, redis_url: str,
                                                             tmp_path: Path, changes, refused) -> None:
    """The registry refuses these endpoints first; a spec built some other way (an endpoint
    stored before a check existed) is refused at start, never started without them."""
    backend = ProcessBackend(redis_url, log_dir=str(tmp_path))
    with pytest.raises(BackendError, match=refused):
        await backend.start(msgspec.structs.replace(spec(redis_url, endpoint), **changes))
    assert [h for h in await backend.list() if h.endpoint_id == endpoint] == []
