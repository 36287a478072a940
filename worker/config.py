"""The handler config a user passes to `serverless.start({...})`, validated once."""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable
from typing import Any

import msgspec

from serverless.errors import ConfigError

log = logging.getLogger("podq.worker")

KNOWN_KEYS = {"handler", "return_aggregate_stream", "concurrency_modifier", "refresh_worker"}
# Keys RunPod's SDK accepts that mean nothing on podq; accepted so RunPod configs run unchanged.
IGNORED_KEYS = {"rp_args", "reference_counter_start", "jobs_fetcher", "jobs_fetcher_timeout",
                "jobs_handler", "stop_signals_fetcher", "stop_signals_fetcher_timeout"}


class HandlerConfig(msgspec.Struct, frozen=True):
    handler: Callable[..., Any]
    return_aggregate_stream: bool = False
    concurrency_modifier: Callable[[int], int] | None = None
    refresh_worker: bool = False

    def next_concurrency(self, current: int) -> int:
        """Ask concurrency_modifier; a None, non-int or < 1 answer keeps `current`
        (RunPod crashes on None: runpod-python#458)."""
        if self.concurrency_modifier is None:
            return current
        try:
            wanted = self.concurrency_modifier(current)
        except Exception as e:
            log.warning("concurrency_modifier raised %r; keeping concurrency %d", e, current)
            return current
        return wanted if isinstance(wanted, int) and wanted >= 1 else current


def parse_config(config: dict[str, Any]) -> HandlerConfig:
    if not isinstance(config, dict):
        raise ConfigError(f"start() takes a dict like {{'handler': fn}}, got {type(config).__name__}")
    handler = config.get("handler")
    if not callable(handler):
        raise ConfigError(f"start() needs a callable 'handler', got {handler!r}")
    modifier = config.get("concurrency_modifier")
    if modifier is not None and not callable(modifier):
        raise ConfigError(f"'concurrency_modifier' must be callable, got {modifier!r}")
    unknown = set(config) - KNOWN_KEYS - IGNORED_KEYS
    if unknown:
        log.warning("start() ignores unknown config keys: %s", ", ".join(sorted(unknown)))
    return HandlerConfig(
        handler=handler,
        return_aggregate_stream=bool(config.get("return_aggregate_stream", False)),
        concurrency_modifier=modifier,
        refresh_worker=bool(config.get("refresh_worker", False)),
    )


# ---- process limits ------------------------------------------------------------------------

def apply_memory_cap(mb: int) -> None:
    """Cap this process's data segment (heap and private anonymous mappings: RLIMIT_DATA), so a
    handler that allocates without bound gets MemoryError, a FAILED job, instead of the whole
    host swapping or the kernel OOM killer picking a process. Only the soft limit is set; it is
    inherited across the re-exec of refresh_worker. RLIMIT_DATA, not RLIMIT_AS: address space
    reserved but never written (thread stacks, malloc arenas, CUDA mappings) does not count."""
    if not mb:  # Settings.worker_memory_mb (PODQ_WORKER_MEMORY_MB): 0 = no cap
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
