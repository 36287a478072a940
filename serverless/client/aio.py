"""AsyncioEndpoint and AsyncioJob: the asyncio client (aiohttp).

Only sending and receiving happens here; what to send and what a reply means is protocol.py.
RunPod's `AsyncioEndpoint` needs a session; here it is optional (one is opened on first use
and closed by `close()` or `async with`). Unlike RunPod's, `run_sync` exists, `run` takes the
same envelopes as the sync client, and `AsyncioJob.output()` waits by default.

    async with AsyncioEndpoint("my-endpoint") as endpoint:
        job = await endpoint.run({"prompt": "hi"})
        async for chunk in job.stream(): ...
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import aiohttp

from serverless.client import protocol
from serverless.client.protocol import EndpointRef, Flow, JobRef, Reply, Request, Sleep

T = TypeVar("T")


class _Http:
    """Runs protocol flows over one aiohttp.ClientSession (opened lazily when not given)."""

    def __init__(self, session: aiohttp.ClientSession | None) -> None:
        self.owned = session is None
        self._session = session

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or (self.owned and self._session.closed):
            connector = aiohttp.TCPConnector(limit=0)
            self._session, self.owned = aiohttp.ClientSession(connector=connector), True
        return self._session

    async def send(self, request: Request) -> Reply:
        timeout = aiohttp.ClientTimeout(total=request.timeout)
        async with self.session.request(
            request.method, request.url, data=request.body, headers=request.headers, timeout=timeout
        ) as response:
            body = await response.read()
            return Reply(response.status, body, response.headers.get("Retry-After"))

    async def drive(self, flow: Flow[T]) -> T:
        """Answer each step of `flow` (send a request, or sleep) until it returns."""
        try:
            step = next(flow)
            while True:
                step = flow.send(await self._do(step))
        except StopIteration as stop:
            return stop.value

    async def _do(self, step: Request | Sleep) -> Reply | None:
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None
        return await self.send(step)

    async def events(self, job: JobRef) -> AsyncIterator[Any]:
        """Yield chunk outputs from the job's SSE stream, reconnecting where it stopped."""
        state = protocol.StreamState(job)
        while not state.done:
            request = state.request()
            timeout = aiohttp.ClientTimeout(total=None, sock_read=request.timeout)
            async with self.session.request(
                request.method, request.url, headers=request.headers, timeout=timeout
            ) as response:
                if response.status != 200:
                    protocol.raise_for_reply(request, Reply(response.status, await response.read()))
                async for data in response.content.iter_any():
                    for output in state.feed(data):
                        yield output
            state.ended()

    async def close(self) -> None:
        if self.owned and self._session is not None:
            await self._session.close()


class AsyncioJob:
    """A job on an endpoint (RunPod's `AsyncioJob`): status, output, stream, cancel."""

    def __init__(
        self,
        endpoint_id: str,
        job_id: str,
        session: aiohttp.ClientSession | None = None,
        headers: dict[str, str] | None = None,
        *,
        api_key: str | None = None,
    ) -> None:
        endpoint = EndpointRef.create(endpoint_id, api_key)
        if headers:
            endpoint = EndpointRef(endpoint.base_url, endpoint_id, {**endpoint.headers, **headers})
        self._bind(JobRef(endpoint, job_id), _Http(session))

    def _bind(self, ref: JobRef, http: _Http) -> None:
        self.endpoint_id, self.job_id = ref.endpoint.endpoint_id, ref.job_id
        self._ref, self._http = ref, http

    @classmethod
    def _attach(cls, ref: JobRef, http: _Http) -> AsyncioJob:
        """A job sharing its endpoint's session (AsyncioEndpoint.run)."""
        job = cls.__new__(cls)
        job._bind(ref, http)
        return job

    async def status(self) -> str:
        """The job's status: IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED or TIMED_OUT."""
        return str((await self._http.drive(protocol.status_flow(self._ref)))["status"])

    async def output(self, timeout: float | None = None) -> Any:
        """The job's output, waiting for it: `timeout=None` (default) waits as long as it takes,
        a positive timeout raises TimeoutError after that many seconds, 0 fetches once (None
        while the job runs). Raises JobFailed when it ended FAILED, TIMED_OUT or CANCELLED."""
        return await self._http.drive(protocol.output_flow(self._ref, timeout, time.monotonic))

    async def stream(self) -> AsyncIterator[Any]:
        """Yield each stream chunk as soon as the worker produces it; ends when the job ends."""
        async for output in self._http.events(self._ref):
            yield output

    async def cancel(self, timeout: float = 3) -> dict[str, Any]:
        """Cancel the job; returns `{"id", "status"}` (a finished job keeps its status)."""
        return await self._http.drive(protocol.cancel_flow(self._ref, timeout))

    async def close(self) -> None:
        """Close the session, if this job opened it."""
        await self._http.close()


class AsyncioEndpoint:
    """A podq (or RunPod-compatible) endpoint, asyncio flavour (RunPod's `AsyncioEndpoint`)."""

    def __init__(
        self,
        endpoint_id: str,
        session: aiohttp.ClientSession | None = None,
        api_key: str | None = None,
    ) -> None:
        self.endpoint_id = endpoint_id
        self._ref = EndpointRef.create(endpoint_id, api_key)
        self._http = _Http(session)

    async def run(self, request_input: Any) -> AsyncioJob:
        """Queue a job and return it at once.

        Args:
            request_input: the input, or a full envelope `{"input", "webhook", "policy", ...}`.

        Returns:
            The queued AsyncioJob.
        """
        job_id = await self._http.drive(protocol.run_flow(self._ref, request_input))
        return AsyncioJob._attach(JobRef(self._ref, job_id), self._http)

    async def run_sync(self, request_input: Any, timeout: float = 86400) -> Any:
        """Run a job and return its output, waiting up to `timeout` seconds.

        Raises:
            JobFailed: the job ended FAILED, TIMED_OUT or CANCELLED (carries its error).
            TimeoutError: it did not finish in time (it keeps running).
        """
        flow = protocol.run_sync_flow(self._ref, request_input, timeout, time.monotonic)
        return await self._http.drive(flow)

    async def health(self, timeout: float = 3) -> dict[str, Any]:
        """`{"jobs": {...}, "workers": {...}}`."""
        return await self._http.drive(protocol.endpoint_flow(self._ref, "GET", "health", timeout))

    async def purge_queue(self, timeout: float = 3) -> dict[str, Any]:
        """Cancel every queued job; `{"removed": n, "status": "completed"}`."""
        flow = protocol.endpoint_flow(self._ref, "POST", "purge-queue", timeout)
        return await self._http.drive(flow)

    async def close(self) -> None:
        """Close the session, if this endpoint opened it."""
        await self._http.close()

    async def __aenter__(self) -> AsyncioEndpoint:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
