-- A RunPod-protocol worker's ping: extend the leases of the jobs it lists that it still holds.
-- KEYS[1] leases zset, KEYS[2] the worker's job-stop list
-- ARGV: deadline ms, worker id, then the job ids it lists
-- Returns the listed ids it runs although they ended CANCELLED or TIMED_OUT: its SDK cannot
-- stop them (sync handlers, SDK < 1.10), or the stop came while the job still sat in the SDK's
-- local queue (the SDK then drops it). They go on its job-stop list again, once per ping (not
-- on every job-stop poll, which would make the SDK spin); past a grace the scaler recycles it.
register('ping', function(KEYS, ARGV)
  local stuck = {}
  for i = 3, #ARGV do
    local id = ARGV[i]
    local f = redis.call('HMGET', K_job(id), 'status', 'worker_id')
    if f[2] == ARGV[2] then
      if f[1] == 'IN_PROGRESS' then
        redis.call('ZADD', KEYS[1], 'XX', ARGV[1], id)
      elseif f[1] == 'CANCELLED' or f[1] == 'TIMED_OUT' then
        table.insert(stuck, id)
        redis.call('RPUSH', KEYS[2], id)
        redis.call('LTRIM', KEYS[2], -1000, -1)
        redis.call('PEXPIRE', KEYS[2], '600000')
      end
    end
  end
  return stuck
end)
