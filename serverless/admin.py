"""Admin functions with RunPod's signatures, over HTTP to the gateway's /v1 API (admin key).

    template = create_template("sd", image_name="me/sd:1", handler="handler.py")
    endpoint = create_endpoint("sd", template["id"], workers_max=2)   # endpoint["id"] works
    endpoint.wait(timeout=300)          # until the scaler reports it running
    endpoint.pause(); endpoint.resume(); endpoint.scale_to_zero()
    endpoint.update(workers_max=4); endpoint.delete()

Where and how: the gateway root is `serverless.endpoint_url_base` or $PODQ_ENDPOINT_BASE_URL
without its trailing `/v2` (default http://127.0.0.1:8000); the key is `serverless.api_key` or
$PODQ_API_KEY, read at each call, as RunPod's admin functions read theirs. `AdminClient` takes
both explicitly (the CLI uses it). Errors are PodqErrors quoting the gateway's message:
BadRequest (400, an invalid setting), Forbidden (403, not the admin key), NotFound (404),
Conflict (409, an id taken or a template in use).

RunPod arguments podq has no use for (network_volume_id, locations, allowed_cuda_versions,
registry_auth_id) are accepted, so RunPod scripts run unchanged, and ignored. `flashboot=True`
is refused by the gateway (podq has no warm paused workers; use workers_min / idle_timeout).

    create_endpoint("sd", tpl, workers_max=4, update_if_exists=True)   # create, or update "sd"
    get_endpoints(labels={"team": "ml"})    # or labels=["team:ml", "prod"] ("prod": any value)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import msgspec

from serverless import runpod_unsupported as unsupported
from serverless.client import protocol
from serverless.errors import EndpointFailed, EndpointTimeout, PodqError
from serverless.model import EndpointStatus

_encode = msgspec.json.Encoder().encode
ENDPOINT_ACTIONS = ("pause", "resume", "scale-to-zero")
# query parameters: (name, value) pairs, a name repeated for a list
Query = list[tuple[str, str]]
LabelFilter = Mapping[str, str | None] | Iterable[str]


def label_query(labels: LabelFilter | None) -> Query:
    """`?label=` pairs for GET /v1/endpoints (pure): a mapping gives KEY:VALUE (None: any
    value), an iterable of strings is sent as written ("team:ml", "prod")."""
    if labels is None:
        return []
    if isinstance(labels, Mapping):
        return [("label", key if value is None else f"{key}:{value}") for key, value in labels.items()]
    if isinstance(labels, str):
        return [("label", labels)]
    return [("label", text) for text in labels]


def admin_base_url(base_url: str | None = None) -> str:
    """The gateway root: `base_url` (else the clients' base URL) without a trailing `/v2`."""
    base = (base_url or protocol.resolve_base_url()).rstrip("/")
    return base.removesuffix("/v2")


@dataclass(frozen=True)
class AdminClient:
    """The /v1 admin API as plain JSON: each method is one call and returns the reply."""

    base_url: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = protocol.CALL_TIMEOUT_S

    @classmethod
    def create(cls, base_url: str | None = None, api_key: str | None = None) -> AdminClient:
        """Resolve the gateway root and the key now (explicit values win).

        Args:
            base_url: the gateway root or its `/v2` URL; default: the clients' base URL.
            api_key: the admin key; default: serverless.api_key, else $PODQ_API_KEY.

        Returns:
            A client for the /v1 routes.
        """
        key = protocol.resolve_api_key(api_key)
        return cls(admin_base_url(base_url), protocol.auth_headers(key))

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None,
             query: Query | None = None) -> Any:
        """Send one /v1 request; the decoded JSON reply, or the PodqError for its status."""
        content = None if body is None else _encode(dict(body))
        url = f"{self.base_url}/v1/{path}" + (f"?{urlencode(query)}" if query else "")
        request = protocol.Request(method, url, self.headers, content, self.timeout)
        try:
            response = httpx.request(
                method, request.url, content=content, headers=self.headers, timeout=self.timeout
            )
        except httpx.TransportError as e:
            raise PodqError(
                f"cannot reach the podq gateway at {self.base_url} ({e}); start one "
                "(podq dev, podq gateway) or set PODQ_ENDPOINT_BASE_URL / --url"
            ) from e
        reply = protocol.Reply(response.status_code, response.content)
        return protocol.decode_reply(request, reply)

    # API keys
    def create_key(
        self, label: str = "", endpoints: list[str] | None = None, worker: bool = False
    ) -> dict[str, Any]:
        return self.call("POST", "keys", {"label": label, "endpoints": endpoints or [], "worker": worker})

    def keys(self) -> list[dict[str, Any]]:
        return self.call("GET", "keys")

    def revoke_key(self, digest: str) -> dict[str, Any]:
        return self.call("DELETE", f"keys/{_q(digest)}")

    # templates
    def create_template(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        return self.call("POST", "templates", fields)

    def templates(self) -> list[dict[str, Any]]:
        return self.call("GET", "templates")

    def template(self, template_id: str) -> dict[str, Any]:
        return self.call("GET", f"templates/{_q(template_id)}")

    def update_template(self, template_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        return self.call("PATCH", f"templates/{_q(template_id)}", fields)

    def delete_template(self, template_id: str) -> dict[str, Any]:
        return self.call("DELETE", f"templates/{_q(template_id)}")

    # endpoints
    def create_endpoint(
        self, fields: Mapping[str, Any], update_if_exists: bool = False
    ) -> dict[str, Any]:
        """POST the endpoint; with update_if_exists, update the one with its id, else its name."""
        query = [("update_if_exists", "true")] if update_if_exists else None
        return self.call("POST", "endpoints", fields, query)

    def endpoints(self, labels: LabelFilter | None = None) -> list[dict[str, Any]]:
        """Every endpoint, or those whose labels match every filter (label_query)."""
        return self.call("GET", "endpoints", query=label_query(labels))

    def endpoint(self, endpoint_id: str) -> dict[str, Any]:
        return self.call("GET", f"endpoints/{_q(endpoint_id)}")

    def update_endpoint(self, endpoint_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        return self.call("PATCH", f"endpoints/{_q(endpoint_id)}", fields)

    def endpoint_action(self, endpoint_id: str, action: str) -> dict[str, Any]:
        """POST one of ENDPOINT_ACTIONS (pause, resume, scale-to-zero)."""
        assert action in ENDPOINT_ACTIONS, action
        return self.call("POST", f"endpoints/{_q(endpoint_id)}/{action}")

    def delete_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        return self.call("DELETE", f"endpoints/{_q(endpoint_id)}")


def _q(ident: str) -> str:
    return quote(str(ident), safe="")


class ManagedEndpoint(dict[str, Any]):
    """An endpoint record (a dict: `endpoint["id"]` works as with RunPod's create_endpoint)
    with Hugging Face Inference Endpoints' lifecycle methods.

    Each method calls the gateway and replaces the dict's contents with the fresh record.
    `update(**fields)` changes the endpoint on the server (not only this dict).
    """

    def __init__(self, record: Mapping[str, Any], client: AdminClient) -> None:
        super().__init__(record)
        self._client = client

    @property
    def id(self) -> str:
        return str(self["id"])

    @property
    def status(self) -> str:
        """The status the scaler last reported (see EndpointStatus); `refresh()` re-reads it."""
        return str(self.get("status", EndpointStatus.PENDING.value))

    def _load(self, record: Mapping[str, Any]) -> ManagedEndpoint:
        self.clear()
        dict.update(self, record)
        return self

    def refresh(self) -> ManagedEndpoint:
        """Read the endpoint again (its status included)."""
        return self._load(self._client.endpoint(self.id))

    def pause(self) -> ManagedEndpoint:
        """Stop every worker and start none; jobs stay queued until `resume()`."""
        return self._load(self._client.endpoint_action(self.id, "pause"))

    def resume(self) -> ManagedEndpoint:
        """Undo `pause()` and `scale_to_zero()`: workers_min..workers_max apply again."""
        return self._load(self._client.endpoint_action(self.id, "resume"))

    def scale_to_zero(self) -> ManagedEndpoint:
        """Stop every worker now, even below workers_min; the next job starts one."""
        return self._load(self._client.endpoint_action(self.id, "scale-to-zero"))

    def update(self, **fields: Any) -> ManagedEndpoint:  # type: ignore[override]
        """Change settings on the server, e.g. `update(workers_max=4, template_id="tpl-2")`.

        A new template_id, gpu_ids, gpu_count or backend bumps `version`: workers are rolled.
        """
        return self._load(self._client.update_endpoint(self.id, fields))

    def delete(self) -> None:
        """Delete the endpoint; the scaler stops its workers."""
        self._client.delete_endpoint(self.id)

    def wait(self, timeout: float | None = None, fetch_every: float = 5) -> ManagedEndpoint:
        """Re-read the endpoint every `fetch_every` s until its status is `running`.

        Args:
            timeout: seconds to wait at most; None waits as long as it takes.
            fetch_every: seconds between reads.

        Returns:
            This endpoint, running.

        Raises:
            EndpointFailed: the status became `failed` (its reason is quoted).
            EndpointTimeout: still not running after `timeout` (a TimeoutError).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.refresh().status
            if status == EndpointStatus.RUNNING:
                return self
            if status == EndpointStatus.FAILED:
                raise EndpointFailed(self.id, str(self.get("status_reason", "")))
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise EndpointTimeout(self.id, status, timeout or 0)
            time.sleep(fetch_every if left is None else min(fetch_every, left))


# ---- RunPod's admin functions ------------------------------------------------------------


def _refuse_unsupported(**given: tuple[str | None, str]) -> None:
    """Raise ValueError for a RunPod argument podq cannot apply that asks for something (the
    same reasons GraphQL's saveEndpoint / saveTemplate give); None or "" ask for nothing."""
    for name, (value, why) in given.items():
        if value:
            raise ValueError(unsupported.refusal(name, value, why))


def create_template(
    name: str,
    image_name: str | None,
    docker_start_cmd: str | None = None,
    container_disk_in_gb: int = 10,
    volume_in_gb: int | None = None,
    volume_mount_path: str | None = None,
    ports: str | None = None,
    env: Mapping[str, Any] | None = None,
    is_serverless: bool = False,
    registry_auth_id: str | None = None,
    handler: str | None = None,
) -> dict[str, Any]:
    """Create a template: what an endpoint's workers run (RunPod's signature, plus `handler`).

    Args:
        name: a readable name.
        image_name: the worker image (docker and kubernetes backends); None or "" for none.
        docker_start_cmd: the command run in it; default `python -m worker <handler>`.
        container_disk_in_gb: the container's disk (default 10).
        volume_in_gb: a volume's size (default 0: none).
        volume_mount_path: where that volume is mounted.
        ports: RunPod's "8888/http,22/tcp" form.
        env: environment variables of every worker (values become strings).
        is_serverless: kept as given (RunPod's flag).
        registry_auth_id: must be None or "": podq keeps no registry credentials (ValueError
            otherwise; log the worker hosts' Docker engine in instead).
        handler: the handler file (process backend: a host path; docker: a path in the image).

    Returns:
        The template record; its id is `result["id"]`.
    """
    _refuse_unsupported(registry_auth_id=(registry_auth_id, unsupported.REGISTRY_AUTH))
    fields = {
        "name": name, "image_name": image_name or "", "docker_start_cmd": docker_start_cmd,
        "handler": handler, "env": {str(k): str(v) for k, v in (env or {}).items()},
        "container_disk_in_gb": container_disk_in_gb, "volume_in_gb": volume_in_gb or 0,
        "volume_mount_path": volume_mount_path, "is_serverless": is_serverless,
        "ports": ports.replace(" ", "") if ports else None,
    }
    return AdminClient.create().create_template(fields)


def get_templates() -> list[dict[str, Any]]:
    """Every template, by name."""
    return AdminClient.create().templates()


def get_template(template_id: str) -> dict[str, Any]:
    """One template (NotFound if there is none with that id)."""
    return AdminClient.create().template(template_id)


def update_template(template_id: str, **fields: Any) -> dict[str, Any]:
    """Change a template's fields; every endpoint using it rolls its workers."""
    return AdminClient.create().update_template(template_id, fields)


def delete_template(template_id: str) -> dict[str, Any]:
    """Delete a template (Conflict while an endpoint uses it)."""
    return AdminClient.create().delete_template(template_id)


def create_endpoint(
    name: str,
    template_id: str,
    gpu_ids: str = "ANY",
    network_volume_id: str | None = None,
    locations: str | None = None,
    idle_timeout: int = 5,
    scaler_type: str = "QUEUE_DELAY",
    scaler_value: float = 4,
    workers_min: int = 0,
    workers_max: int = 3,
    flashboot: bool = False,
    allowed_cuda_versions: str | None = None,
    gpu_count: int = 1,
    update_if_exists: bool = False,
    **podq_extras: Any,
) -> ManagedEndpoint:
    """Create an endpoint (RunPod's signature; gpu_ids defaults to ANY, not AMPERE_16).

    Args:
        name: a readable name.
        template_id: the template its workers run.
        gpu_ids: "ANY", or RunPod GPU pool ids / GPU names, comma-separated ("AMPERE_24,L4").
        network_volume_id: must be None or "": podq has no network volumes (ValueError
            otherwise; see the template's volumes).
        locations: must be None or "": podq places workers on its own backend.
        idle_timeout: seconds a worker above workers_min may stay idle before it is stopped.
        scaler_type: QUEUE_DELAY (scaler_value = seconds a job may wait) or REQUEST_COUNT
            (scaler_value = jobs per worker).
        scaler_value: see scaler_type (default 4).
        workers_min: workers kept running even when idle.
        workers_max: the most workers at once.
        flashboot: must be False: podq has no warm paused workers, and True is refused (400);
            keep workers warm with workers_min or a longer idle_timeout.
        allowed_cuda_versions: must be None or "": the worker image decides.
        gpu_count: GPUs per worker.
        update_if_exists: when an endpoint with this `id` (if given) or else this name exists,
            update it with the arguments given instead of creating another (RunPod SDK's flag).
        **podq_extras: podq's own fields: id, execution_timeout_ms, labels, backend
            ("process", "docker", "swarm", "kubernetes"), paused, rate_limits (gateway rate
            limits: "runpod", "run=500/10,runsync=1000/10" or "off"; None: the gateway's
            default), webhook (called after every job of the endpoint ends), access.

    Returns:
        The endpoint: a dict (`result["id"]`) with lifecycle methods (wait, pause, ...).
    """
    _refuse_unsupported(network_volume_id=(network_volume_id, unsupported.NETWORK_VOLUMES),
                        locations=(locations, unsupported.LOCATIONS),
                        allowed_cuda_versions=(allowed_cuda_versions, unsupported.CUDA_VERSIONS))
    fields = {
        "name": name, "template_id": template_id, "gpu_ids": gpu_ids, "gpu_count": gpu_count,
        "idle_timeout": idle_timeout, "scaler_type": scaler_type, "scaler_value": scaler_value,
        "workers_min": workers_min, "workers_max": workers_max, "flashboot": flashboot,
        **podq_extras,
    }
    client = AdminClient.create()
    return ManagedEndpoint(client.create_endpoint(fields, update_if_exists), client)


def get_endpoints(labels: LabelFilter | None = None) -> list[ManagedEndpoint]:
    """Every endpoint with its status, by name.

    Args:
        labels: only endpoints whose labels match every filter: {"team": "ml"} (None as a
            value: any value), or strings "team:ml" / "team".

    Returns:
        The endpoints.
    """
    client = AdminClient.create()
    return [ManagedEndpoint(record, client) for record in client.endpoints(labels)]


def get_endpoint(endpoint_id: str) -> ManagedEndpoint:
    """One endpoint with its status (NotFound if there is none with that id)."""
    client = AdminClient.create()
    return ManagedEndpoint(client.endpoint(endpoint_id), client)


def update_endpoint(endpoint_id: str, **fields: Any) -> ManagedEndpoint:
    """Change any of an endpoint's settings, e.g. `update_endpoint(id, workers_max=5)` or
    `update_endpoint(id, rate_limits="run=500/10")` (None: back to the gateway's default)."""
    client = AdminClient.create()
    return ManagedEndpoint(client.update_endpoint(endpoint_id, fields), client)


def update_endpoint_template(endpoint_id: str, template_id: str) -> ManagedEndpoint:
    """Move an endpoint to another template (RunPod's name); its workers are rolled."""
    return update_endpoint(endpoint_id, template_id=template_id)


def delete_endpoint(endpoint_id: str) -> dict[str, Any]:
    """Delete an endpoint; the scaler stops its workers. Returns `{"id", "deleted": true}`."""
    return AdminClient.create().delete_endpoint(endpoint_id)
