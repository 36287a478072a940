"""The clients' pure core: every call's URL, headers and body, and every reply's meaning.

No I/O here (httpx's `BaseClient` split). Each operation is a *flow*: a generator that yields
a `Request` (or a `Sleep`) and is sent back the `Reply`; `sync.py` and `aio.py` only drive
flows, so polling, retries, timeouts and error mapping are written once.

RunPod compatibility (shared/reference/runpod-api.md section 1): same routes and bodies, the
input-wrapping rule, `output(timeout=0)` fetching once. Better than RunPod: a job that ends
FAILED, TIMED_OUT or CANCELLED raises JobFailed with its error instead of returning None, a
401 says how to set the key, a 429 is retried after Retry-After, and streams end on every
terminal status.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from serverless import errors
from serverless.client.events import SSEDecoder, SSEEvent
from serverless.model import TERMINAL_STATUSES, Status

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v2"
BASE_URL_ENV = "PODQ_ENDPOINT_BASE_URL"
API_KEY_ENV = "PODQ_API_KEY"
# per-request timeout of the short calls (RunPod's client uses 10 s)
CALL_TIMEOUT_S = 10.0
# /runsync: the longest server-side wait, and the margin the HTTP timeout adds to it
RUNSYNC_MAX_WAIT_MS = 300_000
RUNSYNC_HTTP_MARGIN_S = 30.0
# an SSE stream sends a keep-alive comment every 15 s; a read this long means it is dead
STREAM_READ_TIMEOUT_S = 60.0
STREAM_RECONNECTS = 3
RATE_LIMIT_RETRIES = 3
TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)

_decode_json = msgspec.json.Decoder().decode
_encode_json = msgspec.json.Encoder().encode
_ERRORS: dict[int, type[errors.PodqError]] = {
    400: errors.BadRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    429: errors.RateLimited,
}
KEY_HELP = "pass api_key=..., set serverless.api_key, or export PODQ_API_KEY"


# ---- configuration, read lazily ----------------------------------------------------------


def _package_setting(name: str) -> Any:
    return getattr(sys.modules.get("serverless"), name, None)


def resolve_base_url() -> str:
    """`serverless.endpoint_url_base` if set, else $PODQ_ENDPOINT_BASE_URL, else the default."""
    base = _package_setting("endpoint_url_base") or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return str(base).rstrip("/")


def resolve_api_key(explicit: str | None = None) -> str | None:
    """`explicit`, else `serverless.api_key`, else $PODQ_API_KEY, else None."""
    return explicit or _package_setting("api_key") or os.environ.get(API_KEY_ENV) or None


# ---- what goes over the wire -------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None = None
    timeout: float | None = CALL_TIMEOUT_S


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    retry_after: str | None = None


@dataclass(frozen=True)
class Sleep:
    seconds: float


Flow = Generator[Request | Sleep, Reply | None, T]


@dataclass(frozen=True)
class EndpointRef:
    """Where an endpoint is and how to authenticate to it."""

    base_url: str
    endpoint_id: str
    headers: dict[str, str]

    @classmethod
    def create(cls, endpoint_id: str, api_key: str | None = None) -> EndpointRef:
        """Resolve the base URL and key now (as RunPod's Endpoint does at construction)."""
        return cls(resolve_base_url(), endpoint_id, auth_headers(resolve_api_key(api_key)))

    def url(self, path: str) -> str:
        return f"{self.base_url}/{self.endpoint_id}/{path}"


@dataclass
class JobRef:
    """One job of an endpoint; `final` caches the body once the job is terminal."""

    endpoint: EndpointRef
    job_id: str
    final: dict[str, Any] | None = None

    def url(self, action: str) -> str:
        return self.endpoint.url(f"{action}/{self.job_id}")


def auth_headers(api_key: str | None) -> dict[str, str]:
    """RunPod's headers: JSON, and `Authorization: Bearer <key>` when there is a key."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def wrap_input(request_input: Any) -> dict[str, Any]:
    """RunPod's envelope rule: a dict with an `input` key is sent as it is (so webhook, policy
    and s3Config pass through, and `{"input": {}}` is not wrapped twice); anything else becomes
    `{"input": request_input}`."""
    if isinstance(request_input, dict) and "input" in request_input:
        return request_input
    return {"input": request_input}


def encode_input(request_input: Any) -> bytes:
    """The JSON body of /run and /runsync; TypeError names a value that is not JSON."""
    try:
        return _encode_json(wrap_input(request_input))
    except (TypeError, msgspec.EncodeError) as e:
        raise TypeError(f"request_input is not JSON serializable: {e}") from e


def runsync_wait_ms(timeout_s: float) -> int:
    """The ?wait= to ask /runsync for: the caller's timeout, within the server's 1 s..5 min."""
    return int(min(RUNSYNC_MAX_WAIT_MS, max(1_000, timeout_s * 1000)))


def run_request(endpoint: EndpointRef, request_input: Any) -> Request:
    return Request("POST", endpoint.url("run"), endpoint.headers, encode_input(request_input))


def runsync_request(endpoint: EndpointRef, request_input: Any, timeout_s: float) -> Request:
    wait_ms = runsync_wait_ms(timeout_s)
    url = endpoint.url(f"runsync?wait={wait_ms}")
    body = encode_input(request_input)
    return Request("POST", url, endpoint.headers, body, wait_ms / 1000 + RUNSYNC_HTTP_MARGIN_S)


def endpoint_request(endpoint: EndpointRef, method: str, path: str, timeout: float) -> Request:
    """health (GET) and purge-queue (POST): no body."""
    return Request(method, endpoint.url(path), endpoint.headers, None, timeout)


def job_request(
    job: JobRef, action: str, method: str = "GET", timeout: float = CALL_TIMEOUT_S
) -> Request:
    """status, stream (polling) and cancel of one job: no body."""
    return Request(method, job.url(action), job.endpoint.headers, None, timeout)


def events_request(job: JobRef, last_id: str | None) -> Request:
    """GET /stream/{id} as Server-Sent Events, resuming after `last_id`."""
    headers = {**job.endpoint.headers, "Accept": "text/event-stream"}
    if last_id:
        headers["Last-Event-ID"] = last_id
    return Request("GET", job.url("stream"), headers, None, STREAM_READ_TIMEOUT_S)


# ---- what comes back ---------------------------------------------------------------------


def _error_text(body: bytes) -> str:
    try:
        value = _decode_json(body)
    except msgspec.DecodeError:
        return body[:200].decode("utf-8", "replace") or "(empty body)"
    return str(value.get("error", value)) if isinstance(value, dict) else str(value)


def raise_for_reply(request: Request, reply: Reply) -> None:
    """Raise the PodqError matching a non-2xx reply, quoting the gateway's message."""
    if 200 <= reply.status < 300:
        return
    where = f"{request.method} {request.url.split('?')[0]}"
    text = _error_text(reply.body)
    if reply.status == 401:
        raise errors.Unauthorized(f"401 Unauthorized from {where}: {text}; {KEY_HELP}")
    raise _ERRORS.get(reply.status, errors.PodqError)(f"HTTP {reply.status} from {where}: {text}")


def decode_reply(request: Request, reply: Reply) -> Any:
    """The JSON of a 2xx reply, or the matching PodqError."""
    raise_for_reply(request, reply)
    try:
        return _decode_json(reply.body)
    except msgspec.DecodeError as e:
        raise errors.PodqError(
            f"{request.method} {request.url} answered with invalid JSON ({e}); "
            "is the base URL a podq gateway? Check PODQ_ENDPOINT_BASE_URL"
        ) from e


def is_terminal(body: dict[str, Any]) -> bool:
    return body.get("status") in TERMINAL


def result_of(body: dict[str, Any]) -> Any:
    """A terminal body's output, or JobFailed for FAILED, TIMED_OUT and CANCELLED."""
    if body.get("status") == Status.COMPLETED:
        return body.get("output")
    error = body.get("error") or f"the job ended {body.get('status')}"
    raise errors.JobFailed(str(body.get("id")), str(body.get("status")), error)


def remember(job: JobRef, body: dict[str, Any]) -> dict[str, Any]:
    """Cache a terminal body on the job (a finished job never changes again)."""
    if is_terminal(body):
        job.final = body
    return body


def _retry_after(reply: Reply) -> float:
    try:
        return max(0.0, float(reply.retry_after or 1))
    except ValueError:
        return 1.0


# ---- flows -------------------------------------------------------------------------------


def call(request: Request) -> Flow[Any]:
    """Send one request; a 429 is retried after its Retry-After (a 429 did nothing)."""
    retries = 0
    while True:
        reply = yield request
        assert reply is not None, "a driver answers every Request with a Reply"
        if reply.status != 429 or retries == RATE_LIMIT_RETRIES:
            return decode_reply(request, reply)
        retries += 1
        yield Sleep(_retry_after(reply))


def run_flow(endpoint: EndpointRef, request_input: Any) -> Flow[str]:
    """POST /run; returns the new job's id."""
    body = yield from call(run_request(endpoint, request_input))
    return str(body["id"])


def status_flow(job: JobRef) -> Flow[dict[str, Any]]:
    """The job's status body (cached once terminal)."""
    if job.final is not None:
        return job.final
    return remember(job, (yield from call(job_request(job, "status"))))


def poll_delays(first: float = 0.05, cap: float = 1.0) -> Iterator[float]:
    """Seconds between status polls: quick at first, then once a second."""
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2)


def wait_flow(job: JobRef, timeout: float | None, clock: Callable[[], float]) -> Flow[Any]:
    """Poll /status until the job is terminal; its result, or TimeoutError after `timeout`."""
    deadline = None if timeout is None else clock() + timeout
    delays = poll_delays()
    while True:
        body = yield from status_flow(job)
        if is_terminal(body):
            return result_of(body)
        if deadline is not None and clock() >= deadline:
            raise TimeoutError(
                f"job {job.job_id} is still {body.get('status')} after {timeout} s; it keeps "
                "running: wait again with output(timeout=...) or cancel() it"
            )
        delay = next(delays)
        yield Sleep(delay if deadline is None else min(delay, max(0.0, deadline - clock())))


def output_flow(job: JobRef, timeout: float | None, clock: Callable[[], float]) -> Flow[Any]:
    """RunPod's `output(timeout)`: 0 fetches once (None while unfinished), else waits."""
    if timeout == 0:
        body = yield from status_flow(job)
        return result_of(body) if is_terminal(body) else None
    return (yield from wait_flow(job, timeout, clock))


def run_sync_flow(
    endpoint: EndpointRef, request_input: Any, timeout: float, clock: Callable[[], float]
) -> Flow[Any]:
    """POST /runsync; if it did not finish within the server's wait, poll for the rest."""
    started = clock()
    body = yield from call(runsync_request(endpoint, request_input, timeout))
    job = JobRef(endpoint, str(body["id"]))
    if is_terminal(remember(job, body)):
        return result_of(body)
    left = max(0.001, timeout - (clock() - started))
    return (yield from wait_flow(job, left, clock))


def cancel_flow(job: JobRef, timeout: float) -> Flow[dict[str, Any]]:
    return remember(job, (yield from call(job_request(job, "cancel", "POST", timeout))))


def endpoint_flow(endpoint: EndpointRef, method: str, path: str, timeout: float) -> Flow[Any]:
    return (yield from call(endpoint_request(endpoint, method, path, timeout)))


# ---- streaming ---------------------------------------------------------------------------


class StreamState:
    """One resumable SSE read of a job's chunks; feed it bytes, it returns chunk outputs."""

    def __init__(self, job: JobRef) -> None:
        self.job = job
        self.last_id: str | None = None
        self.done = False
        self._decoder = SSEDecoder()
        self._failures = 0

    def request(self) -> Request:
        """The request for the next connection (resuming after the last chunk received)."""
        self._decoder = SSEDecoder()
        return events_request(self.job, self.last_id)

    def feed(self, data: bytes) -> list[Any]:
        """Outputs of the chunks completed by `data`; marks the stream done at the end."""
        outputs = []
        for event in self._decoder.feed(data):
            if not self.done:
                outputs.extend(self._on_event(event))
        return outputs

    def _on_event(self, event: SSEEvent) -> list[Any]:
        body = _decode_json(event.data)
        match event.event:
            case "status":
                self.done = True
                remember(self.job, body)
                return []
            case "error":
                raise errors.NotFound(f"stream of job {self.job.job_id} ended: {body.get('error')}")
        self.last_id, self._failures = event.id, 0
        return [body.get("output")]

    def ended(self) -> None:
        """The connection closed; unless done, the caller reconnects (a few times at most)."""
        if self.done:
            return
        self._failures += 1
        if self._failures > STREAM_RECONNECTS:
            raise errors.PodqError(
                f"stream of job {self.job.job_id} closed {self._failures} times without its "
                "final event; check the gateway, then call stream() again to resume"
            )
