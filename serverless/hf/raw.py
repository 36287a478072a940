"""A podq endpoint (and its template) as Hugging Face's endpoint record, `raw` (pure).

The shape is the Inference Endpoints API's (what huggingface_hub.InferenceEndpoint reads:
name, type, model.{repository, revision, task, framework, image, env}, compute.{accelerator,
instanceType, instanceSize, scaling}, provider, status.{state, message, url, createdAt,
updatedAt}, healthRoute), so `huggingface_hub.InferenceEndpoint.from_raw(raw, ...)` parses it.
Values come from where podq applies them (mapping.py): the model from the template's env, the
scaling from workers_min/max and idle_timeout, the hardware and provider from hf.* labels
(computed from gpu_ids / gpu_count for endpoints made without them). Secrets are never
returned, only their names (as HF's API hides their values).

The state is the scaler's last report, with two facts the config already holds ahead of the
scaler's next tick (1 s): a paused endpoint is `paused`, and a resumed one that the scaler
still reports paused is `pending` (as Hugging Face reports a resumed endpoint).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from serverless.hf.mapping import (
    HEALTH_ROUTE, LABEL, MODEL_ID, MODEL_REVISION, RESERVED_ENV, TASK, type_of,
)
from serverless.model import EndpointConfig, EndpointStatus, Template

# the states in which the endpoint answers requests (scaled to zero: the first job wakes it)
SERVING = frozenset({EndpointStatus.RUNNING, EndpointStatus.SCALED_TO_ZERO,
                     EndpointStatus.UPDATING, EndpointStatus.UPDATE_FAILED})


def state_of(endpoint: EndpointConfig, rolled: bool = False) -> EndpointStatus:
    """The endpoint's Hugging Face state (see the module docstring); `rolled`: its version
    was just bumped, so a running endpoint is updating (the scaler says so from its next tick)."""
    if endpoint.paused:
        return EndpointStatus.PAUSED
    if endpoint.status is EndpointStatus.PAUSED:  # resumed; the scaler has not looked yet
        return EndpointStatus.PENDING
    if rolled and endpoint.status is EndpointStatus.RUNNING:
        return EndpointStatus.UPDATING
    return endpoint.status


def iso(ms: int) -> str:
    """Epoch ms as the API's timestamps: `2024-01-31T12:00:00.000Z` (UTC)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def minutes_of(idle_timeout: int) -> int | None:
    """scaleToZeroTimeout (minutes) for idle_timeout (s); None when it is not whole minutes
    (podq's 5 s default: the endpoint was made without one)."""
    return idle_timeout // 60 if idle_timeout % 60 == 0 else None


def _hardware(endpoint: EndpointConfig) -> dict[str, Any]:
    label = endpoint.labels.get
    accelerator = label(LABEL + "accelerator") or ("gpu" if endpoint.gpu_count else "cpu")
    return {
        "accelerator": accelerator,
        "instanceType": label(LABEL + "instance_type") or endpoint.gpu_ids.lower(),
        "instanceSize": label(LABEL + "instance_size") or f"x{max(endpoint.gpu_count, 1)}",
        "scaling": {"minReplica": endpoint.workers_min, "maxReplica": endpoint.workers_max,
                    "scaleToZeroTimeout": minutes_of(endpoint.idle_timeout)},
    }


def _model(endpoint: EndpointConfig, template: Template | None) -> dict[str, Any]:
    env = template.env if template is not None else {}
    secrets = set(filter(None, endpoint.labels.get(LABEL + "secrets", "").split(",")))
    image: dict[str, Any] = ({"custom": {"url": template.image_name, "healthRoute": HEALTH_ROUTE}}
                             if template is not None and template.image_name else {"huggingface": {}})
    return {
        "repository": env.get(MODEL_ID, ""),
        "revision": env.get(MODEL_REVISION),
        "task": env.get(TASK),
        "framework": endpoint.labels.get(LABEL + "framework", "custom"),
        "image": image,
        "env": {k: v for k, v in env.items() if k not in RESERVED_ENV and k not in secrets},
        "secrets": sorted(secrets & set(env)),
    }


def raw_of(endpoint: EndpointConfig, template: Template | None, url: str,
           rolled: bool = False) -> dict[str, Any]:
    """Hugging Face's record of `endpoint`.

    Args:
        endpoint: the endpoint, with the scaler's status.
        template: its template (None when it is gone).
        url: where its /hf route is; reported while the endpoint serves (SERVING).
        rolled: its version was just bumped by this client (see state_of).

    Returns:
        The record, JSON-able.
    """
    state = state_of(endpoint, rolled)
    return {
        "name": endpoint.id,
        "type": type_of(endpoint.access, endpoint.labels.get(LABEL + "type")),
        "accountId": None,
        "provider": {"vendor": endpoint.labels.get(LABEL + "vendor", "podq"),
                     "region": endpoint.labels.get(LABEL + "region", "local")},
        "compute": _hardware(endpoint),
        "model": _model(endpoint, template),
        "status": {"state": state.value, "message": endpoint.status_reason,
                   "url": url if state in SERVING else None,
                   "createdAt": iso(endpoint.created_at), "updatedAt": iso(endpoint.updated_at)},
        "healthRoute": HEALTH_ROUTE,
        "tags": sorted(filter(None, endpoint.labels.get(LABEL + "tags", "").split(","))),
    }
