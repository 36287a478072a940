"""Scale Launch's records, with Launch's names: requests, responses, futures, bundles, endpoints.

`EndpointResponse.result` is the predict function's return value as JSON text (Launch:
"one can json.loads() the value of result"); podq never pickles, so `result_url` is always None
and `return_pickled=True` is refused when the request is made.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from serverless.errors import BadRequest
from serverless.model import Status

if TYPE_CHECKING:
    from serverless.launch.client import LaunchClient

SUCCESS, FAILURE, PENDING = "SUCCESS", "FAILURE", "PENDING"
PICKLE_REFUSED = ("return_pickled=True is not supported: podq never pickles (a pickle from the "
                  "network runs code); pass return_pickled=False and read EndpointResponse.result "
                  "(JSON text)")


def check_not_pickled(return_pickled: bool | None) -> None:
    """Refuse an explicit return_pickled=True (None, Launch's default left out, means JSON)."""
    if return_pickled:
        raise BadRequest(PICKLE_REFUSED)


class EndpointRequest:
    """One request to a Launch endpoint: exactly one of `url` (its bytes reach predict) and
    `args` (predict's arguments). Results are always JSON: `return_pickled=True` given
    explicitly is refused; left out (Launch's default is True) it means JSON here."""

    def __init__(self, url: str | None = None, args: Any = None, return_pickled: bool | None = None,
                 request_id: str | None = None) -> None:
        if (url is None) == (args is None):
            raise BadRequest("EndpointRequest needs exactly one of url and args")
        check_not_pickled(return_pickled)
        self.url, self.args, self.return_pickled = url, args, False
        self.request_id = request_id or str(uuid.uuid4())

    def payload(self) -> dict[str, Any]:
        """The job input the bundle runner reads (worker/bundle_calls.py)."""
        return {"url": self.url} if self.url is not None else {"args": self.args}

    def __repr__(self) -> str:
        return f"EndpointRequest(url={self.url!r}, args={self.args!r}, request_id={self.request_id!r})"


@dataclass
class EndpointResponse:
    """A finished (or pending) prediction: `status` SUCCESS, FAILURE or PENDING, `result` JSON
    text on SUCCESS, `traceback` on FAILURE."""

    client: Any
    status: str
    result_url: str | None = None
    result: str | None = None
    traceback: str | None = None

    def __str__(self) -> str:
        return (f"status: {self.status}, result: {self.result}, result_url: {self.result_url}, "
                f"traceback: {self.traceback}")


def launch_status(podq_status: str) -> str:
    """podq's job status -> Launch's SUCCESS / FAILURE / PENDING."""
    if podq_status == Status.COMPLETED:
        return SUCCESS
    if podq_status in (Status.FAILED, Status.TIMED_OUT, Status.CANCELLED):
        return FAILURE
    return PENDING


def traceback_of(body: dict[str, Any]) -> str:
    """The traceback of a failed job: the worker's `error_traceback`, else its error text."""
    error = body.get("error") or f"the job ended {body.get('status')}"
    try:
        shaped = json.loads(error) if isinstance(error, str) else error
    except ValueError:
        return str(error)
    if isinstance(shaped, dict) and shaped.get("error_traceback"):
        return str(shaped["error_traceback"])
    return str(error)


def response_of(client: Any, body: dict[str, Any]) -> EndpointResponse:
    """A podq status body -> Launch's EndpointResponse."""
    status = launch_status(str(body.get("status")))
    if status == SUCCESS:
        return EndpointResponse(client, status, result=json.dumps(body.get("output")))
    if status == FAILURE:
        return EndpointResponse(client, status, traceback=traceback_of(body))
    return EndpointResponse(client, status)


def async_response_dict(response: EndpointResponse) -> dict[str, Any]:
    """get_async_response's shape: `state`, then `result` or `traceback` when there is one."""
    out: dict[str, Any] = {"state": response.status}
    if response.result is not None:
        out["result"] = response.result
    if response.traceback is not None:
        out["traceback"] = response.traceback
    return out


class EndpointResponseFuture:
    """A prediction still running: `get()` blocks until it is done (Launch's future)."""

    def __init__(self, client: LaunchClient, endpoint_name: str, async_task_id: str) -> None:
        self.client, self.endpoint_name, self.async_task_id = client, endpoint_name, async_task_id

    def get(self, timeout: float | None = None) -> EndpointResponse:
        """The EndpointResponse once the job is done; TimeoutError after `timeout` s (None: wait)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.05
        while True:
            response = self.client.task_response(self.async_task_id)
            if response.status != PENDING:
                return response
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"task {self.async_task_id} is still PENDING after {timeout} s")
            time.sleep(delay)
            delay = min(1.0, delay * 2)


class AsyncEndpointBatchResponse:
    """(deprecated in Launch) Several async requests to one endpoint, polled together."""

    def __init__(self, client: LaunchClient, endpoint_name: str, request_ids: dict[str, str]) -> None:
        self.client, self.endpoint_name = client, endpoint_name
        self.request_ids = request_ids  # EndpointRequest.request_id -> async task id
        self.responses: dict[str, EndpointResponse | None] = {k: None for k in request_ids}

    def poll_endpoints(self) -> None:
        """Read the status of every request not finished yet."""
        for request_id, task_id in self.request_ids.items():
            if self.responses[request_id] is None:
                response = self.client.task_response(task_id)
                if response.status != PENDING:
                    self.responses[request_id] = response

    def is_done(self, poll: bool = True) -> bool:
        if poll:
            self.poll_endpoints()
        return all(r is not None for r in self.responses.values())

    def get_responses(self) -> dict[str, EndpointResponse | None]:
        """request_id -> its EndpointResponse (None while it runs)."""
        return dict(self.responses)


@dataclass
class ModelBundle:
    """A bundle as Launch shows it (GET /v1/bundles/{id})."""

    name: str
    bundle_id: str | None = None
    env_params: dict[str, str] | None = None
    location: str | None = None
    metadata: dict[Any, Any] | None = None
    packaging_type: str | None = "zip"
    requirements: list[str] | None = None
    app_config: dict[str, Any] | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ModelBundle:
        meta = {k: record.get(k) for k in ("load_predict_fn", "load_model_fn", "sha256", "size",
                                           "files", "created_at")}
        return cls(name=record["name"], bundle_id=record["id"], location=record.get("location"),
                   metadata=meta, packaging_type=record.get("packaging_type", "zip"),
                   requirements=list(record.get("requirements", [])),
                   app_config=record.get("app_config"))


@dataclass
class ModelEndpoint:
    """An endpoint as Launch shows it; `raw` is podq's endpoint record."""

    name: str
    bundle_name: str | None = None
    status: str | None = None
    endpoint_type: str = "sync"
    post_inference_hooks: list[str] = field(default_factory=list)
    default_callback_url: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
