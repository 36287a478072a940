"""A two-node Docker Swarm on one machine, for the swarm backend's tests across nodes.

Node 1, the manager, is a private dockerd (tests/backends/docker_engine.py) in the host's
network namespace. Node 2 is a second private dockerd in a network namespace of its own, joined
to the swarm as a worker. A veth pair links them (host side 10.231.N.1, node side 10.231.N.2, a
/30 no interface uses yet); the manager listens and advertises on its side, node 2 on the other.
dockerd enters the namespace through `nsenter --net=/var/run/netns/<ns>`: `ip netns exec` also
remounts /sys in a new mount namespace, which hides the cgroup mounts dockerd needs ("Devices
cgroup isn't mounted", shared/reference/scale-out.md section 3.1).

Each node advertises two fake GPUs as Swarm generic resources (node 1 `GPU-fake-0/1`, node 2
`GPU-node2-0/1`), is labelled `gpu.product=NVIDIA-H100-80GB-HBM3`, has the test image imported
(no registry here) and prefers local images for services. Swarm's node heartbeat is 1 s
(`docker swarm init --dispatcher-heartbeat 1s`), so a dead node is marked down in about 3 s
instead of about 15 s.

Redis: the suite's redis-server listens on 127.0.0.1, which inside node 2's namespace is node
2's own loopback. The two-node tests start their own server with the suite's RedisProcess, bound
to 127.0.0.1 and the veth host address, with a password (a Redis that other machines reach has
one; without it Redis's protected mode turns them away). Workers on both nodes get that one URL,
as on a real cluster where every node reaches the same Redis address.

Everything is undone at the end of the session, and when setting up fails halfway (an
ExitStack): the manager leaves the swarm (which ends it), both dockerds stop, whatever still runs in node 2's namespace is killed by pid,
mounts and folders go, and the veth pair and the namespace are deleted. Without root, `ip` or
`nsenter` the tests skip and say what is missing; where dockerd cannot run, they skip with its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scaler.backends.docker import DockerOptions
from scaler.backends.swarm import SwarmBackend
from serverless.redis_server import RedisProcess
from tests.backends.docker_engine import (
    STORAGE_FLAGS,
    DockerEngine,
    EngineUnavailable,
    SwarmNode,
    api,
    gpu_flags,
    join_swarm,
    leave_swarm,
    log_tail,
    restart_engine,
    say,
    start_private_engine,
    stop_engine,
)

H100 = "NVIDIA-H100-80GB-HBM3"
PRODUCT_LABEL = "gpu.product"
NODE2_GPUS = ["GPU-node2-0", "GPU-node2-1"]
NODE2_FLAGS = [*STORAGE_FLAGS, *gpu_flags(NODE2_GPUS)]
HEARTBEAT_S = 1.0  # Swarm's node heartbeat here (its default is 5 s)
GRACE_S = 5.0  # the services' StopGracePeriod
NODE_TIMEOUT_S = 30.0
NET_PREFIX = "10.231"  # the /30s of the veth pairs: 10.231.N.0/30
HOW_TO_RUN = "run them as root on Linux with both installed: sudo .venv/bin/pytest tests/backends/test_swarm_nodes.py"


TOOLS = {"ip": "iproute2", "nsenter": "util-linux"}  # what a second node needs, and its package


def missing_requirements(euid: int, which: Callable[[str], str | None]) -> list[str]:
    """What a machine lacks for a second node (pure): root, `ip`, `nsenter`; [] when nothing.

    Args:
        euid: the effective user id (`os.geteuid()`).
        which: finds a program on PATH (`shutil.which`).
    """
    missing = [] if euid == 0 else ["root (network namespaces, a second dockerd)"]
    return missing + [f"`{tool}` ({package})" for tool, package in TOOLS.items() if not which(tool)]


def skip_reason(missing: list[str]) -> str:
    """Why the two-node tests skip, and how to run them (pure)."""
    return f"the two-node swarm tests need {', '.join(missing)}: {HOW_TO_RUN}"


@dataclass
class Link:
    """A network namespace for node 2 and the veth pair that joins it to the host."""

    netns: str
    host_if: str
    host_ip: str
    node_ip: str

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"

    def enter(self) -> list[str]:
        """The command prefix that runs a program inside the namespace (network only)."""
        return ["nsenter", f"--net={self.netns_path}"]


# what `ip netns add` and veth pairs need beyond root, where they fail
NET_ADMIN_HINT = ("network namespaces and veth pairs need CAP_SYS_ADMIN and CAP_NET_ADMIN: "
                  "inside a container, run it with --privileged")


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise EngineUnavailable(f"`{' '.join(cmd)}` failed: {done.stderr.strip() or done.stdout.strip()} "
                                f"({NET_ADMIN_HINT})")


def _quiet(cmd: list[str]) -> None:
    subprocess.run(cmd, capture_output=True, timeout=30)


def free_subnet(addresses: str, start: int) -> int:
    """N such that no address in `addresses` (`ip -o -4 addr` output) is in 10.231.N.0/24,
    trying N = start, start + 1, ... (mod 256) (pure).

    Raises:
        EngineUnavailable: every N is taken.
    """
    taken = set(re.findall(rf"\binet {re.escape(NET_PREFIX)}\.(\d+)\.", addresses))
    for step in range(256):
        n = (start + step) % 256
        if str(n) not in taken:
            return n
    raise EngineUnavailable(f"every {NET_PREFIX}.N.0/24 is in use here: delete some of those addresses")


def make_link(stack: contextlib.ExitStack) -> Link:
    """Create the namespace and the veth pair, each undone by `stack`."""
    tag = f"pq{os.getpid() % 100_000}"  # interface names: at most 15 characters
    listed = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, timeout=10).stdout
    n = free_subnet(listed, os.getpid())
    link = Link(netns=f"{tag}-node2", host_if=f"{tag}h", host_ip=f"{NET_PREFIX}.{n}.1",
                node_ip=f"{NET_PREFIX}.{n}.2")
    node_if = f"{tag}n"
    _run(["ip", "netns", "add", link.netns])
    stack.callback(_quiet, ["ip", "netns", "delete", link.netns])
    stack.callback(kill_namespace, link.netns_path)  # runs before the delete above
    _run(["ip", "link", "add", link.host_if, "type", "veth", "peer", "name", node_if])
    stack.callback(_quiet, ["ip", "link", "delete", link.host_if])
    _run(["ip", "link", "set", node_if, "netns", link.netns])
    _run(["ip", "addr", "add", f"{link.host_ip}/30", "dev", link.host_if])
    _run(["ip", "link", "set", link.host_if, "up"])
    for cmd in (["ip", "addr", "add", f"{link.node_ip}/30", "dev", node_if],
                ["ip", "link", "set", node_if, "up"], ["ip", "link", "set", "lo", "up"]):
        _run([*link.enter(), *cmd])
    return link


def processes_in(netns_path: str) -> list[int]:
    """The pids of every process in the network namespace (node 2's dockerd, containerd,
    shims and containers: everything that was started inside it)."""
    target = os.stat(netns_path)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ns = os.stat(entry / "ns" / "net")
        except OSError:  # gone, or not ours to read
            continue
        if (ns.st_dev, ns.st_ino) == (target.st_dev, target.st_ino):
            found.append(int(entry.name))
    return found


def kill_namespace(netns_path: str, timeout: float = 10.0) -> None:
    """SIGKILL every process in the namespace, by pid, and wait until they are gone."""
    if not os.path.exists(netns_path):
        return
    deadline = time.monotonic() + timeout
    while (pids := processes_in(netns_path)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def join_worker(manager: SwarmNode, engine: DockerEngine, address: str) -> SwarmNode:
    """`docker swarm join` of `engine` as a worker, listening and advertising on `address`.

    Returns:
        The new node, seen through the manager's API (labels, state).
    """
    status, body = api(manager.engine.socket_path, "GET", "/swarm")
    if status != 200:
        raise EngineUnavailable(f"GET /swarm on the manager failed: {status} {body!r}")
    request = {"ListenAddr": f"{address}:2377", "AdvertiseAddr": address,
               "RemoteAddrs": [manager.node()["ManagerStatus"]["Addr"]],
               "JoinToken": json.loads(body)["JoinTokens"]["Worker"]}
    status, body = api(engine.socket_path, "POST", "/swarm/join", json.dumps(request).encode())
    if status != 200:
        raise EngineUnavailable(f"swarm join of node 2 failed: {status} {body[-800:]!r}")
    status, body = api(engine.socket_path, "GET", "/info")
    return SwarmNode(engine=manager.engine, node_id=json.loads(body)["Swarm"]["NodeID"], initialised=False)


@dataclass
class TwoNodeSwarm:
    """The manager (node 1), node 2 and the Redis both reach."""

    manager: SwarmNode
    second: SwarmNode  # node 2 as the manager's API shows it
    second_engine: DockerEngine  # node 2's own dockerd, inside the namespace
    link: Link
    redis_url: str
    timings: dict[str, float] = field(default_factory=dict)

    def options(self, **changes: object) -> DockerOptions:
        """The swarm backend's options: the manager's engine, the host's Python in the test image."""
        return self.manager.engine.options(**changes)

    def state(self, node: SwarmNode) -> str:
        """The node's state as the manager sees it: ready, down, unknown or disconnected."""
        return str((node.node().get("Status") or {}).get("State") or "")

    def wait_state(self, node: SwarmNode, state: str, timeout: float = NODE_TIMEOUT_S) -> float:
        """Seconds until the manager lists `node` in `state`."""
        began = time.monotonic()
        while (seen := self.state(node)) != state:
            if time.monotonic() - began > timeout:
                raise AssertionError(f"swarm node {node.node_id} is {seen!r}, not {state!r}, after "
                                     f"{timeout:.0f} s\n--- node 2 dockerd log ---\n{log_tail(self.second_engine.log)}")
            time.sleep(0.1)
        return time.monotonic() - began

    def kill_second_dockerd(self) -> None:
        """SIGKILL node 2's dockerd (its containerd goes with it; the container shims stay)."""
        assert self.second_engine.process is not None
        self.second_engine.process.kill()
        self.second_engine.process.wait(timeout=10)

    def power_off_second(self) -> None:
        """Node 2 stops like a machine that lost power: every process in it is SIGKILLed."""
        kill_namespace(self.link.netns_path)

    def restart_second(self) -> float:
        """Start node 2's dockerd again on its own root; seconds until the swarm lists it ready."""
        restart_engine(self.second_engine, NODE2_FLAGS, self.link.enter())
        return self.wait_state(self.second, "ready")


def start_two_nodes(stack: contextlib.ExitStack) -> TwoNodeSwarm:
    """Build the two-node swarm and its Redis; `stack` undoes every step, in reverse."""
    timings: dict[str, float] = {}
    began = time.monotonic()
    link = make_link(stack)
    manager_engine = start_private_engine()  # the suite's flags: fake GPUs 0 and 1
    stack.callback(stop_engine, manager_engine)
    second_engine = start_private_engine(NODE2_FLAGS, link.enter())
    stack.callback(stop_engine, second_engine)  # before kill_namespace: what it left goes then
    timings["engines"] = time.monotonic() - began
    manager = join_swarm(manager_engine, address=link.host_ip, heartbeat_s=HEARTBEAT_S)
    stack.callback(leave_swarm, manager)
    # node 2 never leaves on its own: its `swarm leave` waits ~7 s on the manager, which is about
    # to leave (dissolving the swarm), and its swarm state goes with its data root
    second = join_worker(manager, second_engine, link.node_ip)
    password = secrets.token_hex(12)
    redis = RedisProcess("--bind", "127.0.0.1", link.host_ip, password=password).start()
    stack.callback(redis.stop)
    two = TwoNodeSwarm(manager=manager, second=second, second_engine=second_engine, link=link,
                       redis_url=f"redis://:{password}@{link.host_ip}:{redis.port}/0", timings=timings)
    timings["join"] = two.wait_state(second, "ready")
    for node in (manager, second):
        node.set_label(PRODUCT_LABEL, H100)
    timings["total"] = time.monotonic() - began
    return two


@pytest.fixture(scope="session")
def two_node_swarm(request: pytest.FixtureRequest, docker_engine: DockerEngine) -> Iterator[TwoNodeSwarm]:
    """The session's two-node swarm. It skips, saying why, only where its parts cannot run: no
    Docker engine (`docker_engine` skips), no root, no `ip` or `nsenter`; where they can, a swarm
    that cannot be built is a failure, not a skip."""
    missing = missing_requirements(os.geteuid(), shutil.which)
    if missing:
        pytest.skip(skip_reason(missing))
    with contextlib.ExitStack() as stack:
        two = start_two_nodes(stack)
        say(request.config, "two-node swarm: " + ", ".join(f"{k} {v:.2f} s" for k, v in two.timings.items()))
        yield two


@pytest.fixture
def swarm2_backend(two_node_swarm: TwoNodeSwarm) -> SwarmBackend:
    """A SwarmBackend on the two-node swarm's manager, running the host's Python (a plain
    fixture, as `swarm_backend` is: the contract suite's async `backend` fixture asks for it)."""
    return SwarmBackend(two_node_swarm.options(), grace_s=GRACE_S)
