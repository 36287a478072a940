"""RunPod's own local dev server: `python bench/handlers/runpod_noop.py --rp_serve_api` (the
`runpod` package's FastAPI/uvicorn app, one process, the handler runs in-process: no queue).
Latency and throughput both use POST /runsync (its /run only stores the job until /status)."""

from __future__ import annotations

import aiohttp

from bench.common import fan_out
from bench.peers.base import PY, Peer
from bench.common import wait_http
from serverless.redis_server import free_port


class RunpodPeer(Peer):
    name = "RunPod dev server"

    async def __aenter__(self) -> RunpodPeer:  # no Redis: the dev server has no queue
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def start(self) -> None:
        port = free_port()
        self.procs.spawn([PY, "bench/handlers/runpod_noop.py", "--rp_serve_api",
                          "--rp_api_port", str(port), "--rp_log_level", "ERROR"])
        await wait_http(f"http://localhost:{port}/", self.procs.procs, timeout=60)
        self.url_runsync = f"http://localhost:{port}/runsync"
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        await self.throughput(50, 16)

    async def close_clients(self) -> None:
        if getattr(self, "session", None) is not None:
            await self.session.close()

    async def roundtrip(self) -> None:
        async with self.session.post(self.url_runsync, json={"input": {}}) as r:
            body = await r.json()
        if body.get("status") != "COMPLETED":
            raise RuntimeError(f"RunPod runsync: {body}")

    async def throughput(self, total: int, clients: int) -> float:
        return total / await fan_out(total, clients, self.roundtrip)
