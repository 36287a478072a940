"""`podq endpoint ...` and `podq template ...` run as subprocesses against a live gateway."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from serverless.admin_cli import table
from serverless.model import EndpointStatus
from tests.admin.conftest import LiveGateway
from tests.gateway.conftest import ADMIN_KEY


def podq(
    live: LiveGateway, *args: str, key: str | None = ADMIN_KEY
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODQ_")}
    auth = ("--api-key", key) if key else ()
    return subprocess.run(
        [sys.executable, "-m", "serverless.cli", *args, "--url", live.url, *auth],
        capture_output=True, text=True, env=env, timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_template_and_endpoint_commands_end_to_end(live: LiveGateway) -> None:
    template = json.loads(ok(podq(
        live, "template", "create", "--name", "echo", "--handler", "examples/echo.py",
        "--env", "MODEL=tiny", "--env", "MODE=a=b", "--id", "tpl-cli",
    )))
    assert (template["id"], template["env"]) == ("tpl-cli", {"MODEL": "tiny", "MODE": "a=b"})
    assert "tpl-cli  echo  -      examples/echo.py" in ok(podq(live, "template", "list"))
    assert json.loads(ok(podq(live, "template", "get", "tpl-cli"))) == template

    created = json.loads(ok(podq(
        live, "endpoint", "create", "--name", "echo", "--template-id", "tpl-cli",
        "--workers-max", "2", "--scaler-type", "REQUEST_COUNT", "--scaler-value", "3",
        "--labels", "team=a", "--no-flashboot",
    )))
    ep = created["id"]
    assert (created["workers_max"], created["labels"]) == (2, {"team": "a"})
    assert created["flashboot"] is False
    live.run(live.registry.set_status(ep, EndpointStatus.RUNNING))
    listed = ok(podq(live, "endpoint", "list")).splitlines()
    assert listed[0].split() == ["ID", "NAME", "STATUS", "TEMPLATE", "WORKERS", "SCALER", "GPUS",
                                 "BACKEND", "VER"]
    assert listed[1].split() == [ep, "echo", "running", "tpl-cli", "0..2", "REQUEST_COUNT", "3",
                                 "1", "x", "ANY", "process", "1"]

    updated = json.loads(ok(podq(live, "endpoint", "update", ep, "--workers-min", "1",
                                 "--no-flashboot")))
    assert "flashboot is not available" in podq(live, "endpoint", "update", ep, "--flashboot").stderr
    assert (updated["workers_min"], updated["flashboot"], updated["workers_max"]) == (1, False, 2)
    assert json.loads(ok(podq(live, "endpoint", "pause", ep)))["paused"] is True
    assert "running (paused)" in ok(podq(live, "endpoint", "list"))
    assert json.loads(ok(podq(live, "endpoint", "resume", ep)))["paused"] is False
    assert json.loads(ok(podq(live, "endpoint", "scale-to-zero", ep)))["id"] == ep
    assert live.run(live.registry.scale_to_zero_requested()) == {ep}
    assert json.loads(ok(podq(live, "endpoint", "get", ep)))["status"] == "running"
    assert json.loads(ok(podq(live, "endpoint", "delete", ep))) == {"id": ep, "deleted": True}
    assert json.loads(ok(podq(live, "template", "delete", "tpl-cli")))["deleted"] is True
    assert "no endpoints; create one with" in ok(podq(live, "endpoint", "list"))


def test_errors_print_the_servers_message_and_exit_1(live: LiveGateway) -> None:
    ok(podq(live, "template", "create", "--name", "echo", "--handler", "h.py", "--id", "tpl-1"))
    bad = podq(live, "endpoint", "create", "--name", "e", "--template-id", "tpl-1",
               "--workers-min", "5", "--workers-max", "1")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip() == (
        f"podq endpoint create: HTTP 400 from POST {live.url}/v1/endpoints: "
        "workers_min (5) is above workers_max (1)"
    )
    missing = podq(live, "endpoint", "get", "ep-nope")
    assert missing.returncode == 1 and "endpoint 'ep-nope' not found" in missing.stderr
    forbidden = podq(live, "template", "list", key="user-key")
    assert forbidden.returncode == 1 and "needs the admin key" in forbidden.stderr
    no_key = podq(live, "template", "list", key=None)
    assert no_key.returncode == 1 and "401 Unauthorized" in no_key.stderr


def test_usage_errors_exit_2(live: LiveGateway) -> None:
    missing = podq(live, "endpoint", "create", "--name", "e")
    assert missing.returncode == 2 and "--template-id" in missing.stderr
    label = podq(live, "endpoint", "update", "ep-1", "--labels", "novalue")
    assert label.returncode == 2 and "'novalue' is not KEY=VALUE" in label.stderr


@pytest.mark.parametrize("rows,expected", [
    ([], "A  LONGER"),
    ([("wide-cell", 1)], "A          LONGER\nwide-cell  1"),
])
def test_table_pads_each_column_to_its_widest_cell(rows: list, expected: str) -> None:
    assert table(("A", "LONGER"), rows) == expected
