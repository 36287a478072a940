"""`podq deploy`: podq's control plane rendered for a cluster manager, as pure data.

Each target is one module of pure builders (`kubernetes`: Kubernetes objects as plain dicts)
plus its flags in `cli`; nothing here applies anything to a cluster.
"""

from __future__ import annotations

from serverless.deploy.kubernetes import DeployOptions, ExternalRedis, InClusterRedis, render, to_yaml

__all__ = [
    "DeployOptions",
    "ExternalRedis",
    "InClusterRedis",
    "render",
    "to_yaml",
]
