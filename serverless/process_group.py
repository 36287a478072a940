"""Signalling a worker's whole process group: the one place podq ends a worker process tree.

Workers are started in their own session (`start_new_session=True`), so the worker's pid is its
group's id and every process it forks (a RunPod SDK worker's ping child, a handler's
subprocesses) is in that group. Stopping sends SIGTERM to the main process only (it drains),
and once it has exited or its grace is over, SIGKILL to the whole group: RunPod's ping child
otherwise outlives its parent and keeps pinging a stale job list forever.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def send(pid: int, sig: int) -> None:
    """Signal one process; a process that is gone already is fine."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def kill_group(pgid: int) -> None:
    """SIGKILL every process left in the group `pgid`."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def group_of(pid: int) -> int:
    """The process group of `pid` (from /proc; 0 when it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return 0
