"""Every error status the gateway answers, each as `{"error": "..."}` JSON with its exact text."""

from __future__ import annotations

import re

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from serverless.gateway import GatewayOptions, create_app

from serverless.gateway.auth import INVALID_KEY, MISSING_KEY, add_key
from serverless.gateway.limits import MB, Limits, Rate
from serverless.settings import Settings
from serverless.store import JobStore
from tests.conftest import register
from tests.gateway.conftest import ADMIN_KEY, Gateway, GatewayFactory
from serverless.redis_server import free_port


@pytest.mark.parametrize(
    "body,error",
    [
        (b"{bad", "invalid request body: JSON is malformed: object keys must be strings (byte 1)"),
        (b"", "invalid request body: Input data was truncated"),
        (b"[1, 2]", "invalid request body: Expected `object`, got `array`"),
        (b'{"prompt": "x"}', "invalid request body: Object missing required field `input`"),
        (
            b'{"input": 1, "policy": {"executionTimeout": "10s"}}',
            "invalid request body: Expected `int | null`, got `str` - at `$.policy.executionTimeout`",
        ),
        (
            b'{"input": 1, "policy": {"lowPriority": "yes"}}',
            "invalid request body: Expected `bool`, got `str` - at `$.policy.lowPriority`",
        ),
        (
            b'{"input": 1, "policy": {"priority": 1}}',
            "invalid request body: Object contains unknown field `priority` - at `$.policy`",
        ),
        (
            b'{"input": 1, "policy": {"ttl": -5}}',
            "policy.ttl of -5 ms is out of range; use 1..604800000 ms (7 days)",
        ),
        (
            b'{"input": 1, "webhook": "ftp://example.com/hook"}',
            "webhook 'ftp://example.com/hook' is not an http(s) URL; send an absolute URL such as "
            "https://example.com/hook",
        ),
        (
            b'{"input": 1, "webhook": "example.com/hook"}',
            "webhook 'example.com/hook' is not an http(s) URL; send an absolute URL such as "
            "https://example.com/hook",
        ),
    ],
)
@pytest.mark.parametrize("route", ["run", "runsync"])
@pytest.mark.usefixtures("registered")
async def test_bad_body_is_400(
    gateway: Gateway, endpoint: str, route: str, body: bytes, error: str
) -> None:
    answer = await gateway.call("POST", f"/v2/{endpoint}/{route}", data=body)
    assert answer.status == 400 and answer.body == {"error": error}


@pytest.mark.parametrize("wait", ["abc", "1.5", ""])
@pytest.mark.usefixtures("registered")
async def test_bad_wait_is_400(gateway: Gateway, endpoint: str, wait: str) -> None:
    answer = await gateway.call("POST", f"/v2/{endpoint}/runsync?wait={wait}", json={"input": 1})
    assert answer.status == 400
    assert answer.body == {
        "error": f"wait={wait!r} is not a whole number of milliseconds; use e.g. ?wait=30000 "
        "(1000..300000)"
    }


@pytest.mark.usefixtures("registered")
async def test_bad_last_event_id_is_400(gateway: Gateway, endpoint: str) -> None:
    job_id = (await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1})).body["id"]
    answer = await gateway.call(
        "GET", f"/v2/{endpoint}/stream/{job_id}",
        headers={"Accept": "text/event-stream", "Last-Event-ID": "x; DROP"},
    )
    assert answer.status == 400 and answer.body == {
        "error": "invalid Last-Event-ID 'x; DROP': send the `id:` of the last event you received"
    }


@pytest.mark.parametrize(
    "header,error",
    [(None, MISSING_KEY), ("Bearer ", MISSING_KEY), ("Bearer wrong", INVALID_KEY), ("wrong", INVALID_KEY)],
)
async def test_missing_or_wrong_key_is_401(
    gateway: Gateway, endpoint: str, header: str | None, error: str
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    answer = await gateway.call("GET", f"/v2/{endpoint}/health", headers=headers, auth=False)
    assert answer.status == 401 and answer.body == {"error": error}
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="podq"'


@pytest.mark.parametrize("header", [f"Bearer {ADMIN_KEY}", f"bearer {ADMIN_KEY}", ADMIN_KEY])
@pytest.mark.usefixtures("registered")
async def test_bearer_and_bare_admin_key_both_work(gateway: Gateway, endpoint: str, header: str) -> None:
    answer = await gateway.call(
        "GET", f"/v2/{endpoint}/health", headers={"Authorization": header}, auth=False
    )
    assert answer.status == 200


@pytest.mark.usefixtures("registered")
async def test_keys_stored_hashed_in_redis_are_accepted(
    gateway: Gateway, store: JobStore, endpoint: str
) -> None:
    digest = await add_key(store.redis, "user-key-1", "alice")
    assert b"user-key-1" not in b"".join(await store.redis.hkeys("podq:apikeys"))
    assert len(digest) == 64
    answer = await gateway.call(
        "GET", f"/v2/{endpoint}/health", headers={"Authorization": "user-key-1"}, auth=False
    )
    assert answer.status == 200


@pytest.mark.usefixtures("registered")
async def test_extra_keys_given_to_the_app_are_accepted(
    make_gateway: GatewayFactory, endpoint: str
) -> None:
    gateway = await make_gateway(api_keys=("team-key",))
    answer = await gateway.call(
        "GET", f"/v2/{endpoint}/health", headers={"Authorization": "Bearer team-key"}, auth=False
    )
    assert answer.status == 200


@pytest.mark.usefixtures("registered")
async def test_admin_key_comes_from_the_environment(
    make_gateway: GatewayFactory, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODQ_API_KEY", "from-env")
    gateway = await make_gateway(admin_key=None)
    answer = await gateway.call(
        "GET", f"/v2/{endpoint}/health", headers={"Authorization": "Bearer from-env"}, auth=False
    )
    assert answer.status == 200


@pytest.mark.usefixtures("registered")
async def test_run_over_10_mb_is_413(gateway: Gateway, endpoint: str) -> None:
    body = b'{"input": "' + b"x" * (10 * MB) + b'"}'
    answer = await gateway.call("POST", f"/v2/{endpoint}/run", data=body)
    assert answer.status == 413
    assert answer.body == {
        "error": f"request body of {len(body)} bytes or more is over the 10 MB limit of /run; "
        "send large inputs by reference (a URL or s3Config) instead"
    }


@pytest.mark.usefixtures("registered")
async def test_runsync_over_20_mb_is_413_but_15_mb_is_taken(gateway: Gateway, endpoint: str) -> None:
    big = b'{"input": "' + b"x" * (20 * MB) + b'"}'
    answer = await gateway.call("POST", f"/v2/{endpoint}/runsync", data=big)
    assert answer.status == 413 and "over the 20 MB limit of /runsync" in answer.body["error"]
    fits = b'{"input": "' + b"x" * (15 * MB) + b'"}'
    taken = await gateway.call("POST", f"/v2/{endpoint}/runsync?wait=1000", data=fits)
    assert taken.status == 200 and taken.body["status"] == "IN_QUEUE"


@pytest.mark.usefixtures("registered")
async def test_chunked_body_over_the_cap_is_413(make_gateway: GatewayFactory, endpoint: str) -> None:
    gateway = await make_gateway(limits=Limits(run_max_bytes=1000))

    async def body():  # no Content-Length: the cap is enforced while reading
        for _ in range(10):
            yield b"x" * 200

    async with gateway.session.post(
        f"{gateway.url}/v2/{endpoint}/run", data=body(),
        headers={"Authorization": ADMIN_KEY},
    ) as response:
        assert response.status == 413
        error = (await response.json())["error"]
        assert re.fullmatch(
            r"request body of \d+ bytes or more is over the 1000 bytes limit of /run; "
            r"send large inputs by reference \(a URL or s3Config\) instead",
            error,
        )


@pytest.mark.usefixtures("registered")
async def test_rate_limit_is_429_with_retry_after(
    make_gateway: GatewayFactory, store: JobStore, endpoint: str
) -> None:
    await register(store, "another-endpoint")
    gateway = await make_gateway(limits=Limits(rates={"run": Rate(2, per_s=60)}))
    statuses = [
        (await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1})).status for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    refused = await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1})
    assert refused.headers["Retry-After"] == "30"
    assert refused.body == {
        "error": f"rate limit for /run on endpoint '{endpoint}' exceeded; retry after 30 s"
    }
    other = await gateway.call("POST", "/v2/another-endpoint/run", json={"input": 1})
    assert other.status == 200  # buckets are per endpoint
    health = await gateway.call("GET", f"/v2/{endpoint}/health")
    assert health.status == 200  # and per route


@pytest.mark.usefixtures("registered")
async def test_a_broken_json_client_never_gets_a_500(gateway: Gateway, endpoint: str) -> None:
    for body in (b"\xff\xfe", b"null", b'{"input": 1, "webhook": 5}', b'{"input": 1, "policy": []}'):
        answer = await gateway.call("POST", f"/v2/{endpoint}/run", data=body)
        assert answer.status == 400, body
        assert set(answer.body) == {"error"}


async def test_unreachable_redis_is_503_json(settings: Settings, endpoint: str) -> None:
    dead = Redis(port=free_port(), socket_connect_timeout=0.5)  # nothing listens there
    app = create_app(JobStore(dead, settings), settings, GatewayOptions(admin_key=ADMIN_KEY))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(headers={"Authorization": ADMIN_KEY}) as session:
            async with session.get(f"http://{host}:{port}/v2/{endpoint}/health") as response:
                assert response.status == 503
                assert await response.json() == {
                    "error": "the job store (Redis) is unavailable; retry shortly"
                }
    finally:
        await runner.cleanup()
        await dead.aclose()
