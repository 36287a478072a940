-- A worker extends the leases of the jobs it runs.
-- KEYS[1] leases zset
-- ARGV: deadline ms, then id/attempt pairs
-- Returns the ids whose lease this worker no longer holds (cancelled, reaped, or re-taken).
register('renew', function(KEYS, ARGV)
  local lost, kept = {}, {}
  for i = 2, #ARGV, 2 do
    local id = ARGV[i]
    local f = redis.call('HMGET', K_job(id), 'status', 'attempt')
    if f[1] == 'IN_PROGRESS' and f[2] == ARGV[i + 1] then
      kept[#kept + 1] = ARGV[1]
      kept[#kept + 1] = id
    else
      table.insert(lost, id)
    end
  end
  bulk('ZADD', KEYS[1], 'XX', kept)
  return lost
end)
