"""The swarm backend on a real two-node swarm (tests/backends/swarm_nodes.py): GPU workers spread
over both nodes, a fifth waits with Swarm's reason while both are full, and a node that dies
mid-job loses no job. (The backend contract suite runs on the same swarm as test_contract.py's
`swarm2` case.)

Workers are real podq workers (tests/scaler/handlers/work.py, test_contract's `spec`) that reach
the two-node Redis at the veth address from either node; each node has two fake GPUs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiodocker
import msgspec
import pytest

from scaler.backends.base import WorkerHandle, WorkerSpec
from scaler.backends.swarm import SwarmBackend
from serverless.model import RunRequest, Status
from serverless.store import JobStore
from tests.backends.docker_engine import FAKE_GPUS, EngineUnavailable, say
from tests.backends.swarm_nodes import (  # noqa: F401  (fixtures)
    H100,
    NODE2_GPUS,
    TwoNodeSwarm,
    free_subnet,
    missing_requirements,
    processes_in,
    skip_reason,
)
from tests.backends.test_contract import spec
from tests.backends.test_swarm import until

LEASE_MS = 2_000  # the workers' job lease (PODQ_LEASE_MS), short so that a lost job returns soon


# -- without an engine: when the tests can run, and where node 2's link goes -------------------


@pytest.mark.parametrize("euid, on_path, missing", [
    (0, {"ip", "nsenter"}, []),
    (1000, {"ip", "nsenter"}, ["root (network namespaces, a second dockerd)"]),
    (0, {"ip"}, ["`nsenter` (util-linux)"]),
    (1000, set(), ["root (network namespaces, a second dockerd)", "`ip` (iproute2)", "`nsenter` (util-linux)"]),
])
def test_what_a_machine_lacks_for_a_second_node(euid: int, on_path: set[str], missing: list[str]) -> None:
    assert missing_requirements(euid, lambda tool: f"/usr/bin/{tool}" if tool in on_path else None) == missing


def test_the_skip_says_what_is_missing_and_how_to_run_the_tests() -> None:
    assert skip_reason(["`nsenter` (util-linux)"]) == (
        "the two-node swarm tests need `nsenter` (util-linux): run them as root on Linux with both "
        "installed: sudo .venv/bin/pytest tests/backends/test_swarm_nodes.py")


ADDRESSES = """1: lo    inet 127.0.0.1/8 scope host lo
4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0
9: pq17h    inet 10.231.7.1/30 scope global pq17h
12: other    inet 10.231.8.5/24 scope global other
"""


@pytest.mark.parametrize("addresses, start, subnet", [
    (ADDRESSES, 3, 3),  # free: taken as is
    (ADDRESSES, 7, 9),  # 10.231.7.x and 10.231.8.x are in use: the next free one
    (ADDRESSES, 263, 9),  # a pid counts modulo 256
    ("9: x    inet 10.231.255.1/30 scope global x\n", 255, 0),  # wraps around
    ("4: eth0    inet 110.231.7.2/24 scope global eth0\n", 7, 7),  # another network's 231.7
])
def test_node_two_gets_a_subnet_no_interface_uses(addresses: str, start: int, subnet: int) -> None:
    assert free_subnet(addresses, start) == subnet


def test_no_free_subnet_names_the_fix() -> None:
    every = "".join(f"{n}: x{n}    inet 10.231.{n}.1/30 scope global x{n}\n" for n in range(256))
    with pytest.raises(EngineUnavailable, match=r"every 10\.231\.N\.0/24 is in use here: delete some"):
        free_subnet(every, 0)


# -- on the two-node swarm ---------------------------------------------------------------------


@pytest.fixture
def redis_url(two_node_swarm: TwoNodeSwarm) -> str:  # noqa: F811
    """The two-node Redis (the veth address, which both nodes reach), for `store` and workers."""
    return two_node_swarm.redis_url


@pytest.fixture
async def swarm2(swarm2_backend: SwarmBackend) -> AsyncIterator[SwarmBackend]:  # noqa: F811
    """The swarm backend on two nodes; the workers it lists are removed after the test."""
    yield swarm2_backend
    await asyncio.gather(*(swarm2_backend.stop(h, 1) for h in await swarm2_backend.list()))
    await swarm2_backend.close()


def gpu_worker(redis_url: str, endpoint: str, worker_id: str) -> WorkerSpec:
    """A real worker that needs one H100 (either node has two)."""
    base = spec(redis_url, endpoint, worker_id)
    return msgspec.structs.replace(base, gpu_count=1, gpu_names=["H100"],
                                   env={**base.env, "PODQ_LEASE_MS": str(LEASE_MS)})


async def mine(backend: SwarmBackend, endpoint: str) -> dict[str, WorkerHandle]:
    return {h.worker_id: h for h in await backend.list() if h.endpoint_id == endpoint}


async def settle(what: str, predicate: Callable[[], Awaitable[Any]], backend: SwarmBackend,
                 endpoint: str, timeout: float = 30) -> Any:
    """`until`, failing with what the backend lists and the workers' logs."""
    try:
        return await until(predicate, timeout)
    except AssertionError:
        listed = list((await mine(backend, endpoint)).values())
        logs = "\n".join(f"{w} | {line}" for w, line in await backend.logs(endpoint, tail=15))
        raise AssertionError(f"{what}: not within {timeout:.0f} s\nlisted: {listed}\nlogs:\n{logs}") from None


async def tasks_of(two: TwoNodeSwarm, handle: WorkerHandle) -> list[dict[str, Any]]:
    """The worker's Swarm tasks, as the manager shows them."""
    async with aiodocker.Docker(url=two.manager.engine.host) as docker:
        return await docker.tasks.list(filters={"service": handle.ref})


async def node_of(two: TwoNodeSwarm, handle: WorkerHandle) -> str:
    """The id of the node Swarm put the worker's task on ('' while it has none)."""
    tasks = await tasks_of(two, handle)
    return next((t.get("NodeID", "") for t in tasks if t.get("DesiredState") == "running"), "")


async def start_placed(backend: SwarmBackend, two: TwoNodeSwarm, store: JobStore, endpoint: str,
                       count: int) -> dict[str, WorkerHandle]:
    """Start `count` GPU workers; return them once each has its GPU and its own heartbeat."""
    for i in range(count):
        await backend.start(gpu_worker(two.redis_url, endpoint, f"w-{i}"))

    async def placed_and_beating() -> dict[str, WorkerHandle] | None:
        handles = await mine(backend, endpoint)
        beats = {b.id for b in await store.workers(endpoint)}
        ready = len(handles) == count and all(h.gpu_uuids for h in handles.values())
        return handles if ready and beats == set(handles) else None

    return await settle(f"{count} GPU workers placed and beating", placed_and_beating, backend, endpoint, 60)


@pytest.mark.slow
async def test_gpu_workers_spread_over_both_nodes_and_serve_from_each(
        swarm2: SwarmBackend, two_node_swarm: TwoNodeSwarm, store: JobStore, endpoint: str,  # noqa: F811
        request: pytest.FixtureRequest) -> None:
    two, backend = two_node_swarm, swarm2
    loop = asyncio.get_running_loop()
    began = loop.time()
    handles = await start_placed(backend, two, store, endpoint, 4)
    ready_in = loop.time() - began
    gpus_by_node: dict[str, list[str]] = {}
    for h in handles.values():
        gpus_by_node.setdefault(await node_of(two, h), []).extend(h.gpu_uuids)
    assert {node: sorted(gpus) for node, gpus in gpus_by_node.items()} == {
        two.manager.node_id: FAKE_GPUS, two.second.node_id: NODE2_GPUS}
    ids = [(await store.submit(endpoint, RunRequest(input=msgspec.Raw(b'{"seconds": 2}')))).id for _ in range(4)]
    done = [await store.wait(i, 30) for i in ids]
    assert [d and d.status for d in done] == [Status.COMPLETED] * 4
    # one job each: every worker, on either node, took a job from Redis and wrote its result
    assert sorted(msgspec.json.decode(d.output)["worker"] for d in done) == sorted(handles)
    say(request.config, f"two nodes: 4 GPU workers placed (2 per node) and beating in {ready_in:.2f} s")


@pytest.mark.slow
async def test_a_fifth_gpu_worker_waits_with_swarms_reason_until_a_gpu_is_freed(
        swarm2: SwarmBackend, two_node_swarm: TwoNodeSwarm, store: JobStore, endpoint: str,  # noqa: F811
        request: pytest.FixtureRequest) -> None:
    two, backend = two_node_swarm, swarm2
    handles = await start_placed(backend, two, store, endpoint, 4)
    await backend.start(gpu_worker(two.redis_url, endpoint, "w-fifth"))

    async def waiting() -> WorkerHandle | None:
        fifth = (await mine(backend, endpoint)).get("w-fifth")
        # Swarm's words: "pending task scheduling" at first, then the scheduler's reason
        return fifth if fifth is not None and "insufficient resources" in fifth.pending else None

    fifth = await settle("the fifth worker listed pending for want of a GPU", waiting, backend, endpoint)
    assert fifth.running and fifth.gpu_uuids == [] and await node_of(two, fifth) == ""
    freed = handles["w-0"]
    freed_node = await node_of(two, freed)
    loop = asyncio.get_running_loop()
    freed_at = loop.time()
    await backend.stop(freed, 2)

    async def placed() -> WorkerHandle | None:
        now = (await mine(backend, endpoint)).get("w-fifth")
        return now if now is not None and now.gpu_uuids else None

    now_placed = await settle("the fifth worker placed", placed, backend, endpoint)
    assert now_placed.pending == "" and now_placed.gpu_uuids == freed.gpu_uuids
    assert await node_of(two, now_placed) == freed_node
    say(request.config, f"two nodes: the fifth GPU worker was pending with {fifth.pending!r}; placed "
                        f"{loop.time() - freed_at:.2f} s after a GPU was freed")


async def start_on(two: TwoNodeSwarm, backend: SwarmBackend, store: JobStore, endpoint: str,
                   worker_id: str, node: str) -> WorkerHandle:
    """Start a GPU worker on `node` (the other node is paused meanwhile); return it once it beats."""
    other = two.second if node == two.manager.node_id else two.manager
    other.set_availability("pause")
    try:
        handle = await backend.start(gpu_worker(two.redis_url, endpoint, worker_id))

        async def beating() -> bool:
            return worker_id in {b.id for b in await store.workers(endpoint)}

        await settle(f"{worker_id} beating", beating, backend, endpoint, 60)
    finally:
        other.set_availability("active")
    assert await node_of(two, handle) == node
    return handle


@pytest.mark.slow
async def test_a_node_that_dies_mid_job_loses_no_job(
        swarm2: SwarmBackend, two_node_swarm: TwoNodeSwarm, store: JobStore, endpoint: str,  # noqa: F811
        request: pytest.FixtureRequest) -> None:
    two, backend = two_node_swarm, swarm2
    doomed = await start_on(two, backend, store, endpoint, "w-node2", two.second.node_id)
    job = await store.submit(endpoint, RunRequest(input=msgspec.Raw(b'{"seconds": 5}')))

    async def taken() -> bool:
        record = await store.get(job.id)
        return record is not None and record.status is Status.IN_PROGRESS

    await settle("the job taken on node 2", taken, backend, endpoint)
    await start_on(two, backend, store, endpoint, "w-node1", two.manager.node_id)
    running = await store.get(job.id)
    assert (running.status, running.worker_id, running.attempt) == (Status.IN_PROGRESS, "w-node2", 1)
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    try:
        two.kill_second_dockerd()
        # the worker outlives its dockerd (its containerd-shim keeps it): node 2 is not dead yet
        assert any(b"-m\0worker\0" in _cmdline(pid) for pid in processes_in(two.link.netns_path))
        two.power_off_second()  # now it is: every process of node 2 is gone, as in a power cut
        down, done = await asyncio.gather(_timed(asyncio.to_thread(two.wait_state, two.second, "down")),
                                          _timed(store.wait(job.id, 30)))
        record = done[1]
        assert record is not None and record.status is Status.COMPLETED, record
        assert msgspec.json.decode(record.output)["worker"] == "w-node1"  # the lease ran out: node 1 ran it
        assert record.attempt == 2 and (await store.health(endpoint)).jobs.retried == 1
        [task] = await tasks_of(two, doomed)
        assert task["DesiredState"] == "shutdown"  # Swarm gave the task up when its node went down
        listed = (await mine(backend, endpoint))["w-node2"]
        say(request.config, f"two nodes: node 2 killed mid-job: Swarm marked it down after "
                            f"{down[0] - killed_at:.2f} s; the job completed on node 1 {done[0] - killed_at:.2f} s "
                            f"after the kill (attempt 2); node 2's worker's task: desired {task['DesiredState']}, "
                            f"state {task['Status']['State']} ({task['Status'].get('Err') or task['Status'].get('Message')}), "
                            f"listed running={listed.running}")
    finally:
        restarted_at = loop.time()
        await asyncio.to_thread(two.restart_second)
        say(request.config, f"two nodes: node 2's dockerd restarted and the node ready again after "
                            f"{loop.time() - restarted_at:.2f} s")

    async def ended() -> WorkerHandle | None:  # back, node 2 reports the task's container dead
        listed = await mine(backend, endpoint)
        return listed if not listed["w-node2"].running else None

    listed = await settle("node 2's old worker listed as not running", ended, backend, endpoint)
    assert listed["w-node1"].running and not listed["w-node1"].pending


async def _timed(awaitable: Awaitable[Any]) -> tuple[float, Any]:
    """(the loop's time when `awaitable` finished, its result)."""
    result = await awaitable
    return asyncio.get_running_loop().time(), result


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


@pytest.mark.slow
def test_node_two_runs_in_its_own_network_namespace(two_node_swarm: TwoNodeSwarm) -> None:
    """The second node is another network host: its dockerd runs in the namespace, it joined as a
    worker at its veth address, and the manager listens on the host's side of the veth pair."""
    two = two_node_swarm
    assert two.second_engine.process is not None
    assert two.second_engine.process.pid in processes_in(two.link.netns_path)
    node = two.second.node()
    assert node["Status"]["Addr"] == two.link.node_ip
    assert node["Spec"]["Role"] == "worker" and two.manager.node()["ManagerStatus"]["Addr"].startswith(
        two.link.host_ip + ":")
    assert node["Spec"]["Labels"] == {"gpu.product": H100}
