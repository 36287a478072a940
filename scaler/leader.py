"""One scaler leads at a time: a lease in Redis (SET NX PX), renewed every tick.

Two scaler replicas never act at once, so they never double-spawn; when the leader dies its
lease runs out and a standby takes over within `ttl_ms`. The renew and release scripts only
touch the lease if this replica still holds it (compare-and-set), so a paused ex-leader cannot
extend or delete its successor's lease. (These two tiny scripts live here rather than in
serverless/lua/ because the lease is the scaler's own, not a job transition.)
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from serverless import keys

log = logging.getLogger("podq.scaler")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Leader:
    def __init__(self, redis: Redis, ident: str, ttl_ms: int = 5_000) -> None:
        self.redis, self.ident, self.ttl_ms = redis, ident, ttl_ms
        self.leading = False
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def hold(self) -> bool:
        """Renew the lease if held, else try to take it; True while this replica leads."""
        if self.leading and await self._renew(keys=[keys.SCALER_LEADER], args=[self.ident, self.ttl_ms]):
            return True
        was = self.leading
        self.leading = bool(
            await self.redis.set(keys.SCALER_LEADER, self.ident, nx=True, px=self.ttl_ms)
        )
        if self.leading != was:
            log.warning("scaler %s %s the leader lease", self.ident, "took" if self.leading else "lost")
        return self.leading

    async def release(self) -> None:
        if self.leading:
            await self._release(keys=[keys.SCALER_LEADER], args=[self.ident])
            self.leading = False
