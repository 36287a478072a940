"""Endpoint and Job: the blocking client (httpx, one pooled connection set per Endpoint).

Only sending and receiving happens here; what to send and what a reply means is protocol.py.

    endpoint = Endpoint("my-endpoint")            # key: api_key=, serverless.api_key, PODQ_API_KEY
    endpoint.run_sync({"prompt": "hi"})           # the output, or JobFailed
    job = endpoint.run({"prompt": "hi"})
    for chunk in job.stream(): ...                # live over Server-Sent Events
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, TypeVar

import httpx

from serverless.client import protocol
from serverless.client.protocol import EndpointRef, Flow, JobRef, Reply, Request, Sleep

T = TypeVar("T")

POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class _Http:
    """Runs protocol flows over one httpx.Client."""

    def __init__(self, client: httpx.Client | None) -> None:
        self.owned = client is None
        self.client = client or httpx.Client(limits=POOL_LIMITS)

    def send(self, request: Request) -> Reply:
        response = self.client.request(
            request.method, request.url, content=request.body,
            headers=request.headers, timeout=request.timeout,
        )
        return Reply(response.status_code, response.content, response.headers.get("Retry-After"))

    def drive(self, flow: Flow[T]) -> T:
        """Answer each step of `flow` (send a request, or sleep) until it returns."""
        try:
            step = next(flow)
            while True:
                step = flow.send(self._do(step))
        except StopIteration as stop:
            return stop.value

    def _do(self, step: Request | Sleep) -> Reply | None:
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return None
        return self.send(step)

    def events(self, job: JobRef) -> Iterator[Any]:
        """Yield chunk outputs from the job's SSE stream, reconnecting where it stopped."""
        state = protocol.StreamState(job)
        while not state.done:
            request = state.request()
            timeout = httpx.Timeout(protocol.CALL_TIMEOUT_S, read=request.timeout)
            with self.client.stream(
                request.method, request.url, headers=request.headers, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    protocol.raise_for_reply(request, Reply(response.status_code, response.read()))
                for data in response.iter_bytes():
                    yield from state.feed(data)
            state.ended()

    def close(self) -> None:
        if self.owned:
            self.client.close()


class Job:
    """A job on an endpoint: its status, output, stream, and cancel (RunPod's `Job`)."""

    def __init__(
        self,
        endpoint_id: str,
        job_id: str,
        client: httpx.Client | None = None,
        *,
        api_key: str | None = None,
    ) -> None:
        self._bind(JobRef(EndpointRef.create(endpoint_id, api_key), job_id), _Http(client))

    def _bind(self, ref: JobRef, http: _Http) -> None:
        self.endpoint_id, self.job_id = ref.endpoint.endpoint_id, ref.job_id
        self._ref, self._http = ref, http

    @classmethod
    def _attach(cls, ref: JobRef, http: _Http) -> Job:
        """A Job sharing its endpoint's connections (Endpoint.run)."""
        job = cls.__new__(cls)
        job._bind(ref, http)
        return job

    def status(self) -> str:
        """The job's status: IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED or TIMED_OUT."""
        return str(self._http.drive(protocol.status_flow(self._ref))["status"])

    def output(self, timeout: float = 0) -> Any:
        """The job's output. `timeout=0` (RunPod's default) fetches once and returns None while
        the job runs; a positive timeout waits that many seconds, then raises TimeoutError.
        Raises JobFailed when the job ended FAILED, TIMED_OUT or CANCELLED."""
        return self._http.drive(protocol.output_flow(self._ref, timeout, time.monotonic))

    def stream(self) -> Iterator[Any]:
        """Yield each stream chunk as soon as the worker produces it; ends when the job ends."""
        return self._http.events(self._ref)

    def cancel(self, timeout: float = 3) -> dict[str, Any]:
        """Cancel the job; returns `{"id", "status"}` (a finished job keeps its status)."""
        return self._http.drive(protocol.cancel_flow(self._ref, timeout))

    def close(self) -> None:
        """Close the connections, if this Job opened them."""
        self._http.close()


class Endpoint:
    """A podq (or RunPod-compatible) endpoint: submit jobs and read its health (RunPod's
    `Endpoint`, with the same method names, signatures and defaults)."""

    def __init__(self, endpoint_id: str, api_key: str | None = None) -> None:
        self.endpoint_id = endpoint_id
        self._ref = EndpointRef.create(endpoint_id, api_key)
        self._http = _Http(None)

    def run(self, request_input: Any) -> Job:
        """Queue a job and return it at once.

        Args:
            request_input: the input, or a full envelope `{"input", "webhook", "policy", ...}`.

        Returns:
            The queued Job.
        """
        job_id = self._http.drive(protocol.run_flow(self._ref, request_input))
        return Job._attach(JobRef(self._ref, job_id), self._http)

    def run_sync(self, request_input: Any, timeout: float = 86400) -> Any:
        """Run a job and return its output, waiting up to `timeout` seconds.

        Raises:
            JobFailed: the job ended FAILED, TIMED_OUT or CANCELLED (carries its error).
            TimeoutError: it did not finish in time (it keeps running).
        """
        flow = protocol.run_sync_flow(self._ref, request_input, timeout, time.monotonic)
        return self._http.drive(flow)

    def health(self, timeout: float = 3) -> dict[str, Any]:
        """`{"jobs": {...}, "workers": {...}}`."""
        return self._http.drive(protocol.endpoint_flow(self._ref, "GET", "health", timeout))

    def purge_queue(self, timeout: float = 3) -> dict[str, Any]:
        """Cancel every queued job; `{"removed": n, "status": "completed"}`."""
        return self._http.drive(protocol.endpoint_flow(self._ref, "POST", "purge-queue", timeout))

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
