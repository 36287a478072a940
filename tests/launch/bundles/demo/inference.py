"""Launch's load_model_fn / load_predict_fn pair: predict(x, y=0) adds and scales; URL bytes
are measured; x == "boom" raises (a FAILURE with a traceback)."""

from __future__ import annotations

import os
from typing import Any

LOADS = {"model": 0}


def load_model() -> dict[str, Any]:
    LOADS["model"] += 1
    return {"scale": 2, "pid": os.getpid()}


def load_predict(model: dict[str, Any], app_config: dict[str, Any] | None = None) -> Any:
    offset = (app_config or {}).get("offset", 0)

    def predict(x: Any, y: int = 0) -> dict[str, Any]:
        if isinstance(x, bytes):
            return {"length": len(x), "text": x.decode()}
        if x == "boom":
            raise ValueError("boom was asked for")
        return {"sum": (x + y) * model["scale"] + offset, "loads": LOADS["model"]}

    return predict


def load_stream(model: dict[str, Any]) -> Any:
    def predict(n: int) -> Any:
        for i in range(n):
            yield {"i": i * model["scale"]}
        if n == 3:
            raise RuntimeError("stream broke after 3")

    return predict
