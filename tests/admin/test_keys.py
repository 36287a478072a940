"""API keys: created through /v1/keys (admin only), scoped to endpoints, revoked at once."""

from __future__ import annotations

import json

from tests.admin.conftest import LiveGateway
from tests.conftest import register
from tests.admin.test_cli import ok, podq


async def test_scoped_key_reaches_only_its_endpoints(gateway, store, endpoint) -> None:
    await register(store, endpoint)
    made = await gateway.call("POST", "/v1/keys", json={"label": "team-a", "endpoints": [endpoint]})
    assert made.status == 200 and made.body["key"].startswith("podq_")
    key = {"Authorization": f"Bearer {made.body['key']}"}
    own = await gateway.call("GET", f"/v2/{endpoint}/health", headers=key, auth=False)
    assert own.status == 200
    other = await gateway.call("GET", "/v2/someone-else/health", headers=key, auth=False)
    assert other.status == 403 and f"only reach endpoint(s) {endpoint}" in other.body["error"]
    admin = await gateway.call("GET", "/v1/keys", headers=key, auth=False)
    assert admin.status == 403
    listed = (await gateway.call("GET", "/v1/keys")).body
    assert [(k["digest"], k["label"], k["endpoints"]) for k in listed] == [
        (made.body["digest"], "team-a", [endpoint])]
    assert "key" not in listed[0]  # the key itself is never stored or shown again


async def test_revoked_key_is_refused_and_unscoped_key_reaches_all(gateway, store, endpoint) -> None:
    await register(store, "any-endpoint")
    made = (await gateway.call("POST", "/v1/keys", json={"label": "ci"})).body
    key = {"Authorization": made["key"]}
    assert (await gateway.call("GET", "/v2/any-endpoint/health", headers=key, auth=False)).status == 200
    assert (await gateway.call("DELETE", f"/v1/keys/{made['digest']}")).body == {
        "digest": made["digest"], "revoked": True}
    assert (await gateway.call("GET", f"/v2/{endpoint}/health", headers=key, auth=False)).status == 401
    missing = await gateway.call("DELETE", f"/v1/keys/{made['digest']}")
    assert missing.status == 404 and "podq keys list" in missing.body["error"]


async def test_bad_key_bodies(gateway) -> None:
    bad = await gateway.call("POST", "/v1/keys", json={"endpoints": ["a b"]})
    assert bad.status == 400 and "'a b'" in bad.body["error"]
    unknown = await gateway.call("POST", "/v1/keys", json={"labels": "x"})
    assert unknown.status == 400


def test_keys_cli_create_list_revoke(live: LiveGateway) -> None:
    made = json.loads(ok(podq(live, "keys", "create", "--label", "bob", "--endpoint", "ep-1")))
    assert made["endpoints"] == ["ep-1"] and made["key"].startswith("podq_")
    listed = ok(podq(live, "keys", "list")).splitlines()
    assert listed[0].split() == ["DIGEST", "LABEL", "ENDPOINTS", "KIND"]
    assert listed[1].split() == [made["digest"], "bob", "ep-1", "client"]
    assert json.loads(ok(podq(live, "keys", "revoke", made["digest"])))["revoked"] is True
    refused = podq(live, "keys", "list", key=made["key"])
    assert refused.returncode != 0 and "podq keys list" in refused.stderr
