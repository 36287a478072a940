-- A RunPod-protocol worker's ping: extend the leases of the jobs it lists that it still holds.
-- KEYS[1] leases zset
-- ARGV: deadline ms, worker id, then the job ids it lists
-- Returns the listed ids it runs although they ended CANCELLED or TIMED_OUT (it was told on
-- job-stop, or its SDK cannot stop them): the scaler recycles such a worker after a grace.
local stuck = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local f = redis.call('HMGET', K_job(id), 'status', 'worker_id')
  if f[2] == ARGV[2] then
    if f[1] == 'IN_PROGRESS' then
      redis.call('ZADD', KEYS[1], 'XX', ARGV[1], id)
    elseif f[1] == 'CANCELLED' or f[1] == 'TIMED_OUT' then
      table.insert(stuck, id)
    end
  end
end
return stuck
