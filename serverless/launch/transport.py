"""The HTTP underneath LaunchClient: podq's job routes (/v2) through the clients' pure protocol
(serverless/client/protocol.py), the admin and bundle routes (/v1), and the batch routes
(/v1/batches) through serverless.batches' client.

`Endpoint`/`Job` resolve their gateway from serverless.endpoint_url_base or the environment;
a LaunchClient names its gateway explicitly, so it drives protocol.py's requests and flows over
its own httpx.Client here. Terminal status bodies are returned as they are (not turned into
JobFailed): Launch reports a failed prediction as a FAILURE response, not an exception.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, TypeVar

import httpx

from serverless.admin import AdminClient, admin_base_url
from serverless.batches.client import BatchClient
from serverless.client import protocol
from serverless.client.protocol import EndpointRef, Flow, JobRef, Reply, Request, Sleep
from serverless.errors import PodqError

T = TypeVar("T")
UPLOAD_TIMEOUT_S = 300.0


class Transport:
    """One gateway: its /v1 admin API, its /v1/batches routes and its /v2 job routes, with one key."""

    def __init__(self, base_url: str | None, api_key: str | None) -> None:
        self.headers = protocol.auth_headers(api_key)
        self.admin = AdminClient(admin_base_url(base_url), self.headers)
        self.base_url = self.admin.base_url
        self.http = httpx.Client()
        self.batches = BatchClient(self.base_url, api_key)

    def endpoint(self, endpoint_id: str) -> EndpointRef:
        return EndpointRef(f"{self.base_url}/v2", endpoint_id, self.headers)

    def _send(self, request: Request) -> Reply:
        try:
            response = self.http.request(request.method, request.url, content=request.body,
                                         headers=request.headers, timeout=request.timeout)
        except httpx.TransportError as e:
            raise PodqError(f"cannot reach the podq gateway at {self.base_url} ({e}); check "
                            "LaunchClient(endpoint=...)") from e
        return Reply(response.status_code, response.content, response.headers.get("Retry-After"))

    def drive(self, flow: Flow[T]) -> T:
        """Answer each step of a protocol flow until it returns."""
        try:
            step = next(flow)
            while True:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    step = flow.send(None)
                else:
                    step = flow.send(self._send(step))
        except StopIteration as stop:
            return stop.value

    # ---- jobs --------------------------------------------------------------------------------

    def submit(self, endpoint_id: str, job_input: Any) -> str:
        """POST /run; the job id."""
        return self.drive(protocol.run_flow(self.endpoint(endpoint_id), {"input": job_input}))

    def status(self, endpoint_id: str, job_id: str) -> dict[str, Any]:
        return self.drive(protocol.status_flow(JobRef(self.endpoint(endpoint_id), job_id)))

    def run_sync(self, endpoint_id: str, job_input: Any) -> dict[str, Any]:
        """POST /runsync, then poll until the job is terminal; its status body."""
        ref = self.endpoint(endpoint_id)
        request = protocol.runsync_request(ref, {"input": job_input}, protocol.RUNSYNC_MAX_WAIT_MS / 1000)
        body = self.drive(protocol.call(request))
        return self.wait(endpoint_id, str(body["id"]), body)

    def wait(self, endpoint_id: str, job_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The job's terminal status body (polling /status)."""
        delays = protocol.poll_delays()
        body = body or self.status(endpoint_id, job_id)
        while not protocol.is_terminal(body):
            time.sleep(next(delays))
            body = self.status(endpoint_id, job_id)
        return body

    def stream(self, endpoint_id: str, job_id: str) -> Iterator[Any]:
        """Each chunk's output as the worker yields it (SSE, resumed where it broke)."""
        state = protocol.StreamState(JobRef(self.endpoint(endpoint_id), job_id))
        while not state.done:
            request = state.request()
            timeout = httpx.Timeout(protocol.CALL_TIMEOUT_S, read=request.timeout)
            with self.http.stream(request.method, request.url, headers=request.headers,
                                  timeout=timeout) as response:
                if response.status_code != 200:
                    protocol.raise_for_reply(request, Reply(response.status_code, response.read()))
                for data in response.iter_bytes():
                    yield from state.feed(data)
            state.ended()

    # ---- bundles -----------------------------------------------------------------------------

    def upload_bundle(self, params: dict[str, str], archive: bytes) -> dict[str, Any]:
        """POST /v1/bundles: the zip as the body, the rest as query parameters."""
        url = f"{self.base_url}/v1/bundles"
        headers = {**self.headers, "Content-Type": "application/zip"}
        request = Request("POST", url, headers, archive, UPLOAD_TIMEOUT_S)
        try:
            response = self.http.post(url, params=params, content=archive, headers=headers,
                                      timeout=UPLOAD_TIMEOUT_S)
        except httpx.TransportError as e:
            raise PodqError(f"cannot reach the podq gateway at {self.base_url} ({e})") from e
        return protocol.decode_reply(request, Reply(response.status_code, response.content))

    def close(self) -> None:
        self.http.close()
        self.batches.close()
