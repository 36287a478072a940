-- Jobs whose lease ran out (their worker died or hung) go back to the queue, or end FAILED
-- when their attempts are spent; jobs of RunPod-protocol workers past their executionTimeout
-- end TIMED_OUT (their worker hears it on job-stop). Idempotent: any worker, gateway or
-- scaler may run it.
-- KEYS[1] leases zset, KEYS[2] deadlines zset
-- ARGV: endpoint, now, max attempts (for a job that does not carry its own: the submitter's
--       PODQ_MAX_ATTEMPTS, kept on the job), error format (%d = tries), limit,
--       timeout error format (%d = executionTimeout ms)
-- Returns {requeued, failed, timed_out}
register('reap', function(KEYS, ARGV)
  local ep, now, max_attempts = ARGV[1], ARGV[2], tonumber(ARGV[3])
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
  local requeued, failed = 0, 0
  for _, id in ipairs(ids) do
    local jobkey = K_job(id)
    local f = redis.call('HMGET', jobkey, 'status', 'tries', 'max_attempts')
    local limit = tonumber(f[3] or '') or 0  -- absent (an older podq's job) or unreadable: 0
    if limit < 1 then limit = max_attempts end
    if f[1] ~= 'IN_PROGRESS' then
      redis.call('ZREM', KEYS[1], id)
    elseif tonumber(f[2] or '0') < limit then
      local job = job_read(jobkey)
      clear_attempt(jobkey)
      move(ep, id, jobkey, job, 'IN_QUEUE', now, true)
      redis.call('HINCRBY', K_stats(ep), 'retried', '1')
      requeued = requeued + 1
    else
      move(ep, id, jobkey, job_read(jobkey), 'FAILED', now, true,
           {'error', string.format(ARGV[4], tonumber(f[2]))})
      failed = failed + 1
    end
  end
  local timed_out = 0
  ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
  for _, id in ipairs(ids) do
    local jobkey = K_job(id)
    local f = redis.call('HMGET', jobkey, 'status', 'deadline', 'started_at')
    if f[1] == 'IN_PROGRESS' and f[2] and tonumber(f[2]) <= tonumber(now) then
      local limit = tonumber(f[2]) - tonumber(f[3] or f[2])
      move(ep, id, jobkey, job_read(jobkey), 'TIMED_OUT', now, true,
           {'error', string.format(ARGV[6], limit)})
      timed_out = timed_out + 1
    else
      redis.call('ZREM', KEYS[2], id)
    end
  end
  return {requeued, failed, timed_out}
end)
