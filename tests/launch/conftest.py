"""Launch fixtures: settings whose object store is a temporary folder, the demo bundle, and a
gateway with a real scaler starting bundle workers (process backend)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scaler.backends.process import ProcessBackend
from scaler.loop import Scaler
from serverless.gateway import GatewayOptions
from serverless.redis_server import RedisProcess
from serverless.registry import Registry
from serverless.settings import Settings
from serverless.store import JobStore
from tests.gateway.conftest import ADMIN_KEY, ThreadedGateway
from tests.scaler_running import running

DEMO = Path(__file__).parent / "bundles" / "demo"


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(redis_url=redis_url, lease_ms=2_000, heartbeat_ms=300,
                    data_dir=str(tmp_path / "data"))


@contextmanager
def scaled_gateway(redis_server: RedisProcess, root: Path) -> Iterator[ThreadedGateway]:
    """A gateway whose loop also runs a scaler with the process backend; files under `root`."""
    settings = Settings(redis_url=redis_server.url, lease_ms=2_000, heartbeat_ms=300,
                        data_dir=str(root / "data"))
    backend = ProcessBackend(settings.redis_url, log_dir=str(root / "workers"))

    async def scale(store: JobStore) -> None:
        async with running(Scaler(Registry(store.redis), store, {"process": backend}, settings, tick_s=0.2),
                           backend):
            await asyncio.Event().wait()

    os.environ["PODQ_BUNDLE_CACHE"] = str(root / "cache")  # the workers inherit it
    try:
        with ThreadedGateway(settings, GatewayOptions(admin_key=ADMIN_KEY), (scale,)) as gw:
            yield gw
    finally:
        del os.environ["PODQ_BUNDLE_CACHE"]


@contextmanager
def file_server(files: dict[str, bytes]) -> Iterator[str]:
    """An HTTP server answering `files` (path -> body; 404 for any other path): its base URL."""

    class Files(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = files.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
