"""The one rate grammar (serverless/rates.py): endpoint `rate_limits`, PODQ_RATE_LIMITS and
PODQ_KEY_RATE_LIMITS, and the messages a bad spec gets in each place."""

from __future__ import annotations

import pytest

from serverless.errors import BadRequest, ConfigError
from serverless.gateway.limits import limits_from_settings, parse_key_rates
from serverless.rates import RUNPOD_RATES, Rate, parse_rates
from serverless.registry import check_rate_limits
from serverless.settings import Settings, load_settings


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("", {}), ("false", {}), ("OFF", {}), ("0", {}), ("none", {}),  # nothing is limited
        (False, {}),                                                   # Settings(rate_limits=False)
        ("runpod", RUNPOD_RATES), ("RunPod", RUNPOD_RATES),            # RunPod's cloud quotas
        ("true", RUNPOD_RATES), (True, RUNPOD_RATES),                  # the old PODQ_RATE_LIMITS=true
        ("run=500/10,runsync=1000/10", {"run": Rate(500), "runsync": Rate(1000)}),  # only those
        ("run=5, status = 50/1s", {"run": Rate(5), "status": Rate(50, 1.0)}),  # window: 10 s if left out
        ("runpod,run=100/10", {**RUNPOD_RATES, "run": Rate(100)}),     # a preset, then one route lower
        ("run=100,runpod", RUNPOD_RATES),                              # left to right
        ("purge-queue=1/0.5,", {"purge-queue": Rate(1, 0.5)}),         # a trailing comma is fine
    ],
)
def test_parse_rates(spec: str | bool, expected: dict[str, Rate]) -> None:
    assert parse_rates(spec) == expected


def test_runpods_numbers() -> None:
    assert RUNPOD_RATES == {
        "run": Rate(1000, 10.0), "runsync": Rate(2000, 10.0), "status": Rate(2000, 10.0),
        "stream": Rate(2000, 10.0), "cancel": Rate(100, 10.0), "purge-queue": Rate(2, 10.0),
    }


NOT_A_PAIR = (
    "{part!r} is not ROUTE=REQUESTS[/SECONDS] with ROUTE one of run, runsync, status, stream, "
    "cancel, purge-queue and REQUESTS >= 1, nor a preset (runpod); write e.g. "
    "'run=500/10,runsync=1000/10', 'runpod' or 'off'"
)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("fast", NOT_A_PAIR.format(part="fast")),
        ("run=0", NOT_A_PAIR.format(part="run=0")),
        ("health=5", NOT_A_PAIR.format(part="health=5")),        # health is never limited
        ("runpod,run=-1", NOT_A_PAIR.format(part="run=-1")),
        ("run=1/x", NOT_A_PAIR.format(part="run=1/x")),
        ("run=5/0", "'run=5/0' has a window of 0 s; write e.g. run=5/10"),
    ],
)
def test_a_bad_spec_names_the_part_and_the_fix(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_rates(spec)
    assert str(raised.value) == message
    with pytest.raises(BadRequest) as refused:  # the registry, for an endpoint's rate_limits
        check_rate_limits(spec)
    assert str(refused.value) == f"rate_limits {spec!r} is invalid: {message}"
    with pytest.raises(ConfigError) as config:  # the gateway, for its environment
        limits_from_settings(load_settings({"PODQ_RATE_LIMITS": spec}))
    assert str(config.value) == f"PODQ_RATE_LIMITS: {message}"
    with pytest.raises(ConfigError, match="^PODQ_KEY_RATE_LIMITS: "):
        parse_key_rates(spec)


@pytest.mark.parametrize("spec", [None, "", "off", "runpod", "run=1/60,status=3"])
def test_the_registry_takes_every_valid_spec(spec: str | None) -> None:
    check_rate_limits(spec)


def test_both_kinds_are_off_by_default() -> None:
    limits = limits_from_settings(load_settings({}))
    assert (limits.rates, limits.key_rates) == ({}, {})
    assert (Settings().rate_limits, Settings().key_rate_limits) == (False, "")


@pytest.mark.parametrize(
    "env,rates,key_rates",
    [
        ({"PODQ_RATE_LIMITS": "runpod"}, RUNPOD_RATES, {}),
        ({"PODQ_RATE_LIMITS": "false"}, {}, {}),
        ({"PODQ_RATE_LIMITS": "run=500/10"}, {"run": Rate(500)}, {}),
        ({"PODQ_KEY_RATE_LIMITS": "run=100/10"}, {}, {"run": Rate(100)}),
        ({"PODQ_RATE_LIMITS": "false", "PODQ_KEY_RATE_LIMITS": "runpod"}, {}, RUNPOD_RATES),
    ],
)
def test_limits_come_from_the_environment(env: dict[str, str], rates: dict, key_rates: dict) -> None:
    limits = limits_from_settings(load_settings(env))
    assert (limits.rates, limits.key_rates) == (rates, key_rates)
