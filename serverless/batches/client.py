"""The synchronous batch client: `serverless.batch(endpoint_id, inputs=...)` -> BatchHandle.

    handle = serverless.batch("ep-1", inputs="prompts.jsonl")      # a file, uploaded (streamed)
    handle = serverless.batch("ep-1", inputs=[{"prompt": "hi"}, ...])  # any iterable, as JSONL
    handle = serverless.batch("ep-1", url="https://example.com/prompts.csv")  # fetched by the gateway
    handle.wait(progress=True)            # a progress bar (rich) until it ends
    for line in handle.results(): ...     # {"index", "id", "status", "output" | "error"}
    handle.retry_failed()

Every call is one HTTP request to the gateway's /v1/batches routes (docs/batch.md); the gateway
and key come from base_url/api_key, else serverless.endpoint_url_base / serverless.api_key, else
PODQ_ENDPOINT_BASE_URL / PODQ_API_KEY, as for the other clients.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import msgspec

from serverless.admin import admin_base_url
from serverless.client import protocol
from serverless.errors import PodqError

TERMINAL = ("COMPLETED", "CANCELLED")
UPLOAD_CHUNK = 1 << 20


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(UPLOAD_CHUNK):
            yield chunk


def _jsonl(values: Iterable[Any]) -> Iterator[bytes]:
    encode = msgspec.json.Encoder().encode
    buffer: list[bytes] = []
    for value in values:
        buffer.append(encode(value) + b"\n")
        if len(buffer) >= 1000:
            yield b"".join(buffer)
            buffer.clear()
    yield b"".join(buffer)


class BatchClient:
    """The /v1/batches routes: one method per route, each returns the decoded reply."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.base_url = admin_base_url(base_url)
        self.headers = protocol.auth_headers(protocol.resolve_api_key(api_key))
        self.http = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0))

    def _send(self, method: str, path: str, content: Any = None, query: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None) -> httpx.Response:
        url = f"{self.base_url}/v1/batches{path}" + (f"?{urlencode(query)}" if query else "")
        try:
            response = self.http.request(method, url, content=content, headers={**self.headers, **(headers or {})})
        except httpx.TransportError as e:
            raise PodqError(f"cannot reach the podq gateway at {self.base_url} ({e}); start one "
                            "(podq dev, podq gateway) or set PODQ_ENDPOINT_BASE_URL / --url") from e
        return response

    def call(self, method: str, path: str = "", body: Any = None, query: dict[str, Any] | None = None,
             content: Any = None, headers: dict[str, str] | None = None) -> Any:
        content = msgspec.json.encode(body) if body is not None else content
        if body is not None:
            headers = {"Content-Type": "application/json"}
        response = self._send(method, path, content, query, headers)
        request = protocol.Request(method, str(response.request.url), self.headers, None, 0)
        return protocol.decode_reply(request, protocol.Reply(response.status_code, response.content))

    def submit(self, endpoint_id: str, *, inputs: str | os.PathLike[str] | Iterable[Any] | None = None,
               url: str | None = None, format: str | None = None, **options: Any) -> dict[str, Any]:
        """Start a batch from a file path, an iterable of inputs, or a URL; the new batch."""
        options = {k: v for k, v in options.items() if v is not None}
        if url is not None:
            return self.call("POST", body={"endpoint_id": endpoint_id, "url": url, "format": format, **options})
        if inputs is None:
            raise PodqError("give inputs= (a file path or an iterable of inputs) or url=")
        if isinstance(inputs, (str, os.PathLike)):
            path = Path(inputs)
            fmt = format or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
            content: Iterable[bytes] = _file_chunks(path)
        else:
            fmt, content = "jsonl", _jsonl(inputs)
        query = {"endpoint_id": endpoint_id, "format": fmt,
                 **{k: str(v).lower() if isinstance(v, bool) else v for k, v in options.items()}}
        return self.call("POST", query=query, content=content,
                         headers={"Content-Type": "text/csv" if fmt == "csv" else "application/x-ndjson"})

    def get(self, batch_id: str) -> dict[str, Any]:
        return self.call("GET", f"/{quote(batch_id, safe='')}")

    def list(self) -> list[dict[str, Any]]:
        return self.call("GET")["batches"]

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return self.call("POST", f"/{quote(batch_id, safe='')}/cancel")

    def retry(self, batch_id: str) -> dict[str, Any]:
        return self.call("POST", f"/{quote(batch_id, safe='')}/retry")

    def delete(self, batch_id: str) -> dict[str, Any]:
        return self.call("DELETE", f"/{quote(batch_id, safe='')}")

    def results(self, batch_id: str, status: str | None = None) -> Iterator[bytes]:
        """The results file's lines (bytes, each a JSON object), streamed."""
        url = f"{self.base_url}/v1/batches/{quote(batch_id, safe='')}/results"
        with self.http.stream("GET", url, params={"status": status} if status else None,
                              headers=self.headers) as response:
            if response.status_code != 200:
                request = protocol.Request("GET", url, self.headers, None, 0)
                protocol.raise_for_reply(request, protocol.Reply(response.status_code, response.read()))
            for line in response.iter_lines():
                if line:
                    yield line.encode()

    def close(self) -> None:
        self.http.close()


Progress = Callable[[dict[str, Any]], None]


class BatchHandle:
    """One batch: status(), results(), wait(), cancel(), retry_failed(), delete()."""

    def __init__(self, client: BatchClient, batch: dict[str, Any]) -> None:
        self.client, self.id, self.last = client, batch["id"], batch

    def status(self) -> dict[str, Any]:
        """The batch now: state, counts, rate, eta_s."""
        self.last = self.client.get(self.id)
        return self.last

    def results(self, status: str | None = None) -> Iterator[dict[str, Any]]:
        """Each result line so far, in input order (decoded)."""
        for line in self.client.results(self.id, status):
            yield msgspec.json.decode(line)

    def wait(self, timeout: float | None = None, poll_s: float = 1.0,
             progress: bool | Progress = False) -> dict[str, Any]:
        """Until the batch is COMPLETED or CANCELLED (or `timeout` s); `progress`: True for a
        rich progress bar, or a function called with each status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with _progress(progress) as show:
            while True:
                batch = self.status()
                show(batch)
                if batch["state"] in TERMINAL:
                    return batch
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"batch {self.id} is still {batch['state']} after {timeout} s")
                time.sleep(poll_s)

    def cancel(self) -> dict[str, Any]:
        self.last = self.client.cancel(self.id)
        return self.last

    def retry_failed(self) -> dict[str, Any]:
        """Run the FAILED and TIMED_OUT inputs again (one call); the batch, RUNNING."""
        self.last = self.client.retry(self.id)
        return self.last

    def delete(self) -> dict[str, Any]:
        return self.client.delete(self.id)


def done_count(batch: dict[str, Any]) -> int:
    c = batch["counts"]
    return c["completed"] + c["failed"] + c["cancelled"] + c["timed_out"]


class _progress:
    """A context giving a function that shows a batch's progress (rich), or calls the user's."""

    def __init__(self, progress: bool | Progress) -> None:
        self.user = progress if callable(progress) else None
        self.bar = None
        if progress is True:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            # on stderr: stdout stays the batch's JSON (podq batch submit --wait)
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]:.1f}/s"), TimeRemainingColumn(),
                                console=Console(stderr=True))

    def __enter__(self) -> Progress:
        if self.bar is None:
            return self.user or (lambda batch: None)
        self.bar.start()
        self.task = None

        def show(batch: dict[str, Any]) -> None:
            if self.task is None:
                self.task = self.bar.add_task(batch["id"], total=batch["total"], rate=0.0)
            self.bar.update(self.task, completed=done_count(batch), rate=batch["rate"],
                            description=f"{batch['id']} {batch['state']}")

        return show

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def batch(endpoint_id: str, inputs: str | os.PathLike[str] | Iterable[Any] | None = None, *,
          url: str | None = None, format: str | None = None, max_in_flight: int | None = None,
          low_priority: bool | None = None, execution_timeout_ms: int | None = None,
          base_url: str | None = None, api_key: str | None = None) -> BatchHandle:
    """Start a batch on `endpoint_id` and return its handle.

    Args:
        endpoint_id: the endpoint that runs every input.
        inputs: a JSONL or CSV file path (uploaded, streamed), or an iterable of inputs.
        url: instead of inputs, a URL the gateway fetches the file from.
        format: jsonl or csv (default: from the file or URL suffix).
        max_in_flight: inputs queued or running at once (default 512).
        low_priority: queue the jobs as lowPriority (default True).
        execution_timeout_ms: each job's executionTimeout.
        base_url: the gateway; default as the other clients.
        api_key: a key that may reach the endpoint.

    Returns:
        The BatchHandle.
    """
    client = BatchClient(base_url, api_key)
    created = client.submit(endpoint_id, inputs=inputs, url=url, format=format, max_in_flight=max_in_flight,
                            low_priority=low_priority, execution_timeout_ms=execution_timeout_ms)
    return BatchHandle(client, created)
