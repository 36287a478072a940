"""A lease in Redis: one holder at a time (SET NX PX), renewed and released by compare-and-set.

The scaler's leader lease (scaler/leader.py) and each batch's runner lease
(serverless/batches/store.py) are this one thing. Renew and release only touch the key while
`owner` still holds it, so a paused former holder cannot extend or delete its successor's lease.
(Two tiny scripts, kept here rather than in the job store's Functions library: a lease is not a
job transition.)
"""

from __future__ import annotations

from redis.asyncio import Redis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Leases:
    """Take, renew and release leases on any key of one Redis connection."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def take(self, key: str, owner: str, ttl_ms: int) -> bool:
        """True when `owner` now holds the free lease `key` for `ttl_ms`."""
        return bool(await self.redis.set(key, owner, nx=True, px=ttl_ms))

    async def renew(self, key: str, owner: str, ttl_ms: int) -> bool:
        """Extend the lease by `ttl_ms` if `owner` still holds it; False when it was lost."""
        return bool(await self._renew(keys=[key], args=[owner, ttl_ms]))

    async def release(self, key: str, owner: str) -> None:
        """Give the lease up, if `owner` still holds it."""
        await self._release(keys=[key], args=[owner])
