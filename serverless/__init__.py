"""podq: self-hosted, RunPod-style serverless inference.

Worker side:  serverless.start({"handler": fn}), serverless.progress_update(job, data)
Client side:  serverless.Endpoint, Job, AsyncioEndpoint, AsyncioJob
Admin:        serverless.create_template, create_endpoint (-> ManagedEndpoint), get_endpoints,
              update_endpoint, delete_endpoint, ... (RunPod's names, over the /v1 admin API)
Batches:      serverless.batch(endpoint_id, inputs=path | iterable, url=...) -> BatchHandle
Settings:     serverless.api_key, serverless.endpoint_url_base (else PODQ_API_KEY,
              PODQ_ENDPOINT_BASE_URL)

Names are imported lazily, so a client app does not load the worker runtime and vice versa.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AdminClient",
    "AsyncioEndpoint",
    "AsyncioJob",
    "Endpoint",
    "Job",
    "ManagedEndpoint",
    "api_key",
    "batch",
    "create_endpoint",
    "create_template",
    "delete_endpoint",
    "delete_template",
    "endpoint_url_base",
    "get_endpoint",
    "get_endpoints",
    "get_template",
    "get_templates",
    "progress_update",
    "start",
    "update_endpoint",
    "update_endpoint_template",
    "update_template",
]

api_key: str | None = None
endpoint_url_base: str | None = None

_LAZY = {
    "start": "worker",
    "progress_update": "worker",
    "batch": "serverless.batches.client",
    "Endpoint": "serverless.client",
    "Job": "serverless.client",
    "AsyncioEndpoint": "serverless.client",
    "AsyncioJob": "serverless.client",
    **dict.fromkeys(
        (
            "AdminClient", "ManagedEndpoint", "create_endpoint", "create_template",
            "delete_endpoint", "delete_template", "get_endpoint", "get_endpoints",
            "get_template", "get_templates", "update_endpoint", "update_endpoint_template",
            "update_template",
        ),
        "serverless.admin",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'serverless' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
