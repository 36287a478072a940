"""Bad input never gets a 500 and never loses a job: each case gets a clear JSON error with the
right 4xx, and jobs submitted before a barrage of bad requests are all still there and complete.

What test_errors.py already covers (malformed bodies on /run, bad ?wait=, wrong keys, the
10/20 MB caps, ftp: and scheme-less webhooks, negative ttl) is not repeated here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from serverless.gateway.app import ADMIN_ROUTES, ROUTES
from serverless.gateway.auth import INVALID_KEY
from serverless.gateway.limits import MB
from serverless.store import JobStore
from tests.gateway.conftest import Answer, Gateway, GatewayFactory

DEEP = 100_000
NESTED = b"[" * DEEP + b"]" * DEEP
TOO_DEEP = "invalid request body: JSON is nested too deeply (over about 1000 levels); send flatter data"
POLICY_RANGE = "policy.{name} of {value} ms is out of range; use 1..604800000 ms (7 days)"


def json_error(answer: Answer, status: int) -> str:
    """The error text of a JSON `{"error": ...}` answer with `status`."""
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers["Content-Type"].startswith("application/json")
    assert isinstance(answer.body, dict) and set(answer.body) == {"error"}, answer.body
    assert answer.body["error"], "an error says what went wrong"
    return answer.body["error"]


# ---- bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["run", "runsync"])
@pytest.mark.parametrize(
    "body",
    [
        b'{"input": ' + NESTED + b"}",  # in the opaque input
        b'{"input": 1, "policy": ' + NESTED + b"}",  # where a Struct is expected
        NESTED,  # the whole body
        b'{"input": ' + b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"}",  # nested objects
    ],
    ids=["input", "policy", "body", "objects"],
)
@pytest.mark.usefixtures("registered")
async def test_deeply_nested_json_is_400_and_quick(
    gateway: Gateway, endpoint: str, route: str, body: bytes
) -> None:
    started = time.monotonic()
    answer = await gateway.call("POST", f"/v2/{endpoint}/{route}?wait=1000", data=body)
    assert time.monotonic() - started < 5
    assert answer.status == 400, answer.body
    assert json_error(answer, 400) in (
        TOO_DEEP, "invalid request body: Expected `object`, got `array`",
        "invalid request body: Expected `object | null`, got `array` - at `$.policy`",
    )
    assert (await gateway.call("GET", "/healthz")).status == 200  # still serving


@pytest.mark.parametrize("path", ["/v1/templates", "/v1/endpoints", "/v1/keys"])
async def test_deeply_nested_admin_bodies_are_400(gateway: Gateway, path: str) -> None:
    # typed bodies stop at the first value of the wrong type; either way a 400 that says why
    for body in (NESTED, b'{"name": "x", "env": ' + b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"}"):
        error = json_error(await gateway.call("POST", path, data=body), 400)
        assert error == TOO_DEEP or error.startswith("invalid request body: ")


@pytest.mark.parametrize(
    "body",
    [
        b'{"input": "caf\xe9"}',  # latin-1 inside the opaque input: would reach the worker
        b'{"input": {"\xff": 1}}',
        b'{"input": 1, "webhook": "https://example.com/\xc3"}',
        b'\xef\xbb\xbf{"input": 1}'[:1] + b'{"input": 1}',  # a stray lead byte
    ],
)
@pytest.mark.usefixtures("registered")
async def test_invalid_utf8_is_400(gateway: Gateway, endpoint: str, body: bytes) -> None:
    error = json_error(await gateway.call("POST", f"/v2/{endpoint}/run", data=body), 400)
    assert error.startswith("invalid request body: not valid UTF-8 (byte ")


async def test_invalid_utf8_in_admin_bodies_is_400(gateway: Gateway) -> None:
    answer = await gateway.call("POST", "/v1/templates", data=b'{"name": "\xff", "handler": "h.py"}')
    assert json_error(answer, 400) == "invalid request body: not valid UTF-8 (byte 10); send JSON encoded as UTF-8"


@pytest.mark.parametrize(
    "body,error",
    [
        ({"input": 1, "policy": "fast"}, "Expected `object | null`, got `str` - at `$.policy`"),
        ({"input": 1, "webhook": ["https://a.example"]}, "Expected `str | null`, got `array` - at `$.webhook`"),
        ({"input": 1, "policy": {"ttl": True}}, "Expected `int | null`, got `bool` - at `$.policy.ttl`"),
        ({"input": 1, "policy": {"ttl": 1.5}}, "Expected `int | null`, got `float` - at `$.policy.ttl`"),
        ({"input": 1, "policy": {"executionTimeout": [1]}},
         "Expected `int | null`, got `array` - at `$.policy.executionTimeout`"),
        ({"input": 1, "policy": {"lowPriority": 1}}, "Expected `bool`, got `int` - at `$.policy.lowPriority`"),
    ],
)
@pytest.mark.usefixtures("registered")
async def test_wrong_types_are_400_naming_the_field(
    gateway: Gateway, endpoint: str, body: dict[str, Any], error: str
) -> None:
    answer = await gateway.call("POST", f"/v2/{endpoint}/run", json=body)
    assert json_error(answer, 400) == f"invalid request body: {error}"


@pytest.mark.parametrize("name", ["ttl", "executionTimeout"])
@pytest.mark.parametrize("value", [0, -1, -(2**63), 7 * 24 * 3600 * 1000 + 1, 2**63 - 1, 10**30])
@pytest.mark.usefixtures("registered")
async def test_policy_durations_out_of_range_are_400(
    gateway: Gateway, endpoint: str, name: str, value: int
) -> None:
    answer = await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1, "policy": {name: value}})
    assert json_error(answer, 400) == POLICY_RANGE.format(name=name, value=value)


@pytest.mark.usefixtures("registered")
async def test_policy_durations_at_the_bounds_are_taken(gateway: Gateway, endpoint: str) -> None:
    for value in (1, 7 * 24 * 3600 * 1000):
        policy = {"ttl": value, "executionTimeout": value}
        answer = await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1, "policy": policy})
        assert answer.status == 200, answer.body


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "javascript:alert(1)",
        "data:text/plain,hi",
        "gopher://example.com/",
        "//example.com/hook",  # scheme-relative
        "http://",  # no host
        "https:///path-only",
        "",
    ],
)
@pytest.mark.usefixtures("registered")
async def test_webhooks_that_are_not_http_urls_are_400(gateway: Gateway, endpoint: str, url: str) -> None:
    answer = await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1, "webhook": url})
    assert json_error(answer, 400) == (
        f"webhook {url!r} is not an http(s) URL; send an absolute URL such as https://example.com/hook"
    )


@pytest.mark.parametrize("url", [" https://example.com/hook", "https://example.com/a b", "https://ex\nample.com/"])
@pytest.mark.usefixtures("registered")
async def test_webhooks_with_spaces_or_control_characters_are_400(
    gateway: Gateway, endpoint: str, url: str
) -> None:
    answer = await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1, "webhook": url})
    assert json_error(answer, 400) == (
        f"webhook {url!r} contains spaces or control characters; percent-encode them (%20) or remove them"
    )


@pytest.mark.usefixtures("registered")
async def test_a_webhook_url_python_cannot_parse_is_400(gateway: Gateway, endpoint: str) -> None:
    answer = await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1, "webhook": "http://[::1"})
    assert json_error(answer, 400).startswith("webhook 'http://[::1' is not a valid URL (")


@pytest.mark.parametrize("path", ["/v1/templates", "/v1/endpoints", "/v1/keys"])
async def test_admin_bodies_over_1_mb_are_413(gateway: Gateway, path: str) -> None:
    body = b'{"name": "' + b"x" * MB + b'"}'
    error = json_error(await gateway.call("POST", path, data=body), 413)
    assert error.startswith(f"request body of {len(body)} bytes or more is over the 1 MB limit of ")


# ---- ids in the path ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "job_id",
    [
        "j" * 5000,  # long (the whole request line stays under aiohttp's 8190-byte limit)
        "..%2F..%2Fetc%2Fpasswd",  # path traversal, encoded
        "%E3%82%B8%E3%83%A7%E3%83%96",  # non-ASCII: ジョブ
        "%FF%FE",  # not UTF-8 once decoded
        "*",  # a Redis glob
        "podq:job:x",
        "%00",
    ],
)
@pytest.mark.parametrize("method,route", [("GET", "status"), ("POST", "stream"), ("POST", "cancel"), ("POST", "retry")])
async def test_unknown_and_malformed_job_ids_are_404(
    gateway: Gateway, endpoint: str, job_id: str, method: str, route: str
) -> None:
    answer = await gateway.call(method, f"/v2/{endpoint}/{route}/{job_id}")
    assert json_error(answer, 404).endswith(
        f"not found on endpoint '{endpoint}' (unknown, of another endpoint, or its result expired)"
    )


@pytest.mark.parametrize(
    "endpoint_id",
    ["e" * 129, "e" * 5000, "..%2F..", "%E3%82%A8", "a%20b", "-leading-dash", "a*", "%00"],
)
@pytest.mark.parametrize("method,route", [("POST", "run"), ("GET", "health"), ("POST", "purge-queue"), ("GET", "status/j1")])
async def test_malformed_endpoint_ids_are_404(
    gateway: Gateway, endpoint_id: str, method: str, route: str
) -> None:
    answer = await gateway.call(method, f"/v2/{endpoint_id}/{route}", json={"input": 1})
    assert json_error(answer, 404).startswith("endpoint ")


async def test_an_endpoint_id_with_a_trailing_newline_is_404(gateway: Gateway) -> None:
    answer = await gateway.call("GET", "/v2/ep%0A/health")
    assert answer.status == 404


@pytest.mark.parametrize(
    "path",
    [
        "/v1/templates/..%2F..%2Fetc", "/v1/templates/%E3%82%A8", "/v1/endpoints/" + "e" * 5000,
        "/v1/endpoints/*", "/v1/keys/not-a-digest",
    ],
)
async def test_malformed_admin_ids_are_404(gateway: Gateway, path: str) -> None:
    method = "DELETE" if path.startswith("/v1/keys") else "GET"
    json_error(await gateway.call(method, path), 404)


async def test_dot_segments_are_resolved_before_routing(gateway: Gateway, endpoint: str) -> None:
    answer = await gateway.call("GET", f"/v2/{endpoint}/status/%2e%2e")  # -> /v2/{endpoint}/
    assert json_error(answer, 404) == f"no route for GET /v2/{endpoint}/; see GET /openapi.json for the routes"


async def test_a_request_line_over_8_kb_is_refused_without_a_500(gateway: Gateway, endpoint: str) -> None:
    # aiohttp's HTTP parser refuses it before any gateway code runs (plain text, not JSON)
    answer = await gateway.call("GET", f"/v2/{endpoint}/status/{'j' * 9000}")
    assert answer.status == 400
    assert (await gateway.call("GET", "/healthz")).status == 200


# ---- keys --------------------------------------------------------------------------------

V2_CALLS = [("POST", "run"), ("POST", "runsync?wait=1000"), ("GET", "status/j1"), ("GET", "stream/j1"),
            ("POST", "cancel/j1"), ("POST", "retry/j1"), ("POST", "purge-queue"), ("GET", "health")]
ADMIN_CALLS = [
    ("POST", "/v1/templates"), ("GET", "/v1/templates"), ("GET", "/v1/templates/t1"),
    ("PATCH", "/v1/templates/t1"), ("DELETE", "/v1/templates/t1"), ("POST", "/v1/endpoints"),
    ("GET", "/v1/endpoints"), ("GET", "/v1/endpoints/e1"), ("PATCH", "/v1/endpoints/e1"),
    ("DELETE", "/v1/endpoints/e1"), ("POST", "/v1/endpoints/e1/pause"),
    ("POST", "/v1/endpoints/e1/resume"), ("POST", "/v1/endpoints/e1/scale-to-zero"),
    ("POST", "/v1/keys"), ("GET", "/v1/keys"), ("DELETE", "/v1/keys/abc"),
]


def test_the_call_lists_cover_every_route() -> None:
    assert {c[1].split("?")[0].split("/")[0] for c in V2_CALLS} == {
        r.name for r in ROUTES if not r.public}
    assert len(ADMIN_CALLS) == sum(len(r.methods) for r in ADMIN_ROUTES)


async def _make_key(gateway: Gateway, **body: Any) -> dict[str, str]:
    made = await gateway.call("POST", "/v1/keys", json=body)
    assert made.status == 200, made.body
    return made.body


@pytest.mark.usefixtures("registered")
async def test_a_scoped_key_is_403_on_every_route_of_another_endpoint(
    gateway: Gateway, endpoint: str
) -> None:
    key = {"Authorization": f"Bearer {(await _make_key(gateway, endpoints=[endpoint]))['key']}"}
    job_id = (await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": 1}, headers=key,
                                 auth=False)).body["id"]
    for method, route in V2_CALLS:
        answer = await gateway.call(method, f"/v2/ep-other/{route.replace('j1', job_id)}",
                                    json={"input": 1}, headers=key, auth=False)
        error = json_error(answer, 403)
        assert error == f"this key may only reach endpoint(s) {endpoint}, not 'ep-other'"
    # and its own job is still there
    own = await gateway.call("GET", f"/v2/{endpoint}/status/{job_id}", headers=key, auth=False)
    assert own.status == 200 and own.body["status"] == "IN_QUEUE"


async def test_a_revoked_key_is_401_on_every_route(gateway: Gateway, endpoint: str) -> None:
    made = await _make_key(gateway, label="gone")
    assert (await gateway.call("DELETE", f"/v1/keys/{made['digest']}")).status == 200
    key = {"Authorization": made["key"]}
    for method, route in V2_CALLS:
        answer = await gateway.call(method, f"/v2/{endpoint}/{route}", json={"input": 1}, headers=key, auth=False)
        assert json_error(answer, 401) == INVALID_KEY
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="podq"'


@pytest.mark.parametrize("scoped", [False, True])
async def test_non_admin_keys_are_403_on_every_admin_route(
    make_gateway: GatewayFactory, store: JobStore, endpoint: str, scoped: bool
) -> None:
    gateway = await make_gateway(api_keys=("user-key",))
    key = (await _make_key(gateway, endpoints=[endpoint]))["key"] if scoped else "user-key"
    for method, path in ADMIN_CALLS:
        answer = await gateway.call(method, path, json={"name": "x"}, auth=False,
                                    headers={"Authorization": f"Bearer {key}"})
        error = json_error(answer, 403)
        assert error.startswith(f"{method} {path} needs the admin key"), error
    assert await store.redis.hlen("podq:registry:templates") == 0  # nothing was written


@pytest.mark.parametrize(
    "header", ["Bearer", "Basic dXNlcjpwYXNz", "Bearer \u00e9t\u00e9", "Bearer a b c", "x" * 4000]
)
async def test_odd_authorization_headers_are_401(gateway: Gateway, endpoint: str, header: str) -> None:
    answer = await gateway.call("GET", f"/v2/{endpoint}/health", headers={"Authorization": header}, auth=False)
    assert json_error(answer, 401) in (INVALID_KEY, "missing API key: send `Authorization: Bearer "
                                       "<key>` (set PODQ_API_KEY or pass api_key= to the client)")


# ---- nothing lost ------------------------------------------------------------------------


@pytest.mark.usefixtures("registered")
async def test_after_a_barrage_of_bad_requests_every_job_is_there_and_completes(
    gateway: Gateway, store: JobStore, endpoint: str, workers
) -> None:
    jobs = []
    for i in range(20):
        answer = await gateway.call("POST", f"/v2/{endpoint}/run", json={"input": {"n": i}})
        assert answer.status == 200
        jobs.append(answer.body["id"])
    bad: list[tuple[str, str, bytes | None]] = [
        ("POST", f"/v2/{endpoint}/run", b'{"input": ' + NESTED + b"}"),
        ("POST", f"/v2/{endpoint}/run", b"{bad"),
        ("POST", f"/v2/{endpoint}/run", b'{"input": "\xff"}'),
        ("POST", f"/v2/{endpoint}/run", b'{"input": 1, "policy": {"ttl": -1}}'),
        ("POST", f"/v2/{endpoint}/run", b'{"input": 1, "webhook": "file:///etc/passwd"}'),
        ("POST", f"/v2/{endpoint}/runsync?wait=x", b'{"input": 1}'),
        ("POST", f"/v2/{endpoint}/run", b'{"input": "' + b"x" * (10 * MB) + b'"}'),
        ("POST", f"/v2/{endpoint}/cancel/..%2F{jobs[0]}", None),
        ("POST", f"/v2/{endpoint}/retry/{jobs[0]}", None),  # 409: not failed
        ("POST", "/v2/ep-other/cancel/" + jobs[1], None),  # another endpoint's job: 404
        ("GET", f"/v2/{endpoint}/stream/{jobs[2]}", None),
        ("PATCH", "/v1/endpoints/" + endpoint, b'{"paused": "yes"}'),
        ("POST", "/v1/keys", b'{"endpoints": "' + endpoint.encode() + b'"}'),
    ]
    answers = await asyncio.gather(*(
        gateway.call(method, path, data=data) for method, path, data in bad * 3
    ))
    assert all(a.status < 500 for a in answers), [(a.status, a.body) for a in answers]
    assert sorted({a.status for a in answers}) == [200, 400, 404, 409, 413]
    await workers(endpoint, n=2)
    deadline = time.monotonic() + 20
    for i, job_id in enumerate(jobs):
        while True:
            status = await gateway.call("GET", f"/v2/{endpoint}/status/{job_id}")
            if status.body["status"] == "COMPLETED" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert status.body["status"] == "COMPLETED", status.body
        assert status.body["output"] == {"echo": {"n": i}}
    health = (await gateway.call("GET", f"/v2/{endpoint}/health")).body
    assert health["jobs"]["completed"] == len(jobs) and health["jobs"]["inQueue"] == 0
