-- One job moves from one status to another (or stays, for progress), atomically.
-- KEYS[1] job hash
-- ARGV: id, target, allowed sources (space separated), fence attempt ('' = unfenced), now,
--       n, n field/value pairs to set, then field names to delete (a field both set and
--       deleted ends up deleted)
-- Returns {'ok', from} | {'missing'} | {'refused', current} | {'stale', current}
register('transition', function(KEYS, ARGV)
  local jobkey, id, target, now = KEYS[1], ARGV[1], ARGV[2], ARGV[5]
  local job = job_read(jobkey)
  local status = job[STATUS]
  if not status then return {'missing'} end
  if not is_in(ARGV[3], status) then return {'refused', status} end
  if ARGV[4] ~= '' and job[ATTEMPT] ~= ARGV[4] then return {'stale', status} end
  local n = tonumber(ARGV[6])
  -- a fenced write is the worker's: its final result may go with the announcement
  local publish = ARGV[4] ~= '' and 'result' or true
  move(job[ENDPOINT], id, jobkey, job, target, now, publish, split_fields(jobkey, ARGV, 7, n))
  if #ARGV >= 7 + 2 * n then redis.call('HDEL', jobkey, unpack(ARGV, 7 + 2 * n)) end
  return {'ok', status}
end)
