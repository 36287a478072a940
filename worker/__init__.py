"""podq's worker runtime: runs a RunPod-style handler against the Redis job store."""

from __future__ import annotations

import logging
import sys
from typing import Any

from worker.process import start
from worker.runtime import current

__all__ = ["progress_update", "start"]

log = logging.getLogger("podq.worker")


def progress_update(job: dict[str, Any], progress: Any) -> None:
    """Show `progress` as the job's output in /status while it is IN_PROGRESS.

    Safe from sync handlers (threads) and async ones; always ordered before the final result.
    """
    worker = current()
    if worker is None:  # local test mode
        print(f"progress {job.get('id')}: {progress}", file=sys.stderr, flush=True)
        return
    worker.progress(job["id"], progress)
