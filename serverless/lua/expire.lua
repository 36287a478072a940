-- Queued jobs whose ttl ran out end TIMED_OUT: take does it for the jobs it pops, and this sweep
-- (the gateway's, every EXPIRE_INTERVAL_S) for an endpoint nobody takes from, whose queued jobs
-- would otherwise stay, counted as queued, forever. The oldest `limit` entries are looked at.
-- KEYS[1] queue zset
-- ARGV: endpoint, now, ttl error format (%d = ttl ms), limit
-- Returns the number of jobs ended.
register('expire', function(KEYS, ARGV)
  local ep, now = ARGV[1], ARGV[2]
  local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1)
  local ended = 0
  for _, id in ipairs(ids) do
    local jobkey = K_job(id)
    local f = redis.call('HMGET', jobkey, 'status', 'submitted_at', 'ttl_ms')
    if f[1] ~= 'IN_QUEUE' then
      redis.call('ZREM', KEYS[1], id)  -- a stale entry: its record expired or moved on
    elseif ttl_passed(f[2], f[3], now) then
      time_out_queued(ep, id, jobkey, f[3], now, ARGV[3])
      ended = ended + 1
    end
  end
  return ended
end)
