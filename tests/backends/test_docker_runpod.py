"""An unmodified RunPod worker image on the docker backend, end to end.

The image is built here, with no registry: `FROM` the tests' empty imported base
(tests/backends/docker_engine.py), `COPY handler.py`, `CMD ["python", "-u", "/app/handler.py"]`,
PATH pointing `python` at this venv (runpod 1.12), which the engine's read-only binds bring
in. A `protocol: runpod` template makes the real scaler start it with RunPod's env only; its
own CMD runs, its `runpod.serverless.start` takes the job from the real gateway's worker
routes, and /runsync answers the handler's output. Skips, with dockerd's words, where no Docker
engine can run.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import sys
import tarfile
import time
from importlib.metadata import version
from urllib.parse import urlencode

import aiodocker
import httpx
import pytest

from scaler.backends.docker import DockerBackend
from scaler.loop import Scaler
from serverless.gateway import GatewayOptions, start_gateway
from serverless.model import EndpointConfig, Template, WorkerProtocol
from serverless.registry import Registry
from serverless.settings import Settings
from serverless.store import JobStore
from tests.backends.docker_engine import DockerEngine, api, say

IMAGE_DIR = os.path.join(os.path.dirname(__file__), "runpod_image")
RUNPOD_IMAGE = "podq-test-runpod:1"
CMD = ["python", "-u", "/app/handler.py"]
ADMIN_KEY = "podq-test-admin-key"


def build_image(engine: DockerEngine) -> None:
    """`docker build` of runpod_image/ through the Engine API (the classic builder: no RUN)."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name in ("Dockerfile", "handler.py"):
            tar.add(os.path.join(IMAGE_DIR, name), arcname=name)
    args = {"BASE": engine.image, "VENV": os.path.realpath(sys.prefix)}
    query = urlencode({"t": RUNPOD_IMAGE, "buildargs": json.dumps(args), "rm": "1", "forcerm": "1"})
    status, body = api(engine.socket_path, "POST", f"/build?{query}", context.getvalue(),
                       content_type="application/x-tar", timeout=120)
    events = [json.loads(line) for line in body.splitlines() if line.strip()]
    errors = [e for e in events if "error" in e or "errorDetail" in e]
    assert status == 200 and not errors, f"building {RUNPOD_IMAGE} failed: {status} {body[-1500:]!r}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def until(predicate, timeout: float, what: str):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        await asyncio.sleep(0.1)


async def test_runpod_image_runs_its_own_cmd_and_serves_runsync(
        docker_engine: DockerEngine, store: JobStore, redis_url: str, endpoint: str, request) -> None:
    began = time.monotonic()
    await asyncio.to_thread(build_image, docker_engine)
    built_in = time.monotonic() - began

    port = free_port()
    settings = Settings(redis_url=redis_url, gateway_url=f"http://127.0.0.1:{port}", runpod_ping_ms=1000,
                        runpod_hold_ms=2000, grace_period_s=3, rate_limits=False)
    gateway = await start_gateway(settings, "127.0.0.1", port, GatewayOptions(admin_key=ADMIN_KEY))
    registry = Registry(store.redis)
    backend = DockerBackend(docker_engine.options())
    template = await registry.put_template(Template(
        id=f"t-{endpoint}", name="runpod image", image_name=RUNPOD_IMAGE, protocol=WorkerProtocol.RUNPOD))
    await registry.put_endpoint(EndpointConfig(
        id=endpoint, name="runpod", template_id=template.id, backend="docker",
        workers_min=0, workers_max=1, idle_timeout=60))
    scaler = Scaler(registry, JobStore(store.redis, settings), {"docker": backend}, settings,
                    ident="s-runpod", tick_s=0.2, inventory=lambda: [])
    stop = asyncio.Event()
    task = asyncio.create_task(scaler.run(stop))
    docker = aiodocker.Docker(url=docker_engine.host)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60,
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            # zero workers: the job makes the scaler start the image; /runsync waits for it
            asked = time.monotonic()
            reply = await client.post(f"/v2/{endpoint}/runsync", json={"input": {"prompt": "hi"}})
            served_in = time.monotonic() - asked
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["status"] == "COMPLETED", body

            [handle] = [h for h in await backend.list() if h.endpoint_id == endpoint]
            assert body["output"] == {"echo": {"prompt": "hi"}, "pod": handle.worker_id,
                                      "sdk": version("runpod")}  # the venv the image runs
            assert body["workerId"] == handle.worker_id

            shown = await docker.containers.container(handle.ref).show()
            image = await docker.images.inspect(RUNPOD_IMAGE)
            assert image["Config"]["Cmd"] == CMD
            assert shown["Config"]["Cmd"] == CMD  # the image's own: podq did not override it
            assert shown["Path"] == "python" and shown["Args"] == CMD[1:]
            assert shown["HostConfig"]["RestartPolicy"]["Name"] == "no"
            env = dict(item.split("=", 1) for item in shown["Config"]["Env"])
            assert "/job-take/$ID?gpu=" in env["RUNPOD_WEBHOOK_GET_JOB"]
            assert env["RUNPOD_WEBHOOK_GET_JOB"].startswith(f"{settings.gateway_url}/v2/{endpoint}/")
            assert env["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] == "true"
            assert env["RUNPOD_POD_ID"] == handle.worker_id
            assert env["RUNPOD_PING_INTERVAL"] == "1000"
            assert env["RUNPOD_AI_API_KEY"].startswith("podq_w_")
            assert env["PATH"].startswith(os.path.realpath(sys.prefix))  # the image's ENV is kept

            async def one_worker() -> dict | None:
                health = (await client.get(f"/v2/{endpoint}/health")).json()
                workers = health["workers"]
                return health if workers["idle"] + workers["running"] == 1 else None

            health = await until(one_worker, 10, "/health never showed the worker")
            assert health["jobs"]["completed"] == 1

            # deleting the endpoint makes the scaler stop and remove the container
            deleted = time.monotonic()
            await registry.delete_endpoint(endpoint)

            async def removed() -> bool:
                return not [h for h in await backend.list() if h.endpoint_id == endpoint]

            await until(removed, 15, "the container was not removed after the endpoint was deleted")
            removed_in = time.monotonic() - deleted
            with pytest.raises(aiodocker.DockerError) as gone:
                await docker.containers.container(handle.ref).show()
            assert gone.value.status == 404
    finally:
        stop.set()
        await task
        await scaler.close()
        for h in await backend.list():
            if h.endpoint_id == endpoint:
                await backend.stop(h, 0)
        await backend.close()
        await gateway.close()
        try:
            await docker.images.delete(RUNPOD_IMAGE, force=True)
        except aiodocker.DockerError:
            pass
        await docker.close()
    say(request.config, f"runpod image: built in {built_in:.2f} s, cold /runsync {served_in:.2f} s, "
                        f"removed {removed_in:.2f} s after delete, total {time.monotonic() - began:.2f} s")
