-- A worker takes the oldest queued job of an endpoint: queue -> leases, attempt + 1.
-- Jobs whose ttl passed while queued end TIMED_OUT on the way (up to 64 per call).
-- KEYS[1] queue zset, KEYS[2] leases zset
-- ARGV: endpoint, now, lease ms, worker id, ttl error format (%d = ttl ms)
-- Returns {id, attempt, input, execution_timeout_ms, webhook, s3_config} or false.
local ep, now, lease, worker = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
for _ = 1, 64 do
  local popped = redis.call('ZPOPMIN', KEYS[1])
  if #popped == 0 then return false end
  local id = popped[1]
  local jobkey = K_job(id)
  local f = redis.call('HMGET', jobkey, 'status', 'submitted_at', 'ttl_ms')
  if f[1] == 'IN_QUEUE' then
    if f[3] and tonumber(f[2]) + tonumber(f[3]) <= now then
      redis.call('HSET', jobkey, 'error', string.format(ARGV[5], tonumber(f[3])))
      move(ep, id, jobkey, 'IN_QUEUE', 'TIMED_OUT', now, true)
    else
      local attempt = redis.call('HINCRBY', jobkey, 'attempt', 1)
      redis.call('HINCRBY', jobkey, 'tries', 1)
      redis.call('HSET', jobkey, 'status', 'IN_PROGRESS', 'started_at', now, 'worker_id', worker)
      redis.call('HDEL', jobkey, 'output', 'error')
      redis.call('ZADD', KEYS[2], now + lease, id)
      local p = redis.call('HMGET', jobkey, 'input', 'execution_timeout_ms', 'webhook', 's3_config')
      return {id, attempt, p[1], p[2] or '', p[3] or '', p[4] or ''}
    end
  end
  -- anything else is a stale entry (record expired or moved): dropped
end
return false
