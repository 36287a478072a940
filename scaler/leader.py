"""One scaler leads at a time: a lease in Redis (serverless/lease.py), renewed every tick.

Two scaler replicas never act at once, so they never double-spawn; when the leader dies its
lease runs out and a standby takes over within `ttl_ms`. A paused ex-leader cannot extend or
delete its successor's lease (the lease's compare-and-set).
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from serverless import keys
from serverless.lease import Leases

log = logging.getLogger("podq.scaler")


class Leader:
    def __init__(self, redis: Redis, ident: str, ttl_ms: int = 5_000) -> None:
        self.redis, self.ident, self.ttl_ms = redis, ident, ttl_ms
        self.leading = False
        self._leases = Leases(redis)

    async def hold(self) -> bool:
        """Renew the lease if held, else try to take it; True while this replica leads."""
        if self.leading and await self._leases.renew(keys.SCALER_LEADER, self.ident, self.ttl_ms):
            return True
        was = self.leading
        self.leading = await self._leases.take(keys.SCALER_LEADER, self.ident, self.ttl_ms)
        if self.leading != was:
            log.warning("scaler %s %s the leader lease", self.ident, "took" if self.leading else "lost")
        return self.leading

    async def release(self) -> None:
        if self.leading:
            await self._leases.release(keys.SCALER_LEADER, self.ident)
            self.leading = False
