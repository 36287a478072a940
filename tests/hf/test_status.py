"""Hugging Face's statuses as podq reports them: the scaler's plan (updating while an older
version serves), the status it writes (updateFailed, failed), and `raw`'s state, which
huggingface_hub's own InferenceEndpoint parses."""

from __future__ import annotations

import msgspec
import pytest
from huggingface_hub import InferenceEndpoint as HubEndpoint
from huggingface_hub import InferenceEndpointStatus

from scaler.reconcile import reconcile, reported_status
from serverless.hf.mapping import HFArgs, create_bodies
from serverless.hf.raw import iso, minutes_of, raw_of, state_of
from serverless.model import EndpointConfig, EndpointStatus, Template
from tests.scaler.test_reconcile import NOW, T, ep, started, stopped, w

S = EndpointStatus


def test_every_podq_status_is_one_of_hugging_faces() -> None:
    assert {s.value for s in EndpointStatus} == {s.value for s in InferenceEndpointStatus}


@pytest.mark.parametrize("workers,desired,status", [
    # a new version is starting while the old one serves: updating
    ([w("old", "running", version=1)], 1, S.UPDATING),
    ([w("old", "idle", version=1), w("new", None, version=2, age_s=1)], 1, S.UPDATING),
    # the new version is ready: the old one is stopped this tick, the endpoint is running
    ([w("old", "running", version=1), w("new", "idle", version=2)], 1, S.RUNNING),
    # nothing wanted (min 0, no jobs): nothing rolls, the old idle worker is stopped (it
    # drains this tick, then the endpoint is scaled to zero)
    ([w("old", "idle", version=1)], 0, S.RUNNING),
    # no worker of either version: the next job starts the new version
    ([], 0, S.SCALED_TO_ZERO),
    ([w("new", None, version=2, age_s=1)], 1, S.INITIALIZING),
])
def test_a_rolling_update_is_updating_until_the_new_version_serves(workers, desired, status) -> None:
    assert reconcile(ep(version=2), desired, workers, NOW, T).status is status


def test_updating_keeps_the_old_worker_and_starts_a_new_one() -> None:
    plan = reconcile(ep(version=2), 1, [w("old", "running", version=1)], NOW, T)
    assert (started(plan), stopped(plan), plan.status) == (1, [], S.UPDATING)
    idle = reconcile(ep(version=2), 0, [w("old", "idle", version=1)], NOW, T)
    assert (started(idle), stopped(idle)) == (0, ["old"])


def test_a_paused_endpoint_is_paused_even_mid_update() -> None:
    plan = reconcile(ep(version=2, paused=True), 0, [w("old", version=1)], NOW, T, force_zero=True)
    assert plan.status is S.PAUSED


@pytest.mark.parametrize("planned,problem,written", [
    (S.INITIALIZING, "", S.INITIALIZING),
    (S.INITIALIZING, "no GPU", S.FAILED),  # nothing serves and nothing can start
    (S.RUNNING, "no GPU", S.RUNNING),  # a worker serves; the reason says what could not start
    (S.UPDATING, "", S.UPDATING),
    (S.UPDATING, "workers keep failing right after start", S.UPDATE_FAILED),  # old one serves
    (S.SCALED_TO_ZERO, "", S.SCALED_TO_ZERO),
    (S.PAUSED, "", S.PAUSED),
])
def test_the_status_the_scaler_writes(planned, problem, written) -> None:
    assert reported_status(planned, problem) is written


def endpoint(**kw) -> EndpointConfig:
    _, body = create_bodies("e", HFArgs(repository="gpt2", framework="pytorch", accelerator="cpu",
                                        instance_size="x1", instance_type="intel-icl",
                                        vendor="aws", region="us-east-1", handler="h.py"))
    return msgspec.convert({**body, "created_at": 1_700_000_000_123, **kw}, EndpointConfig)


@pytest.mark.parametrize("fields,rolled,state", [
    ({"status": S.RUNNING}, False, S.RUNNING),
    ({"status": S.RUNNING, "paused": True}, False, S.PAUSED),  # paused now; the scaler follows
    ({"status": S.PAUSED}, False, S.PENDING),  # resumed; the scaler has not looked yet
    ({"status": S.RUNNING}, True, S.UPDATING),  # this client just bumped the version
    ({"status": S.SCALED_TO_ZERO}, True, S.SCALED_TO_ZERO),  # nothing to roll
    ({"status": S.FAILED}, False, S.FAILED),
])
def test_state_reports_what_the_config_already_says(fields, rolled, state) -> None:
    assert state_of(endpoint(**fields), rolled) is state


@pytest.mark.parametrize("status,url", [
    (S.PENDING, None), (S.INITIALIZING, None), (S.PAUSED, None), (S.FAILED, None),
    (S.RUNNING, "http://gw/v2/e/hf"), (S.SCALED_TO_ZERO, "http://gw/v2/e/hf"),  # a job wakes it
    (S.UPDATING, "http://gw/v2/e/hf"), (S.UPDATE_FAILED, "http://gw/v2/e/hf"),  # old version serves
])
def test_the_url_is_given_while_the_endpoint_serves(status, url) -> None:
    assert raw_of(endpoint(status=status), None, "http://gw/v2/e/hf")["status"]["url"] == url


def test_huggingface_hubs_own_class_parses_raw() -> None:
    template = Template(id="hf-e", name="e", handler="h.py", image_name="me/w:1",
                        env={"HF_MODEL_ID": "gpt2", "HF_TASK": "text-generation", "A": "1", "S": "x"})
    config = endpoint(status=S.RUNNING, labels={**endpoint().labels, "hf.secrets": "S"})
    raw = raw_of(config, template, "http://gw/v2/e/hf")
    parsed = HubEndpoint.from_raw(raw, namespace="podq", token="k", api=object())  # no Hub call
    assert (parsed.name, parsed.repository, parsed.status, parsed.url, parsed.task) == (
        "e", "gpt2", "running", "http://gw/v2/e/hf", "text-generation")
    assert (parsed.framework, parsed.type, parsed.health_route) == ("pytorch", "authenticated", "/health")
    assert parsed.created_at.isoformat() == "2023-11-14T22:13:20.123000+00:00"
    assert raw["model"]["env"] == {"A": "1"} and raw["model"]["secrets"] == ["S"]  # no values
    assert raw["model"]["image"] == {"custom": {"url": "me/w:1", "healthRoute": "/health"}}
    assert raw["compute"] == {"accelerator": "cpu", "instanceType": "intel-icl", "instanceSize": "x1",
                              "scaling": {"minReplica": 1, "maxReplica": 1, "scaleToZeroTimeout": None}}
    assert raw["provider"] == {"vendor": "aws", "region": "us-east-1"}


def test_an_endpoint_made_without_hf_labels_still_has_a_raw() -> None:
    plain = EndpointConfig(id="p", name="p", template_id="t", gpu_ids="AMPERE_24", gpu_count=2,
                           workers_min=0, idle_timeout=120)
    raw = raw_of(plain, None, "u")
    assert raw["compute"] == {"accelerator": "gpu", "instanceType": "ampere_24", "instanceSize": "x2",
                              "scaling": {"minReplica": 0, "maxReplica": 3, "scaleToZeroTimeout": 2}}
    assert (raw["model"]["repository"], raw["model"]["framework"], raw["type"]) == ("", "custom", "authenticated")


@pytest.mark.parametrize("ms,text", [(0, "1970-01-01T00:00:00.000Z"), (1_700_000_000_123, "2023-11-14T22:13:20.123Z")])
def test_timestamps_are_the_apis(ms, text) -> None:
    assert iso(ms) == text


@pytest.mark.parametrize("seconds,minutes", [(900, 15), (0, 0), (5, None), (90, None)])
def test_scale_to_zero_timeout_is_reported_in_whole_minutes(seconds, minutes) -> None:
    assert minutes_of(seconds) == minutes
