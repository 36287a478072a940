"""Run handler files written for RunPod unchanged: `import runpod` inside `podq worker`.

A RunPod handler calls `runpod.serverless.start({...})` and `runpod.serverless.progress_update`.
When the real `runpod` package is installed we keep it (its utilities such as rp_validator keep
working) and point those two functions at podq's; when it is not, a small stand-in module named
`runpod` with a `serverless` namespace takes its place for this process only.
"""

from __future__ import annotations

import importlib
import re
import sys
import types

_IMPORTS_RUNPOD = re.compile(r"^\s*(import\s+runpod|from\s+runpod[\s.])", re.MULTILINE)


def uses_runpod(source: str) -> bool:
    """Whether a handler file imports runpod (importing the real package costs ~1 s, so
    files that do not use it never pay for it)."""
    return bool(_IMPORTS_RUNPOD.search(source))


def install() -> None:
    """Make `runpod.serverless.start` / `progress_update` podq's in this process."""
    import worker

    try:
        runpod = importlib.import_module("runpod")
        serverless_mod = importlib.import_module("runpod.serverless")
    except Exception:
        runpod = types.ModuleType("runpod")
        serverless_mod = types.ModuleType("runpod.serverless")
        runpod.serverless = serverless_mod  # type: ignore[attr-defined]
        sys.modules["runpod"] = runpod
        sys.modules["runpod.serverless"] = serverless_mod
    serverless_mod.start = worker.start  # type: ignore[attr-defined]
    serverless_mod.progress_update = worker.progress_update  # type: ignore[attr-defined]
