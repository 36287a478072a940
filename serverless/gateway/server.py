"""Entry points that run a gateway: `serve` (blocking, for a CLI), `run_gateway` (a coroutine
that runs until cancelled) and `start_gateway` (starts one and hands back a handle, for
`podq dev` and tests). Each opens its own job store on `settings.redis_url` and closes it.

    serve(Settings(...), "0.0.0.0", 8000)                       # blocks; SIGTERM stops it
    gw = await start_gateway(settings, port=0); ...; await gw.close()
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from serverless import eventloop
from serverless.gateway.app import GatewayOptions, create_app
from serverless.gateway.hot_path import HotSite
from serverless.queue import connect
from serverless.settings import Settings
from serverless.store import JobStore

log = logging.getLogger("podq.gateway")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


class RunningGateway:
    """A started gateway: its base URL, and `close()` to stop it and close its store."""

    def __init__(self, runner: web.AppRunner, store: JobStore) -> None:
        self.runner, self.store = runner, store
        host, port = runner.addresses[0][:2]
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.store.close()


async def start_gateway(
    settings: Settings,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    options: GatewayOptions | None = None,
) -> RunningGateway:
    """Connect to Redis and start serving on host:port (port 0 picks a free one).

    Args:
        settings: podq's settings (redis_url is used here).
        host: the interface to bind.
        port: the TCP port; 0 for any free port (see `RunningGateway.port`).
        options: keys, limits and webhook policy for create_app.

    Returns:
        The running gateway; call `close()` to stop it.
    """
    store = JobStore(await connect(settings.redis_dsn), settings)
    runner = web.AppRunner(create_app(store, settings, options), access_log=None)
    await runner.setup()
    try:
        await HotSite(runner, host, port, backlog=1024).start()
    except OSError:
        await runner.cleanup()
        await store.close()
        raise
    return RunningGateway(runner, store)


async def run_gateway(
    settings: Settings,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    options: GatewayOptions | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set or this coroutine is cancelled; then close everything."""
    gateway = await start_gateway(settings, host, port, options)
    log.info("podq gateway listening on %s", gateway.url)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await gateway.close()


async def _serve_until_signal(
    settings: Settings, host: str, port: int, options: GatewayOptions | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_gateway(settings, host, port, options, stop)


def serve(
    settings: Settings,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    options: GatewayOptions | None = None,
) -> None:
    """Run a gateway until SIGTERM or Ctrl-C, on uvloop when installed (call from the main thread).

    Args:
        settings: podq's settings (redis_url is used).
        host: the interface to bind.
        port: the TCP port.
        options: keys, limits and webhook policy.
    """
    eventloop.run(_serve_until_signal(settings, host, port, options))
