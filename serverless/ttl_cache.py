"""A small in-process cache whose entries expire: key -> (value, expiry ms), oldest first.

What a gateway process keeps for a few seconds so a hot path skips a Redis round trip: which
endpoints are known (gateway/known_endpoints.py) and each endpoint's access (gateway/auth.py).
Bounded: at `size` entries the oldest written goes first. Times are passed in (pure).
"""

from __future__ import annotations

from typing import Generic, TypeVar

V = TypeVar("V")


class TtlCache(Generic[V]):
    def __init__(self, ttl_ms: int, size: int) -> None:
        self.ttl_ms, self.size = ttl_ms, size
        self._entries: dict[str, tuple[V, int]] = {}

    def get(self, key: str, now_ms: int) -> V | None:
        """The value kept for `key`, or None when none is kept or it expired (then dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= now_ms:
            del self._entries[key]
            return None
        return entry[0]

    def put(self, key: str, value: V, now_ms: int) -> None:
        """Keep `value` for ttl_ms from `now_ms`."""
        self._entries.pop(key, None)  # re-added last, so the oldest stays first
        while len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (value, now_ms + self.ttl_ms)
