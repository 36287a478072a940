-- A new job: its record, its queue entry, and the doorbell when the queue was empty (a worker
-- woken for the first queued job takes every queued job it has slots for, and rings again for
-- the ones it leaves: take.lua; ringing for each job woke an idle worker per job).
-- KEYS[1] job hash
-- ARGV: endpoint, id, score, fresh ('1': the id was just generated, a uuid4 no job can have,
--       so it is not looked up), then field/value pairs of the new record
-- Returns 1, or 0 when a job with this id already exists (its record is left alone).
register('submit', function(KEYS, ARGV)
  local ep, id = ARGV[1], ARGV[2]
  if ARGV[4] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
  redis.call('HSET', KEYS[1], unpack(ARGV, 5))
  redis.call('ZADD', K_queue(ep), ARGV[3], id)
  redis.call('SADD', ENDPOINTS, ep)
  redis.call('HINCRBY', K_stats(ep), 'submitted', '1')
  -- the console's recent jobs (serverless/console/jobs.py): the newest RECENT_CAP per endpoint
  redis.call('ZADD', K_recent(ep), ARGV[3] % 10000000000000, id)
  redis.call('ZREMRANGEBYRANK', K_recent(ep), 0, -(RECENT_CAP + 1))
  if redis.call('ZCARD', K_queue(ep)) == 1 then ring(ep) end
  return 1
end)
