-- KEYS[1] job hash
-- ARGV: endpoint, id, score, then field/value pairs of the new record
-- Returns 1, or 0 when a job with this id already exists (its record is left alone).
local ep, id = ARGV[1], ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
apply_fields(KEYS[1], ARGV, 4, (#ARGV - 3) / 2)
redis.call('ZADD', K_queue(ep), ARGV[3], id)
redis.call('SADD', ENDPOINTS, ep)
ring(ep)
return 1
