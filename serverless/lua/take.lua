-- A worker takes up to `count` of the oldest queued jobs of an endpoint (one per free slot):
-- queue -> leases, attempt + 1. Jobs whose ttl passed while queued end TIMED_OUT on the way
-- (up to about 64 per call, besides the jobs taken).
-- KEYS[1] queue zset, KEYS[2] leases zset; for a RunPod-protocol worker also KEYS[3] the
-- endpoint's deadlines zset and KEYS[4] the worker's held set
-- ARGV: endpoint, now ('' for Redis's own clock: a take sent behind a worker's doorbell BLPOP
--       runs when a ring wakes it, up to a second after it was sent; serverless/doorbell.py),
--       lease ms, worker id, ttl error format (%d = ttl ms), count, and for a RunPod-protocol
--       worker the endpoint's executionTimeout ms (podq enforces it: the SDK never does), used
--       when the job has none of its own
-- Times and counts go to Redis as strings: Redis formats a Lua number with printf("%.17g").
-- Returns a list of {id, attempt, input, execution_timeout_ms, webhook, s3_config}, oldest first;
-- a job without an executionTimeout of its own gets its endpoint's from the registry
-- (ENDPOINT_TIMEOUTS, read at most once per call; '' for an endpoint in no registry, and the
-- worker applies its own setting), so a changed endpoint applies to the next job taken.
-- A job's first try (tries 0: submitted or retried, not requeued after a lost lease) counts its
-- wait since submission in the endpoint's delay histogram (/metrics).

-- Lease one popped job to the worker. f: its fields, as take reads them (below); delays: the
-- delay observations of this take (_metrics.lua tally)
local function lease(id, jobkey, f, now, expiry, ARGV, remote, leases, delays, endpoint_timeout)
  local worker = ARGV[4]
  if (f[5] or '0') == '0' and f[2] then
    tally(delays, DELAY_MS, DELAY_LE, tonumber(now) - tonumber(f[2]))
  end
  local attempt = string.format('%d', tonumber(f[4] or '0') + 1)
  local tries = string.format('%d', tonumber(f[5] or '0') + 1)
  if remote then
    local deadline = string.format('%d', tonumber(now) + tonumber(f[7] or ARGV[7]))
    redis.call('HSET', jobkey, 'status', 'IN_PROGRESS', 'started_at', now, 'worker_id', worker,
               'attempt', attempt, 'tries', tries, 'remote', '1', 'deadline', deadline)
    remote.deadlines[#remote.deadlines + 1] = deadline
    remote.deadlines[#remote.deadlines + 1] = id
    remote.ids[#remote.ids + 1] = id
  else
    redis.call('HSET', jobkey, 'status', 'IN_PROGRESS', 'started_at', now, 'worker_id', worker,
               'attempt', attempt, 'tries', tries)
  end
  -- a queued job has neither (retry and requeue clear them): a guard that costs no call
  if f[10] or f[11] then redis.call('HDEL', jobkey, 'output', 'error') end
  leases[#leases + 1] = expiry
  leases[#leases + 1] = id
  return {id, attempt, f[6], f[7] or (remote and '' or endpoint_timeout()), f[8] or '', f[9] or ''}
end

-- its ttl ran out while it waited, or it is a stale entry (record expired or moved): dropped
local function skip(ep, id, jobkey, f, now, ARGV)
  if f[1] == 'IN_QUEUE' then time_out_queued(ep, id, jobkey, f[3], now, ARGV[5]) end
end

register('take', function(KEYS, ARGV)
  local ep, now = ARGV[1], ARGV[2]
  if now == '' then
    local t = redis.call('TIME')
    now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  end
  local expiry = string.format('%d', tonumber(now) + tonumber(ARGV[3]))  -- the lease deadline
  local count = tonumber(ARGV[6])
  -- for a RunPod-protocol worker: deadline/id pairs for the deadlines zset, ids for its held set
  local remote = KEYS[3] ~= nil and {deadlines = {}, ids = {}} or nil
  local taken, skipped, leases, delays = {}, 0, {}, {}
  local timeout
  local function endpoint_timeout()
    if timeout == nil then timeout = redis.call('HGET', ENDPOINT_TIMEOUTS, ep) or '' end
    return timeout
  end
  while #taken < count and skipped < 64 do
    local want = count - #taken
    local popped = redis.call('ZPOPMIN', KEYS[1], want)
    for i = 1, #popped, 2 do
      local id = popped[i]
      local jobkey = K_job(id)
      local f = redis.call('HMGET', jobkey, 'status', 'submitted_at', 'ttl_ms', 'attempt', 'tries',
                           'input', 'execution_timeout_ms', 'webhook', 's3_config', 'output',
                           'error')
      if f[1] == 'IN_QUEUE' and not ttl_passed(f[2], f[3], now) then
        taken[#taken + 1] = lease(id, jobkey, f, now, expiry, ARGV, remote, leases, delays,
                                  endpoint_timeout)
      else
        skip(ep, id, jobkey, f, now, ARGV)
        skipped = skipped + 1
      end
    end
    if #popped < 2 * want then break end
  end
  -- submits ring only when the queue was empty, so whoever takes rings for what it leaves (the
  -- next idle worker takes the rest); an empty queue silences the bell (a ring left there would
  -- only wake a worker to find nothing)
  if redis.call('EXISTS', KEYS[1]) == 1 then ring(ep) else redis.call('DEL', K_bell(ep)) end
  bulk('ZADD', KEYS[2], nil, leases)
  tally_write(K_hist_delay(ep), delays)
  if remote and #remote.ids > 0 then
    bulk('ZADD', KEYS[3], nil, remote.deadlines)
    bulk('SADD', KEYS[4], nil, remote.ids)
    redis.call('PEXPIRE', KEYS[4], '86400000')
  end
  return taken
end)
