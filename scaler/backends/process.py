"""Workers as local subprocesses: the default backend for one host (`podq dev`, a GPU box).

Each worker is `python -m worker <handler>` in its own session (so a scaler restart does not
take its workers down), with podq's labels in its environment. `list()` finds them by reading
/proc/<pid>/environ, so a restarted scaler adopts the workers that exist instead of orphaning or
duplicating them. Only processes started for the same Redis (the scope) are listed, so several
podq installations on one host never touch each other's workers. GPUs are given through
CUDA_VISIBLE_DEVICES (NVML uuids).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from scaler.backends.base import BackendError, WorkerHandle, WorkerSpec, refuse_volume_and_ports
from serverless.process_group import group_of, kill_group, send
from serverless.store import now_ms

ENV_MANAGED = "PODQ_MANAGED"
ENV_SCOPE = "PODQ_SCALER_SCOPE"
ENV_VERSION = "PODQ_WORKER_VERSION"
ENV_STARTED = "PODQ_STARTED_AT"


def scope_of(redis_url: str) -> str:
    return hashlib.sha256(redis_url.encode()).hexdigest()[:12]


class ProcessBackend:
    name = "process"
    places_gpus = False  # this host's devices, picked by the scaler (scaler/gpus.py)

    def __init__(self, redis_url: str, log_dir: str | None = None, python: str = sys.executable) -> None:
        self.scope = scope_of(redis_url)
        self.python = python
        self.log_dir = Path(log_dir or Path(tempfile.gettempdir()) / f"podq-workers-{self.scope}")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # only to reap exit statuses
        # what this instance started, by pid: listed from here until /proc shows its labels.
        # Right after Popen returns, /proc/<pid>/environ can still read empty (the kernel sets
        # the new image's environment late in execve), and a worker missing from one listing
        # would be started twice.
        self._started: dict[int, WorkerHandle] = {}

    async def start(self, spec: WorkerSpec) -> WorkerHandle:
        if spec.protocol == "runpod" and not spec.command:
            raise BackendError(
                f"worker {spec.worker_id}: a runpod-protocol template needs docker_start_cmd for the "
                "process backend (the command that starts the worker, e.g. `python -u /abs/handler.py`)"
            )
        if not spec.command and not spec.handler:
            raise BackendError(f"worker {spec.worker_id}: the template has no handler file or command")
        refuse_volume_and_ports(spec, self.name)
        if spec.cpus or spec.memory_mb:
            raise BackendError(f"worker {spec.worker_id}: the process backend cannot limit cpus or "
                               "memory; use a container backend (docker, swarm, kubernetes)")
        command = spec.command or [self.python, "-m", "worker", spec.handler or ""]
        env = {**os.environ, **spec.env, **self._labels(spec)}
        if spec.gpu_uuids:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(spec.gpu_uuids)
        cwd = None
        if spec.protocol == "runpod":
            cwd = private_dir(self.log_dir, spec.worker_id, env)
        log = open(self.log_dir / f"{spec.worker_id}.log", "ab")
        try:
            # in a thread: fork + exec of a large process blocks for milliseconds, and the
            # scaler starts several workers (of several endpoints) at once
            proc = await asyncio.to_thread(
                subprocess.Popen, command, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
        except OSError as e:
            raise BackendError(f"could not start {command[0]!r} for worker {spec.worker_id}: {e}") from e
        finally:
            log.close()
        self._children[proc.pid] = proc
        handle = WorkerHandle(worker_id=spec.worker_id, endpoint_id=spec.endpoint_id, version=spec.version,
                              ref=str(proc.pid), gpu_uuids=spec.gpu_uuids, started_at=int(env[ENV_STARTED]))
        self._started[proc.pid] = handle
        return handle

    def _labels(self, spec: WorkerSpec) -> dict[str, str]:
        return {
            ENV_MANAGED: "1", ENV_SCOPE: self.scope, ENV_VERSION: str(spec.version),
            ENV_STARTED: str(now_ms()), "PODQ_REDIS_URL": spec.redis_url,
            "PODQ_ENDPOINT_ID": spec.endpoint_id, "PODQ_WORKER_ID": spec.worker_id,
        }

    async def list(self) -> list[WorkerHandle]:
        self._reap()
        found: dict[int, WorkerHandle] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                handle = self._handle(int(entry.name))
                if handle is not None:
                    found[int(entry.name)] = handle
        for pid in [p for p in found if _orphaned(p)]:
            # the worker's main process died and left its group behind (RunPod's ping child,
            # re-parented to init, would go on pinging a stale job list): end the group
            kill_group(group_of(pid))
            del found[pid]
        for pid, handle in list(self._started.items()):
            if pid in found or pid not in self._children:  # labels visible now, or exited
                del self._started[pid]
            else:
                found[pid] = handle
        # a worker's own child processes inherit its environment: keep only the top process
        return [h for pid, h in found.items()
                if (parent := found.get(_ppid(pid))) is None or parent.worker_id != h.worker_id]

    def _handle(self, pid: int) -> WorkerHandle | None:
        env = _environ(pid)
        if env.get(ENV_MANAGED) != "1" or env.get(ENV_SCOPE) != self.scope:
            return None
        gpus = env.get("CUDA_VISIBLE_DEVICES", "")
        return WorkerHandle(
            worker_id=env.get("PODQ_WORKER_ID", ""), endpoint_id=env.get("PODQ_ENDPOINT_ID", ""),
            version=int(env.get(ENV_VERSION, "0")), ref=str(pid), running=not _is_zombie(pid),
            gpu_uuids=[g for g in gpus.split(",") if g], started_at=int(env.get(ENV_STARTED, "0")),
        )

    async def stop(self, handle: WorkerHandle, grace_s: float) -> None:
        """SIGTERM (the worker drains), then SIGKILL after `grace_s` + 5 s; then whatever is
        left of its process group (serverless/process_group.py)."""
        pid = int(handle.ref)
        send(pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s + 5
        while _alive(pid) and loop.time() < deadline:
            self._reap()
            await asyncio.sleep(0.05)
        if _alive(pid):
            send(pid, signal.SIGKILL)
        kill_group(pid)  # started with start_new_session: its pid is its group's id
        self._reap()

    def _reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]

    async def close(self) -> None:
        self._reap()

    def log_path(self, worker_id: str) -> Path:
        return self.log_dir / f"{worker_id}.log"


def private_dir(log_dir: Path, worker_id: str, env: dict[str, str]) -> str:
    """A fresh working directory for one RunPod worker start: SDK 1.7.12-1.10.0 keep their job
    list in the CWD (`.runpod_jobs.pkl`), and a stale one makes a new worker never take a job.
    A RunPod credentials file in $HOME (`~/.runpod/config.toml`) silently replaces
    RUNPOD_AI_API_KEY for takes and results, so when one exists HOME points here too."""
    path = log_dir / f"{worker_id}.cwd"
    path.mkdir(parents=True, exist_ok=True)
    if (Path(env.get("HOME", "~")).expanduser() / ".runpod" / "config.toml").exists():
        env["HOME"] = str(path)
    return str(path)


def _orphaned(pid: int) -> bool:
    """A process of a worker's group whose group leader (the worker's main process) is gone."""
    group = group_of(pid)
    return bool(group) and group != pid and not _alive(group)


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or another user's process
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and not _is_zombie(pid)
