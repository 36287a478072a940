-- purge-queue, one batch: up to `limit` of the oldest queued jobs of an endpoint end CANCELLED;
-- running jobs are untouched. The caller repeats until a batch comes back short, so Redis
-- serves other clients between batches instead of stalling for a 100,000-job queue.
-- Each job ends as _lib.lua's ended() would end it (status, error, finished_at, retention,
-- webhook), in four calls instead of eight; the stats counter moves once per batch.
-- KEYS[1] queue zset
-- ARGV: endpoint, now, error message, limit, jobs removed by earlier batches
-- Returns {jobs removed, ids looked at}
register('purge', function(KEYS, ARGV)
  local ep, now, limit = ARGV[1], ARGV[2], tonumber(ARGV[4])
  local ids = redis.call('ZRANGE', KEYS[1], 0, limit - 1)
  if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
  local removed = 0
  local hooked = redis.call('HEXISTS', ENDPOINT_WEBHOOKS, ep) == 1  -- the endpoint's webhook
  for _, id in ipairs(ids) do
    local jobkey = K_job(id)
    local f = redis.call('HMGET', jobkey, 'status', 'retention_ms', 'webhook')
    if f[1] == 'IN_QUEUE' then
      redis.call('HSET', jobkey, 'status', 'CANCELLED', 'error', ARGV[3], 'finished_at', now)
      redis.call('PEXPIRE', jobkey, f[2])
      -- chunks go when a job is queued again; one an older podq requeued may still have some
      redis.call('PEXPIRE', K_chunks(id), f[2])
      if f[3] or hooked then redis.call('RPUSH', WEBHOOKS, id) end
      removed = removed + 1
    end
  end
  if removed > 0 then redis.call('HINCRBY', K_stats(ep), 'cancelled', removed) end
  if #ids < limit and removed + tonumber(ARGV[5]) > 0 then
    redis.call('PUBLISH', K_done(ep), PURGED)
  end
  return {removed, #ids}
end)
