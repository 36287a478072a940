"""Launch's endpoint classes: SyncEndpoint, AsyncEndpoint, StreamingEndpoint.

Each wraps a ModelEndpoint and the LaunchClient that made it. `predict` is one podq job:
a sync endpoint waits for it (/runsync, then /status), an async one returns a future at once
(/run), a streaming one yields an EndpointResponse per chunk (/stream as Server-Sent Events),
then a FAILURE response if the job failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from serverless.launch import mapping
from serverless.launch.model import (
    SUCCESS, AsyncEndpointBatchResponse, EndpointRequest, EndpointResponse,
    EndpointResponseFuture, ModelEndpoint, response_of,
)

if TYPE_CHECKING:
    from serverless.launch.client import LaunchClient


class Endpoint:
    """What every Launch endpoint class has: its record, status and settings."""

    def __init__(self, model_endpoint: ModelEndpoint, client: LaunchClient) -> None:
        self.model_endpoint, self.client = model_endpoint, client

    @property
    def name(self) -> str:
        return self.model_endpoint.name

    def _record(self) -> dict[str, Any]:
        self.model_endpoint = self.client.read_model_endpoint(self.name)
        return self.model_endpoint.raw

    def status(self) -> str:
        """The endpoint's status in Launch's words (READY, UPDATE_PENDING, ...)."""
        return mapping.launch_status(str(self._record().get("status", "pending")))

    def resource_settings(self) -> dict[str, Any]:
        """cpus, memory, gpus and gpu_type as podq applies them (None: not limited)."""
        return mapping.resource_settings(self._record())

    def worker_settings(self) -> dict[str, Any]:
        """min_workers, max_workers and per_worker."""
        return mapping.worker_settings(self._record())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, bundle={self.model_endpoint.bundle_name!r})"


class SyncEndpoint(Endpoint):
    """A synchronous model endpoint."""

    def predict(self, request: EndpointRequest) -> EndpointResponse:
        """Run one prediction and wait for it: SUCCESS with `result`, or FAILURE with `traceback`."""
        body = self.client.transport.run_sync(self.name, request.payload())
        return response_of(self.client, body)


class AsyncEndpoint(Endpoint):
    """An asynchronous model endpoint."""

    def predict(self, request: EndpointRequest) -> EndpointResponseFuture:
        """Queue one prediction; `future.get()` blocks until it is done."""
        task_id = self.client.async_request(self.name, url=request.url, args=request.args,
                                            return_pickled=False)
        return EndpointResponseFuture(self.client, self.name, task_id)

    def predict_batch(self, requests: Sequence[EndpointRequest]) -> AsyncEndpointBatchResponse:
        """(deprecated in Launch) Queue several predictions; poll them together."""
        ids = [r.request_id for r in requests]
        if len(set(ids)) != len(ids):
            raise ValueError("request_ids must all be distinct")
        tasks = {r.request_id: self.client.async_request(self.name, url=r.url, args=r.args,
                                                         return_pickled=False) for r in requests}
        return AsyncEndpointBatchResponse(self.client, self.name, tasks)


class StreamingEndpoint(Endpoint):
    """A streaming model endpoint: its predict function yields."""

    def predict(self, request: EndpointRequest) -> Iterator[EndpointResponse]:
        """Yield an EndpointResponse (SUCCESS, `result` = the chunk as JSON text) per chunk the
        predict function yields; a failed job ends the stream with a FAILURE response."""
        transport = self.client.transport
        job_id = transport.submit(self.name, request.payload())
        return self._responses(job_id, transport)

    def _responses(self, job_id: str, transport: Any) -> Iterator[EndpointResponse]:
        for chunk in transport.stream(self.name, job_id):
            yield EndpointResponse(self.client, SUCCESS, result=json.dumps(chunk))
        final = response_of(self.client, transport.wait(self.name, job_id))
        if final.status != SUCCESS:
            yield final


ENDPOINT_CLASSES: dict[str, type[Endpoint]] = {
    "sync": SyncEndpoint, "async": AsyncEndpoint, "streaming": StreamingEndpoint,
}
