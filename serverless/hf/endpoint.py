"""InferenceEndpoint and the module functions, with huggingface_hub's names and signatures.

    endpoint = create_inference_endpoint("gpt2-echo", repository="gpt2", framework="pytorch",
        task="text-generation", accelerator="cpu", vendor="podq", region="local",
        instance_size="x1", instance_type="intel-icl", handler="examples/hf/handler.py")
    endpoint.wait(timeout=300).client.text_generation("I am")
    endpoint.pause(); endpoint.resume().wait(); endpoint.scale_to_zero()
    endpoint.update(repository="gpt2-large"); endpoint.delete()

Every call goes over the gateway's /v1 admin API (serverless.admin.AdminClient): the gateway is
`serverless.endpoint_url_base` or $PODQ_ENDPOINT_BASE_URL, the key `token=` or
`serverless.api_key` or $PODQ_API_KEY (the admin key: it is the token of `client` too). podq has
one namespace: `namespace` is accepted, reported back, and selects nothing. `handler=` and
`backend=` are podq's own (a handler file for the process backend; process, docker, swarm or
kubernetes). How each argument is applied: serverless/hf/mapping.py and
docs/clients/huggingface.md.
"""

from __future__ import annotations

import importlib
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import msgspec

from serverless.admin import AdminClient, admin_base_url
from serverless.client import protocol
from serverless.errors import Conflict, NotFound, PodqError
from serverless.hf.errors import InferenceEndpointError, InferenceEndpointTimeoutError
from serverless.hf.mapping import (
    HFArgs, create_bodies, refuse_unsupported, template_id_of, unapplied_size, update_bodies,
)
from serverless.hf.raw import raw_of
from serverless.model import EndpointConfig, EndpointStatus, Template

DEFAULT_NAMESPACE = "podq"
# After update() bumps the version, a `running` read may still be the scaler's report from
# before the change (it writes each endpoint's status once per tick, 1 s by default): for this
# long, or until the scaler reports another state, a running endpoint counts as updating.
ROLL_SETTLE_S = 2.0
_FAILED = {EndpointStatus.FAILED: "failed to deploy", EndpointStatus.UPDATE_FAILED: "failed to update"}


def _admin(token: str | bool | None) -> tuple[AdminClient, str | None]:
    """The admin client and the key: `token` (False: none), else podq's configured key."""
    key = None if token is False else protocol.resolve_api_key(token if isinstance(token, str) else None)
    return AdminClient(admin_base_url(), protocol.auth_headers(key)), key


def _hub(name: str) -> Any:
    try:
        module = importlib.import_module("huggingface_hub")
    except ImportError as e:
        raise PodqError(f"InferenceEndpoint needs huggingface_hub for {name}: "
                        "`pip install huggingface_hub`") from e
    return getattr(module, name)


def _records(admin: AdminClient, name: str) -> tuple[EndpointConfig, Template | None]:
    endpoint = msgspec.convert(admin.endpoint(name), EndpointConfig)
    try:
        template = msgspec.convert(admin.template(endpoint.template_id), Template)
    except NotFound:
        template = None
    return endpoint, template


def _url(admin: AdminClient, endpoint_id: str) -> str:
    return f"{admin.base_url}/v2/{quote(endpoint_id, safe='')}/hf"


@dataclass
class InferenceEndpoint:
    """A podq endpoint seen as a Hugging Face Inference Endpoint (huggingface_hub's fields).

    Every method calls the gateway and updates this object in place from the fresh record.
    """

    name: str = field(init=False)
    namespace: str
    repository: str = field(init=False)
    status: EndpointStatus = field(init=False)
    health_route: str = field(init=False)
    url: str | None = field(init=False)
    framework: str = field(repr=False, init=False)
    revision: str | None = field(repr=False, init=False)
    task: str | None = field(repr=False, init=False)
    created_at: datetime = field(repr=False, init=False)
    updated_at: datetime = field(repr=False, init=False)
    type: str = field(repr=False, init=False)
    raw: dict[str, Any] = field(repr=False)
    _admin: AdminClient = field(repr=False, compare=False)
    _token: str | None = field(repr=False, compare=False)
    _rolled_at: float | None = field(default=None, repr=False, compare=False)  # ROLL_SETTLE_S

    @classmethod
    def load(cls, admin: AdminClient, name: str, namespace: str | None,
             token: str | None) -> InferenceEndpoint:
        """Read endpoint `name` (and its template) from the gateway."""
        endpoint, template = _records(admin, name)
        raw = raw_of(endpoint, template, _url(admin, endpoint.id))
        return cls(namespace=namespace or DEFAULT_NAMESPACE, raw=raw, _admin=admin, _token=token)

    def __post_init__(self) -> None:
        self._populate_from_raw()

    def _populate_from_raw(self) -> None:
        model, status = self.raw["model"], self.raw["status"]
        self.name, self.type = self.raw["name"], self.raw["type"]
        self.repository, self.framework = model["repository"], model["framework"]
        self.revision, self.task = model["revision"], model["task"]
        self.status, self.url = EndpointStatus(status["state"]), status["url"]
        self.health_route = self.raw["healthRoute"]
        self.created_at = datetime.fromisoformat(status["createdAt"])
        self.updated_at = datetime.fromisoformat(status["updatedAt"])

    def _reload(self, rolled: bool = False) -> InferenceEndpoint:
        """Read the endpoint again; `rolled`: this client just bumped its version."""
        endpoint, template = _records(self._admin, self.name)
        now = time.monotonic()
        if rolled:
            self._rolled_at = now
        elif self._rolled_at is not None and (endpoint.status is not EndpointStatus.RUNNING
                                              or now - self._rolled_at >= ROLL_SETTLE_S):
            self._rolled_at = None  # the scaler has seen the new version, or had time to
        self.raw = raw_of(endpoint, template, _url(self._admin, endpoint.id), self._rolled_at is not None)
        self._populate_from_raw()
        return self

    def _serving_url(self) -> str:
        if self.url is None:
            raise InferenceEndpointError(
                f"Cannot create a client for Inference Endpoint {self.name}: it is "
                f"{self.status.value}, not serving yet. Wait for it with `endpoint.wait()` "
                "(or resume() a paused one) and try again.")
        return self.url

    @property
    def client(self) -> Any:
        """huggingface_hub.InferenceClient on this endpoint's /hf route, with this key."""
        return _hub("InferenceClient")(base_url=self._serving_url(), token=self._token)

    @property
    def async_client(self) -> Any:
        """huggingface_hub.AsyncInferenceClient on this endpoint's /hf route, with this key."""
        return _hub("AsyncInferenceClient")(base_url=self._serving_url(), token=self._token)

    def fetch(self) -> InferenceEndpoint:
        """Read the endpoint again (its status included)."""
        return self._reload()

    def wait(self, timeout: int | None = None, refresh_every: int = 5) -> InferenceEndpoint:
        """Wait until the endpoint takes requests: `running`, or `scaledToZero` (the first
        request wakes it), reading it now and every `refresh_every` s.

        Args:
            timeout: seconds to wait at most; None waits as long as it takes.
            refresh_every: seconds between reads.

        Returns:
            This endpoint, updated.

        Raises:
            InferenceEndpointError: the endpoint is `failed` or `updateFailed` (the reason is
                quoted).
            InferenceEndpointTimeoutError: it did not take requests within `timeout`.
        """
        if timeout is not None and timeout < 0:
            raise ValueError("`timeout` cannot be negative.")
        if refresh_every <= 0:
            raise ValueError("`refresh_every` must be positive.")
        start = time.monotonic()
        while True:
            self.fetch()  # a fresh read first (huggingface_hub checks the status in hand)
            if self.status in _FAILED:
                raise InferenceEndpointError(
                    f"Inference Endpoint {self.name} {_FAILED[self.status]}: "
                    f"{self.raw['status']['message'] or 'no reason given'}; see `podq logs {self.name}`")
            if self.status in (EndpointStatus.RUNNING, EndpointStatus.SCALED_TO_ZERO):
                return self
            if timeout is not None and time.monotonic() - start > timeout:
                raise InferenceEndpointTimeoutError(
                    f"Timeout while waiting for Inference Endpoint {self.name} to be deployed: "
                    f"still {self.status.value} after {timeout} s")
            time.sleep(refresh_every)

    def pause(self) -> InferenceEndpoint:
        """Stop every worker and start none; requests wait in the queue until resume()."""
        self._admin.endpoint_action(self.name, "pause")
        return self._reload()

    def resume(self, running_ok: bool = True) -> InferenceEndpoint:
        """Undo pause() and scale_to_zero(): min_replica..max_replica apply again.

        Raises:
            InferenceEndpointError: it is running already and `running_ok` is False.
        """
        if not running_ok and self.fetch().status is EndpointStatus.RUNNING:
            raise InferenceEndpointError(f"Inference Endpoint {self.name} is already running; "
                                         "pass running_ok=True to resume it anyway")
        self._admin.endpoint_action(self.name, "resume")
        return self._reload()

    def scale_to_zero(self) -> InferenceEndpoint:
        """Stop every worker now, even below min_replica; the next request starts one."""
        self._admin.endpoint_action(self.name, "scale-to-zero")
        return self._reload()

    def update(
        self, *, accelerator: str | None = None, instance_size: str | None = None,
        instance_type: str | None = None, min_replica: int | None = None,
        max_replica: int | None = None, scale_to_zero_timeout: int | None = None,
        repository: str | None = None, framework: str | None = None,
        revision: str | None = None, task: str | None = None,
        custom_image: dict[str, Any] | None = None, container_command: list[str] | None = None,
        container_args: list[str] | None = None, tensor_parallel_size: int | None = None,
        data_parallel_size: int | None = None, secrets: dict[str, str] | None = None,
        handler: str | None = None,
    ) -> InferenceEndpoint:
        """Change the hardware, the scaling or the model (huggingface_hub's arguments; None
        keeps a value). A new model, image, command, secrets or hardware rolls the workers:
        the endpoint is `updating` until the new version serves (`updateFailed` if it cannot
        start; the old version serves meanwhile)."""
        refuse_unsupported(tensor_parallel_size=tensor_parallel_size,
                           data_parallel_size=data_parallel_size)
        args = HFArgs(
            accelerator=accelerator, instance_size=instance_size, instance_type=instance_type,
            min_replica=min_replica, max_replica=max_replica,
            scale_to_zero_timeout=scale_to_zero_timeout, repository=repository,
            framework=framework, revision=revision, task=task, custom_image=custom_image,
            container_command=container_command, container_args=container_args,
            secrets=secrets, handler=handler)
        endpoint, template = _records(self._admin, self.name)
        if template is None:
            raise NotFound(f"template {endpoint.template_id!r} of endpoint {self.name!r} is gone; "
                           "point the endpoint at another (serverless.update_endpoint)")
        template_patch, endpoint_patch = update_bodies(endpoint, template, args)
        if template_patch:
            self._admin.update_template(template.id, template_patch)
        if endpoint_patch:
            self._admin.update_endpoint(self.name, endpoint_patch)
        version = self._admin.endpoint(self.name)["version"]
        return self._reload(rolled=version > endpoint.version)

    def delete(self) -> None:
        """Delete the endpoint (its workers are stopped) and the template made with it."""
        record = self._admin.endpoint(self.name)
        self._admin.delete_endpoint(self.name)
        if record["template_id"] == template_id_of(self.name):
            try:
                self._admin.delete_template(record["template_id"])
            except (NotFound, Conflict):  # gone already, or another endpoint uses it now
                pass


def create_inference_endpoint(
    name: str, *, repository: str, framework: str, accelerator: str, instance_size: str,
    instance_type: str, region: str, vendor: str, account_id: str | None = None,
    private_link_account_id: str | None = None, private_link_region: str | None = None,
    min_replica: int = 1, max_replica: int = 1, scaling_metric: str | None = None,
    scaling_threshold: float | None = None, scale_to_zero_timeout: int | None = None,
    revision: str | None = None, task: str | None = None, custom_image: dict[str, Any] | None = None,
    container_registry_username: str | None = None, container_registry_password: str | None = None,
    container_command: list[str] | None = None, container_args: list[str] | None = None,
    env: dict[str, str] | None = None, secrets: dict[str, str] | None = None,
    type: str = "authenticated", domain: str | None = None, path: str | None = None,
    cache_http_responses: bool | None = None, tags: list[str] | None = None,
    namespace: str | None = None, token: str | bool | None = None,
    handler: str | None = None, backend: str | None = None,
) -> InferenceEndpoint:
    """Create an endpoint and its template (huggingface_hub's signature, plus podq's handler
    and backend); mapping.py says where each argument goes. `account_id` is ignored, as
    huggingface_hub ignores it.

    Returns:
        The endpoint, `pending` until the scaler looks at it; `wait()` for it.

    Raises:
        BadRequest: an argument podq cannot honour, or an invalid setting (quoted).
        Conflict: an endpoint named `name` exists.
    """
    del account_id  # deprecated and ignored by huggingface_hub too
    refuse_unsupported(private_link_account_id=private_link_account_id,
                       private_link_region=private_link_region, domain=domain, path=path,
                       container_registry_username=container_registry_username,
                       container_registry_password=container_registry_password,
                       cache_http_responses=cache_http_responses)
    args = HFArgs(
        repository=repository, framework=framework, accelerator=accelerator,
        instance_size=instance_size, instance_type=instance_type, region=region, vendor=vendor,
        min_replica=min_replica, max_replica=max_replica, scale_to_zero_timeout=scale_to_zero_timeout,
        scaling_metric=scaling_metric, scaling_threshold=scaling_threshold, revision=revision,
        task=task, custom_image=custom_image, container_command=container_command,
        container_args=container_args, env=env, secrets=secrets, type=type, tags=tags,
        handler=handler, backend=backend)
    template_body, endpoint_body = create_bodies(name, args)
    note = unapplied_size(accelerator, instance_size, endpoint_body["backend"])
    if note:
        warnings.warn(note, stacklevel=2)
    admin, key = _admin(token)
    _refuse_taken(admin, name)
    admin.create_template(template_body)
    try:
        admin.create_endpoint(endpoint_body)
    except PodqError:
        admin.delete_template(template_body["id"])
        raise
    return InferenceEndpoint.load(admin, name, namespace, key)


def _refuse_taken(admin: AdminClient, name: str) -> None:
    try:
        admin.endpoint(name)
    except NotFound:
        return
    raise Conflict(f"an endpoint named {name!r} exists; get it with get_inference_endpoint("
                   f"{name!r}) or pick another name")


def get_inference_endpoint(name: str, *, namespace: str | None = None,
                           token: str | bool | None = None) -> InferenceEndpoint:
    """One endpoint (NotFound if there is none named `name`)."""
    admin, key = _admin(token)
    return InferenceEndpoint.load(admin, name, namespace, key)


def list_inference_endpoints(namespace: str | None = None, *,
                             token: str | bool | None = None) -> list[InferenceEndpoint]:
    """Every endpoint of the gateway (podq has one namespace; "*" and any name list them all)."""
    admin, key = _admin(token)
    templates = {t["id"]: msgspec.convert(t, Template) for t in admin.templates()}
    found = []
    for record in admin.endpoints():
        endpoint = msgspec.convert(record, EndpointConfig)
        raw = raw_of(endpoint, templates.get(endpoint.template_id), _url(admin, endpoint.id))
        found.append(InferenceEndpoint(namespace=namespace or DEFAULT_NAMESPACE, raw=raw,
                                       _admin=admin, _token=key))
    return found

