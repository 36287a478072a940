"""A private Docker engine for the test session, and an image to run workers in.

The `docker_engine` fixture starts its own `dockerd` (vfs storage, no iptables, no bridge) with
its own data root, exec root, pid file and socket under a temporary folder, so it never meets
another engine on the machine, and stops it at the end of the session. When `dockerd` is
missing it installs Debian's `docker.io` package (root only; PODQ_TEST_DOCKER_INSTALL=0 turns
that off). PODQ_TEST_DOCKER_HOST=unix:///... uses an engine that is already running instead.

No registry is reachable from CI, so the worker image is made locally: `docker import` of an
empty tar, run with the host's own Python, the repository and its venv bind-mounted read-only
(docs: shared/reference/docker-engine-in-tests.md). When the engine cannot start or cannot run
a container here, every test that uses it skips with the reason and the tail of dockerd's log.

The `swarm_engine` fixture turns the same engine into a one-node swarm (`swarm init` on
127.0.0.1) for the swarm backend, and leaves the swarm at the end of the session. The engine
advertises two fake GPUs as Swarm generic resources (`FAKE_GPUS`), which only Swarm reads, and
prefers local images for services (DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1: no registry lookup
before each task, which stalls where DNS is slow to fail).

The two-node swarm (tests/backends/swarm_nodes.py) builds on the same pieces: more private
engines (`start_private_engine`, with other flags or inside a network namespace), started again
on their own root (`restart_engine`), a manager that listens where another node reaches it
(`join_swarm(address=...)`), and node updates (`SwarmNode.set_label`, `set_availability`).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from scaler.backends.docker import DockerOptions

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "podq-test-worker:1"
GPU_KIND = "NVIDIA-GPU"
FAKE_GPUS = ["GPU-fake-0", "GPU-fake-1"]
# what every private dockerd of the suite runs with: no storage driver that needs a kernel
# module, no iptables rules, no docker0 bridge (workers use the host network)
STORAGE_FLAGS = ["--storage-driver=vfs", "--iptables=false", "--bridge=none"]


def gpu_flags(gpus: list[str]) -> list[str]:
    """dockerd flags that advertise `gpus` as Swarm generic resources of kind GPU_KIND."""
    return [f"--node-generic-resource={GPU_KIND}={gpu}" for gpu in gpus]


DOCKERD_FLAGS = [*STORAGE_FLAGS, *gpu_flags(FAKE_GPUS)]
READY_TIMEOUT_S = 30.0
# interfaces a swarm-mode dockerd makes in the host's network namespace and leaves there
SWARM_LINKS = ["docker_gwbridge"]


class EngineUnavailable(Exception):
    """dockerd could not be installed, started or made to run a container here."""


@dataclass
class DockerEngine:
    """A running engine the tests may use, and the options that run workers on it."""

    host: str
    binds: list[str]
    image: str = IMAGE
    process: subprocess.Popen[bytes] | None = None
    root: Path | None = None
    log: Path | None = None
    started_in_s: float = 0.0
    installed_in_s: float = 0.0
    # host interfaces this session's swarm made (deleted with the engine)
    made_links: list[str] = field(default_factory=list)

    @property
    def socket_path(self) -> str:
        return self.host.removeprefix("unix://")

    def options(self, **changes: object) -> DockerOptions:
        """DockerOptions that run the host's Python in `self.image` on this engine."""
        base = DockerOptions(host=self.host, image=self.image, binds=self.binds, python=sys.executable)
        return msgspec.structs.replace(base, **changes)


def api(socket_path: str, method: str, path: str, body: bytes | None = None,
        content_type: str = "application/json", timeout: float = 60) -> tuple[int, bytes]:
    """One Engine API call over the unix socket (the fixture runs outside any event loop)."""
    conn = http.client.HTTPConnection("docker", timeout=timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(socket_path)
    conn.sock = sock
    try:
        conn.request(method, path, body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def host_binds() -> list[str]:
    """Read-only binds that let an empty image run this interpreter, venv and repository."""
    wanted = ["/usr", "/lib", "/lib64", "/bin", "/sbin", os.path.realpath(sys.base_prefix),
              os.path.realpath(sys.prefix), str(ROOT)]
    kept: list[str] = []
    for path in wanted:
        inside = any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept)
        if os.path.exists(path) and not inside:
            kept.append(path)
    return [f"{p}:{p}:ro" for p in kept]


def _dockerd() -> tuple[str, float]:
    found = shutil.which("dockerd")
    if found:
        return found, 0.0
    if os.environ.get("PODQ_TEST_DOCKER_INSTALL", "1") == "0":
        raise EngineUnavailable("dockerd is not installed and PODQ_TEST_DOCKER_INSTALL=0")
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise EngineUnavailable("dockerd is not installed; install it: apt-get install -y docker.io")
    began = time.monotonic()
    _install_docker()
    found = shutil.which("dockerd")
    if not found:
        raise EngineUnavailable("apt-get installed docker.io but dockerd is still not on PATH")
    return found, time.monotonic() - began


# Each step is bounded so that install + start stay inside pytest's 120 s per-test timeout:
# a slow mirror skips the docker tests (with this reason) instead of failing the run.
INSTALL_STEPS = [(["apt-get", "update", "-q"], 40), (["apt-get", "install", "-y", "-q", "docker.io"], 60)]


def _install_docker() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd, limit in INSTALL_STEPS:
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired as e:
            raise EngineUnavailable(f"{' '.join(cmd)} took over {limit} s; install docker.io before "
                                    "running the tests (apt-get install -y docker.io)") from e
        if done.returncode != 0:
            raise EngineUnavailable(f"{' '.join(cmd)} failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")


def _spawn(dockerd: str, root: Path, flags: list[str], wrap: list[str]) -> subprocess.Popen[bytes]:
    (root / "daemon.json").write_text("{}")  # never read the machine's /etc/docker/daemon.json
    cmd = [*wrap, dockerd, *flags, f"--data-root={root / 'data'}", f"--exec-root={root / 'exec'}",
           f"--pidfile={root / 'dockerd.pid'}", f"--config-file={root / 'daemon.json'}",
           f"-H=unix://{root / 'docker.sock'}"]
    # swarm tasks use the local image instead of asking a registry first (none is reachable)
    env = {**os.environ, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"}
    with open(root / "dockerd.log", "ab") as log:  # a restarted engine (same root) appends
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)


def _wait_ready(engine: DockerEngine) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if engine.process is not None and engine.process.poll() is not None:
            raise EngineUnavailable(f"dockerd exited with status {engine.process.returncode}")
        try:
            if api(engine.socket_path, "GET", "/_ping", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise EngineUnavailable(f"dockerd did not answer /_ping within {READY_TIMEOUT_S:.0f} s")


def _empty_tar() -> bytes:
    buffer = io.BytesIO()
    tarfile.open(fileobj=buffer, mode="w").close()
    return buffer.getvalue()


def import_image(engine: DockerEngine) -> None:
    """`docker import` of an empty tar as `engine.image` (a scratch image, no registry)."""
    repo, tag = engine.image.rsplit(":", 1)
    status, body = api(engine.socket_path, "POST", f"/images/create?fromSrc=-&repo={repo}&tag={tag}",
                       _empty_tar(), content_type="application/x-tar")
    if status != 200 or b'"error' in body:
        raise EngineUnavailable(f"importing {engine.image} failed: {status} {body[-500:]!r}")


def probe(engine: DockerEngine) -> None:
    """Run /bin/true in the test image: proves this machine can run containers at all."""
    config = {"Image": engine.image, "Cmd": ["/bin/true"],
              "HostConfig": {"NetworkMode": "host", "Binds": engine.binds}}
    status, body = api(engine.socket_path, "POST", "/containers/create", json.dumps(config).encode())
    if status != 201:
        raise EngineUnavailable(f"creating a probe container failed: {status} {body!r}")
    ref = json.loads(body)["Id"]
    try:
        status, body = api(engine.socket_path, "POST", f"/containers/{ref}/start")
        if status != 204:
            raise EngineUnavailable(f"dockerd cannot run containers here: {status} {body!r}")
        status, body = api(engine.socket_path, "POST", f"/containers/{ref}/wait")
        if status != 200 or json.loads(body).get("StatusCode") != 0:
            raise EngineUnavailable(f"the probe container failed: {status} {body!r}")
    finally:
        api(engine.socket_path, "DELETE", f"/containers/{ref}?force=1")


def start_engine() -> DockerEngine:
    """Install (if needed) and start a private dockerd, import the test image and probe it."""
    given = os.environ.get("PODQ_TEST_DOCKER_HOST")
    if given:
        engine = DockerEngine(host=given, binds=host_binds())
        import_image(engine)
        probe(engine)
        return engine
    return start_private_engine()


def start_private_engine(flags: list[str] = DOCKERD_FLAGS, wrap: list[str] | None = None) -> DockerEngine:
    """Start a dockerd of our own (its own data root, exec root, pid file and socket under a new
    temporary folder), import the test image and probe it; stopped by `stop_engine`.

    Args:
        flags: dockerd's flags besides its paths (default: STORAGE_FLAGS and the fake GPUs).
        wrap: a command that runs dockerd, e.g. `nsenter --net=<netns>` for a second node.

    Raises:
        EngineUnavailable: with the tail of dockerd's log.
    """
    dockerd, installed_in = _dockerd()
    root = Path(tempfile.mkdtemp(prefix="podq-dockerd-", dir="/tmp" if os.path.isdir("/tmp") else None))
    engine = DockerEngine(host=f"unix://{root / 'docker.sock'}", binds=host_binds(), root=root,
                          log=root / "dockerd.log", installed_in_s=installed_in)
    try:
        restart_engine(engine, flags, wrap or [], dockerd)
        import_image(engine)
        probe(engine)
    except (EngineUnavailable, OSError) as e:
        tail = log_tail(engine.log)
        stop_engine(engine)
        raise EngineUnavailable(f"{e}\n--- dockerd log tail ---\n{tail}") from e
    return engine


def restart_engine(engine: DockerEngine, flags: list[str], wrap: list[str], dockerd: str = "dockerd") -> None:
    """(Re)start `engine`'s dockerd on its own root (its swarm state included: a swarm node
    comes back as the same node) and wait for /_ping; `started_in_s` is how long that took."""
    assert engine.root is not None, "only a private engine can be (re)started"
    began = time.monotonic()
    engine.process = _spawn(dockerd, engine.root, flags, wrap)
    _wait_ready(engine)
    engine.started_in_s = time.monotonic() - began


def stop_engine(engine: DockerEngine) -> None:
    """Remove every container, stop dockerd (TERM, then KILL) and delete its folder."""
    if engine.process is None:
        return
    try:
        status, body = api(engine.socket_path, "GET", "/containers/json?all=1", timeout=5)
        for container in json.loads(body) if status == 200 else []:
            api(engine.socket_path, "DELETE", f"/containers/{container['Id']}?force=1", timeout=20)
    except OSError:
        pass
    engine.process.terminate()
    try:
        engine.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        engine.process.kill()
        engine.process.wait(timeout=10)
    if engine.root is not None:
        _unmount_under(engine.root)
        shutil.rmtree(engine.root, ignore_errors=True)
    for link in engine.made_links:
        subprocess.run(["ip", "link", "delete", link], capture_output=True, timeout=10)


def _unmount_under(root: Path) -> None:
    # dockerd leaves its netns bind mount (exec-root/netns/default) behind when it exits
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=10)


def log_tail(path: Path | None, lines: int = 25) -> str:
    """The last lines of a dockerd log, for skip and failure messages."""
    if path is None or not path.exists():
        return "(no dockerd log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def say(config: pytest.Config, text: str) -> None:
    """Print past pytest's capture: timings that the benchmark notes quote."""
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n[docker] {text}", flush=True)


@pytest.fixture(scope="session")
def docker_engine(request: pytest.FixtureRequest) -> Iterator[DockerEngine]:
    """A Docker engine for this session; the tests using it skip, loudly, when there is none."""
    try:
        engine = start_engine()
    except (EngineUnavailable, OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"no Docker engine for the docker backend tests: {e}")
    say(request.config, f"engine {engine.host}: dockerd installed in {engine.installed_in_s:.1f} s, "
                        f"answered /_ping in {engine.started_in_s:.2f} s")
    yield engine
    stop_engine(engine)


# -- swarm mode --------------------------------------------------------------------------------


@dataclass
class SwarmNode:
    """The session's engine as the one node (a manager) of a swarm."""

    engine: DockerEngine
    node_id: str
    initialised: bool  # this session ran `swarm init` (and leaves the swarm at the end)
    init_in_s: float = 0.0

    def node(self) -> dict:
        """The node as `GET /nodes/<id>` shows it."""
        status, body = api(self.engine.socket_path, "GET", f"/nodes/{self.node_id}")
        if status != 200:
            raise EngineUnavailable(f"inspecting swarm node {self.node_id} failed: {status} {body!r}")
        return json.loads(body)

    def set_label(self, key: str, value: str | None) -> None:
        """`docker node update --label-add key=value` (or `--label-rm key` for None)."""
        labels = dict(self.node()["Spec"].get("Labels") or {})
        if value is None:
            labels.pop(key, None)
        else:
            labels[key] = value
        self._update("Labels", labels)

    def set_availability(self, availability: str) -> None:
        """`docker node update --availability active|pause|drain`: a paused node keeps its tasks
        and gets no new ones."""
        self._update("Availability", availability)

    def _update(self, field: str, value: object) -> None:
        node = self.node()
        spec = {**node["Spec"], field: value}
        status, body = api(self.engine.socket_path, "POST",
                           f"/nodes/{self.node_id}/update?version={node['Version']['Index']}",
                           json.dumps(spec).encode())
        if status != 200:
            raise EngineUnavailable(f"updating {field} of swarm node {self.node_id} failed: {status} {body!r}")

    def generic_resources(self, kind: str = GPU_KIND) -> list[str]:
        """The ids of the `kind` resources the node advertises."""
        resources = (self.node().get("Description") or {}).get("Resources") or {}
        return sorted(r["NamedResourceSpec"]["Value"] for r in resources.get("GenericResources") or []
                      if (r.get("NamedResourceSpec") or {}).get("Kind") == kind)


def _free_port(address: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _links() -> set[str]:
    return {p.name for p in Path("/sys/class/net").iterdir()} if Path("/sys/class/net").is_dir() else set()


def join_swarm(engine: DockerEngine, address: str = "127.0.0.1", heartbeat_s: float = 0) -> SwarmNode:
    """Make `engine` a one-node swarm on `address` (or use the swarm it is already part of).

    Args:
        engine: the engine that becomes the manager.
        address: the IP it listens on and advertises (a free port): where other nodes join it.
        heartbeat_s: the nodes' heartbeat period (`docker swarm init --dispatcher-heartbeat`;
            Swarm marks a silent node down after about three of them); 0: Swarm's 5 s.
    """
    status, body = api(engine.socket_path, "GET", "/info")
    if status != 200:
        raise EngineUnavailable(f"GET /info failed: {status} {body!r}")
    swarm = json.loads(body).get("Swarm") or {}
    if swarm.get("LocalNodeState") == "active":
        if not swarm.get("ControlAvailable"):
            raise EngineUnavailable("the engine is a swarm worker, not a manager: the swarm backend needs a manager")
        return SwarmNode(engine=engine, node_id=swarm["NodeID"], initialised=False)
    before = _links()
    listen = f"{address}:{_free_port(address)}"
    request: dict[str, object] = {"ListenAddr": listen, "AdvertiseAddr": listen}
    if heartbeat_s:
        request["Spec"] = {"Dispatcher": {"HeartbeatPeriod": int(heartbeat_s * 1e9)}}
    began = time.monotonic()
    status, body = api(engine.socket_path, "POST", "/swarm/init", json.dumps(request).encode())
    took = time.monotonic() - began
    if engine.process is not None:  # our own engine: its swarm's interfaces go with it
        engine.made_links += [link for link in SWARM_LINKS if link not in before]
    if status != 200:
        raise EngineUnavailable(f"swarm init failed: {status} {body[-800:]!r}")
    return SwarmNode(engine=engine, node_id=json.loads(body), initialised=True, init_in_s=took)


def leave_swarm(node: SwarmNode) -> None:
    """`docker swarm leave --force`, when this session made the swarm."""
    if not node.initialised:
        return
    try:
        api(node.engine.socket_path, "POST", "/swarm/leave?force=1", timeout=30)
    except OSError:
        pass


@pytest.fixture(scope="session")
def swarm_engine(docker_engine: DockerEngine, request: pytest.FixtureRequest) -> Iterator[SwarmNode]:
    """The session's engine in swarm mode; the tests using it skip, loudly, where Swarm cannot run."""
    try:
        node = join_swarm(docker_engine)
    except (EngineUnavailable, OSError, ValueError) as e:
        pytest.skip(f"no swarm for the swarm backend tests: {e}\n--- dockerd log tail ---\n"
                    f"{log_tail(docker_engine.log)}")
    say(request.config, f"swarm init in {node.init_in_s:.2f} s (node {node.node_id})")
    yield node
    leave_swarm(node)
