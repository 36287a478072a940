"""Boolean query parameters, parsed one way for every route.

`?update_if_exists=` and `?low_priority=`: one parser, so a spelling one route takes is never
a 400 on another. It accepts exactly `true`, `false`, `1` and `0` in any letter case. (A
RunPod worker's `?job_in_progress=` is left to the worker routes, which read it as RunPod's
server does: `0` releases, anything else does not; a worker image is never refused over it.)
"""

from __future__ import annotations

from collections.abc import Mapping

from serverless.errors import BadRequest

# lower-cased spellings; nothing looser ("yes", "on", "") so a typo is a 400, not a silent false
FLAG_VALUES = {"true": True, "1": True, "false": False, "0": False}


def query_flag(query: Mapping[str, str], name: str, default: bool = False) -> bool:
    """The boolean query parameter `name`: `true`, `false`, `1` or `0` in any letter case;
    `default` when absent (pure). Any other value is a BadRequest (400) naming the fix."""
    raw = query.get(name)
    if raw is None:
        return default
    value = FLAG_VALUES.get(raw.lower())
    if value is None:
        raise BadRequest(f"{name}={raw!r} is not a flag; use ?{name}=true or ?{name}=false")
    return value
