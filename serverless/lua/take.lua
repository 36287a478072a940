-- A worker takes up to `count` of the oldest queued jobs of an endpoint (one per free slot):
-- queue -> leases, attempt + 1 (_lib.lua lease). Jobs whose ttl passed while queued end
-- TIMED_OUT on the way (up to about 64 per call, besides the jobs taken).
-- KEYS[1] queue zset, KEYS[2] leases zset; for a RunPod-protocol worker also KEYS[3] the
-- endpoint's deadlines zset and KEYS[4] the worker's held set
-- ARGV: endpoint, now, lease deadline (now + lease ms), worker id, ttl error format (%d = ttl
--       ms), count, the endpoint's executionTimeout ms for a RunPod-protocol worker (podq
--       enforces it: the SDK never does; used when the job has none of its own) else '';
--       for a podq worker that waits on its inbox (worker/runtime.py) also its lease ms and
--       its current idle registration ('' when it has none)
-- Times and counts go to Redis as strings: Redis formats a Lua number with printf("%.17g").
-- Returns a list of {id, attempt, input, execution_timeout_ms, webhook, s3_config}, oldest
-- first. For a podq worker that waits on its inbox: first the jobs handed to it meanwhile
-- (its inbox, emptied), and one more element at the end: its new idle registration when it
-- has slots left after this take, else ''. A registered worker is where submits hand new jobs.

-- its ttl ran out while it waited, or it is a stale entry (record expired or moved): dropped
local function skip(ep, id, jobkey, f, ARGV)
  if f[1] ~= 'IN_QUEUE' then return end
  move(ep, id, jobkey, job_read(jobkey), 'TIMED_OUT', ARGV[2], true,
       {'error', string.format(ARGV[5], tonumber(f[3]))})
end

register('take', function(KEYS, ARGV)
  local ep, now, worker = ARGV[1], tonumber(ARGV[2]), ARGV[4]
  local count = tonumber(ARGV[6])
  -- for a RunPod-protocol worker: deadline/id pairs for the deadlines zset, ids for its held set
  local remote = KEYS[3] ~= nil and {deadlines = {}, ids = {}} or nil
  local lease_ms = ARGV[8]  -- a podq worker that waits on its inbox
  local taken, skipped, leases, delays = {}, 0, {}, {}
  if lease_ms then
    if ARGV[9] ~= '' then redis.call('LREM', K_idle(ep), 1, ARGV[9]) end
    local inbox = K_inbox(ep) .. ':' .. worker
    local items = redis.call('LRANGE', inbox, 0, -1)
    if #items > 0 then
      redis.call('DEL', inbox)
      for _, item in ipairs(items) do
        if item ~= WAKE then taken[#taken + 1] = cmsgpack.unpack(item) end
      end
    end
  end
  while #taken < count and skipped < 64 do
    local want = count - #taken
    local popped = redis.call('ZPOPMIN', KEYS[1], want)
    for i = 1, #popped, 2 do
      local id = popped[i]
      local jobkey = K_job(id)
      local f = take_read(jobkey)
      if f[1] == 'IN_QUEUE' and not (f[3] and tonumber(f[2]) + tonumber(f[3]) <= now) then
        taken[#taken + 1] = lease(id, jobkey, f, now, ARGV[3], worker, remote, ARGV[7], leases,
                                  delays)
      else
        skip(ep, id, jobkey, f, ARGV)
        skipped = skipped + 1
      end
    end
    if #popped < 2 * want then break end
  end
  local registration = ''
  if lease_ms and #taken < count then
    registration = idle_entry(worker, lease_ms, count - #taken)
    redis.call('RPUSH', K_idle(ep), registration)
    redis.call('SET', idle_alive(ep, worker), '1', 'PX', IDLE_REGISTRATION_MS)
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
  if lease_ms then taken[#taken + 1] = registration end
  return taken
end)
