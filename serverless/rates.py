"""Request rates: the `Rate` record, named presets, and the one grammar every rate setting uses.

Pure, so the registry can check an endpoint's `rate_limits` before it is stored and the gateway
can read PODQ_RATE_LIMITS and PODQ_KEY_RATE_LIMITS with the same rules:

    spec   := "" | OFF | ON | item ("," item)*
    item   := PRESET | ROUTE "=" REQUESTS ["/" SECONDS ["s"]]

OFF (`false`, `off`, `0`, `no`, `none`) and "" limit nothing; ON (`true`, `on`, `yes`, `1`)
means the `runpod` preset. Items apply left to right: a preset sets its routes, a pair sets one
route (window 10 s when left out), so `runpod,run=500/10` is RunPod's numbers with a lower /run.
A route no item names is not limited: `run=500/10,runsync=1000/10` limits those two only.
"""

from __future__ import annotations

import re

import msgspec


class Rate(msgspec.Struct, frozen=True):
    """`requests` per `per_s` seconds; a burst of up to `requests` at once is allowed."""

    requests: int
    per_s: float = 10.0


# RunPod's per-endpoint numbers (docs.runpod.io, "Operation reference", "Rate limits")
RUNPOD_RATES: dict[str, Rate] = {
    "run": Rate(1000),
    "runsync": Rate(2000),
    "status": Rate(2000),
    "stream": Rate(2000),
    "cancel": Rate(100),
    "purge-queue": Rate(2),
}
PRESETS: dict[str, dict[str, Rate]] = {"runpod": RUNPOD_RATES}
# the routes a rate may name (health, retry and the worker routes are never limited)
ROUTES: tuple[str, ...] = tuple(RUNPOD_RATES)
OFF_WORDS = frozenset({"", "false", "off", "0", "no", "none"})
ON_WORDS = frozenset({"true", "on", "yes", "1"})

_PAIR = re.compile(r"^\s*([a-z-]+)\s*=\s*(\d+)\s*(?:/\s*(\d+(?:\.\d+)?)\s*s?)?\s*$")
EXAMPLE = "run=500/10,runsync=1000/10"


def parse_rates(text: str | bool) -> dict[str, Rate]:
    """The rates a spec sets, by route (empty: nothing is limited).

    Args:
        text: a spec (module docstring); a bool as Settings may hold one: True is `runpod`.

    Returns:
        Route name -> Rate, for the routes the spec limits.

    Raises:
        ValueError: a message quoting the bad part and the fix (callers name the setting).
    """
    if isinstance(text, bool):
        return dict(RUNPOD_RATES) if text else {}
    word = text.strip().lower()
    if word in OFF_WORDS:
        return {}
    if word in ON_WORDS:
        return dict(RUNPOD_RATES)
    rates: dict[str, Rate] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part.lower() in PRESETS:
            rates.update(PRESETS[part.lower()])
        else:
            route, rate = _pair(part)
            rates[route] = rate
    return rates


def _pair(part: str) -> tuple[str, Rate]:
    match = _PAIR.match(part)
    if match is None or match[1] not in ROUTES or int(match[2]) < 1:
        raise ValueError(
            f"{part!r} is not ROUTE=REQUESTS[/SECONDS] with ROUTE one of {', '.join(ROUTES)} and "
            f"REQUESTS >= 1, nor a preset ({', '.join(PRESETS)}); write e.g. {EXAMPLE!r}, "
            "'runpod' or 'off'"
        )
    per_s = float(match[3]) if match[3] else 10.0
    if per_s <= 0:
        raise ValueError(f"{part!r} has a window of 0 s; write e.g. {match[1]}={match[2]}/10")
    return match[1], Rate(int(match[2]), per_s)
