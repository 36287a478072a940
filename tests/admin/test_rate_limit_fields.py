"""An endpoint's `rate_limits` through every admin surface: the Python functions (RunPod's
signatures, a podq extra) and `podq endpoint create/update --rate-limits`."""

from __future__ import annotations

import json

import pytest

import serverless
from serverless.errors import BadRequest
from tests.admin.conftest import LiveGateway
from tests.admin.test_cli import ok, podq


def test_the_admin_functions_set_and_clear_rate_limits(live: LiveGateway) -> None:
    template = serverless.create_template("echo", None, handler="examples/echo.py")
    endpoint = serverless.create_endpoint("echo", template["id"], rate_limits="runpod")
    assert endpoint["rate_limits"] == "runpod"
    assert endpoint.update(rate_limits="run=500/10,runsync=1000/10")["rate_limits"] == (
        "run=500/10,runsync=1000/10")
    assert serverless.get_endpoint(endpoint.id)["rate_limits"] == "run=500/10,runsync=1000/10"
    assert serverless.update_endpoint(endpoint.id, rate_limits=None)["rate_limits"] is None
    plain = serverless.create_endpoint("plain", template["id"])
    assert plain["rate_limits"] is None  # the gateway's default (PODQ_RATE_LIMITS, off)
    with pytest.raises(BadRequest, match=r"rate_limits 'run=fast' is invalid: 'run=fast' is not "
                                         r"ROUTE=REQUESTS\[/SECONDS\]"):
        endpoint.update(rate_limits="run=fast")


def test_the_cli_takes_rate_limits(live: LiveGateway) -> None:
    ok(podq(live, "template", "create", "--name", "echo", "--handler", "h.py", "--id", "tpl-rl"))
    created = json.loads(ok(podq(live, "endpoint", "create", "--name", "e", "--template-id",
                                 "tpl-rl", "--rate-limits", "runpod", "--id", "ep-rl")))
    assert created["rate_limits"] == "runpod"
    off = json.loads(ok(podq(live, "endpoint", "update", "ep-rl", "--rate-limits", "off")))
    assert off["rate_limits"] == "off"
    default = json.loads(ok(podq(live, "endpoint", "update", "ep-rl", "--rate-limits", "")))
    assert default["rate_limits"] == ""  # "" like null: the gateway's default
    bad = podq(live, "endpoint", "update", "ep-rl", "--rate-limits", "health=5")
    assert bad.returncode == 1 and bad.stderr.startswith(
        f"podq endpoint update: HTTP 400 from PATCH {live.url}/v1/endpoints/ep-rl: "
        "rate_limits 'health=5' is invalid: 'health=5' is not ROUTE=REQUESTS[/SECONDS]")
