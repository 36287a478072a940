"""Schemathesis against the gateway's own /openapi.json: every route, public and admin.

A real gateway listens on a real port (in a background thread, since schemathesis calls it
with a blocking HTTP client) over the real redis-server, with the admin key, and a worker on
the same loop finishes every job of every endpoint at once (so /runsync answers quickly and
/status, /stream and /retry see real jobs). For each operation schemathesis sends valid and
invalid requests; every answer must be no 5xx, conform to the documented status codes,
content types, headers and schemas, and every error must be JSON `{"error": ...}`.

Bounded and reproducible: a few examples per operation (PODQ_FUZZ_EXAMPLES), derandomized
(the same inputs on every run), no example database.
"""

from __future__ import annotations

import asyncio
import os
import urllib.request
from collections.abc import Iterator

import msgspec
import pytest
import schemathesis
from schemathesis import Case, CheckContext, Response
from schemathesis.specs.openapi.checks import positive_data_acceptance

from serverless import keys
from serverless.codec import json_encode
from serverless.gateway import GatewayOptions
from serverless.gateway.app import api_spec
from serverless.gateway.webhooks import WebhookPolicy
from serverless.model import Status
from serverless.redis_server import RedisProcess
from serverless.settings import Settings
from serverless.store import JobStore
from tests.gateway.conftest import ADMIN_KEY, ThreadedGateway, beat

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("PODQ_FUZZ_EXAMPLES", "25"))


async def finish_everything(store: JobStore) -> None:
    """A worker for every endpoint: each queued job ends COMPLETED with its input as output."""
    while True:
        idle = True
        for endpoint in await store.endpoints():
            while (taken := await store.take(endpoint, "fuzz-worker")) is not None:
                idle = False
                await store.finish(taken.id, taken.attempt, Status.COMPLETED, output=bytes(taken.input))
        if idle:
            await asyncio.sleep(0.005)


@pytest.fixture(scope="module")
def fuzzed(redis_server: RedisProcess) -> Iterator[ThreadedGateway]:
    """The gateway under fuzz, with a worker that completes every job (finish_everything)."""
    # worker routes long-poll: a short hold keeps each fuzzed take quick
    settings = Settings(redis_url=redis_server.url, lease_ms=2_000, heartbeat_ms=300, runpod_hold_ms=100)
    options = GatewayOptions(
        admin_key=ADMIN_KEY,
        # fuzzed webhook hosts are never waited on for long; private hosts are allowed,
        # since whether one is refused depends on this setting, not on the schema
        webhooks=WebhookPolicy(timeout_s=0.2, retries=0, retry_delay_s=0.0, allow_private=True),
        worker_refusal_pause_s=0.0,  # fuzzed keys are refused on every worker route
    )
    with ThreadedGateway(settings, options, beside=(finish_everything,)) as gateway:
        yield gateway


# The document the gateway serves at /openapi.json (test_the_fuzzed_schema_is_the_served_one
# checks it is byte for byte the same); loaded at collection, so each operation is a test.
schema = schemathesis.openapi.from_dict(msgspec.json.decode(json_encode(api_spec())))
schema.config.update(request_timeout=15)
# unknown query parameters and headers are ignored, as RunPod does: not a schema violation
schema.config.generation.update(
    max_examples=EXAMPLES, deterministic=True, database="none", allow_extra_parameters=False
)


def error_is_json(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx/5xx, documented or not (405, 413 ...), is `{"error": "<text>"}` JSON; on the
    OpenAI routes a handler's own error is OpenAI's `{"error": {"message", "type", "param", "code"}}`."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), (
        f"{response.status_code} answered as {content_type!r}: {response.text[:200]!r}"
    )
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    if ("/openai/v1/" in case.path or "/hf/v1/" in case.path) and isinstance(body["error"], dict):  # OpenAI's shape there
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert isinstance(body["error"]["message"], str), body
    else:
        assert isinstance(body["error"], str), body
    return True


def test_the_fuzzed_schema_is_the_served_one(fuzzed: ThreadedGateway) -> None:
    with urllib.request.urlopen(f"{fuzzed.url}/openapi.json", timeout=10) as response:
        assert response.read() == json_encode(api_spec())


INTEGRAL_FLOAT = "got `float`"

# The registry refuses (400) settings the schema cannot express: a template that runs nothing,
# workers_min above workers_max, a template_id that does not exist, an unknown GPU pool. For
# these operations a schema-valid body may get 400 (still JSON, still never a 5xx).
STATEFUL_BODIES = frozenset({
    "create_template_post", "update_template_patch", "create_endpoint_post", "update_endpoint_patch",
    "create_bundle_post",  # the body must be a zip, which JSON Schema cannot say
})


def valid_data_is_accepted_or_refused_by_the_registry(
    ctx: CheckContext, response: Response, case: Case
) -> bool | None:
    """positive_data_acceptance, with 400 allowed where the registry's rules decide."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    allowed = {401, 403, 404, 409, 429} | ({400} if case.operation.definition.raw.get(
        "operationId") in STATEFUL_BODIES else set())
    if response.status_code == 400 and INTEGRAL_FLOAT in response.text:
        return True  # known: 2686.0 is a JSON Schema integer, msgspec's strict int refuses it
    assert response.status_code < 300 or response.status_code in allowed, (
        f"schema-valid request refused with {response.status_code}: {response.text[:300]}"
    )
    return True


def served(case: Case, fuzzed: ThreadedGateway) -> None:
    """The fuzz worker serves every endpoint: it beats for the case's endpoint before the call,
    so run, runsync, health and purge-queue get past the unknown-endpoint 404 (known_endpoints,
    tested in test_known_endpoints.py) and their bodies and parameters are fuzzed too."""
    endpoint = (case.path_parameters or {}).get("endpoint_id")
    if isinstance(endpoint, str) and keys.valid_id(endpoint):
        fuzzed.run(beat(fuzzed.store, endpoint, "fuzz-worker"))


@schema.parametrize()
def test_every_route_survives_fuzzing(case: Case, fuzzed: ThreadedGateway) -> None:
    served(case, fuzzed)
    case.call_and_validate(
        base_url=fuzzed.url,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        excluded_checks=[positive_data_acceptance],
        additional_checks=[error_is_json, valid_data_is_accepted_or_refused_by_the_registry],
    )
