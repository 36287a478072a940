-- A new job: its record, then either straight to an idle worker (hand_off: leased to it and in
-- its inbox, no take needed) or into the queue, with the doorbell rung when the queue was empty
-- (a worker woken for the first queued job takes every queued job it has slots for, and rings
-- again for the ones it leaves: take.lua; ringing for each job woke an idle worker per job).
-- An idle worker registers only when it found the queue empty, and submits hand off while one
-- is registered, so handing a job over never overtakes a queued one.
-- KEYS[1] job hash
-- ARGV: endpoint, id, score, fresh ('1': the id was just generated, a uuid4 no job can have,
--       so it is not looked up), now, then field/value pairs of the new record
-- Returns 1, or 0 when a job with this id already exists (its record is left alone).
register('submit', function(KEYS, ARGV)
  local ep, id = ARGV[1], ARGV[2]
  if ARGV[4] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
  redis.call('HSET', KEYS[1], unpack(ARGV, 6))
  redis.call('SADD', ENDPOINTS, ep)
  redis.call('HINCRBY', K_stats(ep), 'submitted', '1')
  -- the console's recent jobs (serverless/console/jobs.py): the newest RECENT_CAP per endpoint
  redis.call('ZADD', K_recent(ep), ARGV[3] % 10000000000000, id)
  redis.call('ZREMRANGEBYRANK', K_recent(ep), 0, -(RECENT_CAP + 1))
  if hand_off(ep, id, KEYS[1], tonumber(ARGV[5])) then return 1 end
  redis.call('ZADD', K_queue(ep), ARGV[3], id)
  if redis.call('ZCARD', K_queue(ep)) == 1 then ring(ep) end
  return 1
end)
