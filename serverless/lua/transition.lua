-- One job moves from one status to another (or stays, for progress), atomically.
-- KEYS[1] job hash
-- ARGV: id, target, allowed sources (space separated), fence attempt ('' = unfenced), now,
--       n, n field/value pairs to set, then field names to delete
-- Returns {'ok', from} | {'missing'} | {'refused', current} | {'stale', current}
local jobkey, id, target, now = KEYS[1], ARGV[1], ARGV[2], ARGV[5]
local cur = redis.call('HMGET', jobkey, 'status', 'attempt', 'endpoint')
if not cur[1] then return {'missing'} end
if not is_in(ARGV[3], cur[1]) then return {'refused', cur[1]} end
if ARGV[4] ~= '' and cur[2] ~= ARGV[4] then return {'stale', cur[1]} end
local n = tonumber(ARGV[6])
apply_fields(jobkey, ARGV, 7, n)
for i = 7 + 2 * n, #ARGV do redis.call('HDEL', jobkey, ARGV[i]) end
move(cur[3], id, jobkey, cur[1], target, now, true)
return {'ok', cur[1]}
