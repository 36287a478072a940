-- purge-queue: every queued job of an endpoint ends CANCELLED; running jobs are untouched.
-- KEYS[1] queue zset
-- ARGV: endpoint, now, error message
-- Returns the number of jobs removed.
local ep, now = ARGV[1], ARGV[2]
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
local removed = 0
for _, id in ipairs(ids) do
  local jobkey = K_job(id)
  if redis.call('HGET', jobkey, 'status') == 'IN_QUEUE' then
    redis.call('HSET', jobkey, 'status', 'CANCELLED', 'error', ARGV[3])
    enter(ep, id, jobkey, 'IN_QUEUE', 'CANCELLED', now, false)
    removed = removed + 1
  end
end
if removed > 0 then redis.call('PUBLISH', K_done(ep), PURGED) end
return removed
