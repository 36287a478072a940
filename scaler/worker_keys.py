"""The worker key the scaler gives the RunPod-protocol workers of an endpoint (RUNPOD_AI_API_KEY).

One key per endpoint, derived as HMAC(secret, endpoint id) from a random secret kept in Redis,
so every scaler replica (and a restarted one) computes the same key without Redis ever holding
it: only its sha256 digest is stored, as a worker key scoped to that endpoint (it reaches the
worker-protocol routes of that endpoint and nothing else). Revoke it with `podq keys revoke`
and the next start mints it again from the same secret; delete the secret key in Redis to
rotate every endpoint's worker key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from redis.asyncio import Redis

from serverless import keys
from serverless.gateway.auth import add_key, hash_key


async def endpoint_worker_key(redis: Redis, endpoint_id: str) -> str:
    """The endpoint's worker key, stored (as a digest) if it is not yet."""
    await redis.set(keys.WORKER_KEY_SECRET, secrets.token_hex(32), nx=True)
    secret = await redis.get(keys.WORKER_KEY_SECRET)
    key = "podq_w_" + hmac.new(secret, endpoint_id.encode(), hashlib.sha256).hexdigest()[:40]
    if not await redis.hexists(keys.API_KEYS, hash_key(key)):
        await add_key(redis, key, label=f"worker key of endpoint {endpoint_id} (scaler)",
                      endpoints=[endpoint_id], worker=True)
    return key
