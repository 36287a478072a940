-- A worker takes up to `count` of the oldest queued jobs of an endpoint (one per free slot):
-- queue -> leases, attempt + 1. Jobs whose ttl passed while queued end TIMED_OUT on the way
-- (up to 64 per call, besides the jobs taken).
-- KEYS[1] queue zset, KEYS[2] leases zset; for a RunPod-protocol worker also KEYS[3] the
-- endpoint's deadlines zset and KEYS[4] the worker's held set
-- ARGV: endpoint, now, lease ms, worker id, ttl error format (%d = ttl ms), count, and for a
--       RunPod-protocol worker the endpoint's executionTimeout ms (podq enforces it: the SDK
--       never does), used when the job has none of its own
-- Returns a list of {id, attempt, input, execution_timeout_ms, webhook, s3_config}, oldest first.
local ep, now, lease, worker = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local count = tonumber(ARGV[6])
local remote = KEYS[3] ~= nil
local taken, skipped = {}, 0
while #taken < count and skipped < 64 do
  local popped = redis.call('ZPOPMIN', KEYS[1])
  if #popped == 0 then
    -- the queue is empty: rings left on the doorbell would only wake workers to find nothing
    -- (each submit rings again)
    redis.call('DEL', K_bell(ep))
    break
  end
  local id = popped[1]
  local jobkey = K_job(id)
  local f = redis.call('HMGET', jobkey, 'status', 'submitted_at', 'ttl_ms')
  if f[1] == 'IN_QUEUE' and not (f[3] and tonumber(f[2]) + tonumber(f[3]) <= now) then
    local attempt = redis.call('HINCRBY', jobkey, 'attempt', 1)
    redis.call('HINCRBY', jobkey, 'tries', 1)
    redis.call('HSET', jobkey, 'status', 'IN_PROGRESS', 'started_at', now, 'worker_id', worker)
    redis.call('HDEL', jobkey, 'output', 'error')
    redis.call('ZADD', KEYS[2], now + lease, id)
    local p = redis.call('HMGET', jobkey, 'input', 'execution_timeout_ms', 'webhook', 's3_config')
    if remote then
      local deadline = now + tonumber(p[2] or ARGV[7])
      redis.call('HSET', jobkey, 'remote', 1, 'deadline', deadline)
      redis.call('ZADD', KEYS[3], deadline, id)
      redis.call('SADD', KEYS[4], id)
      redis.call('PEXPIRE', KEYS[4], 86400000)
    end
    taken[#taken + 1] = {id, attempt, p[1], p[2] or '', p[3] or '', p[4] or ''}
  else
    if f[1] == 'IN_QUEUE' then  -- its ttl ran out while it waited
      redis.call('HSET', jobkey, 'error', string.format(ARGV[5], tonumber(f[3])))
      move(ep, id, jobkey, 'IN_QUEUE', 'TIMED_OUT', now, true)
    end
    -- anything else is a stale entry (record expired or moved): dropped
    skipped = skipped + 1
  end
end
return taken
