-- RunPod's GET /stream: the chunks not yet returned by an earlier call, with the status.
-- The cursor lives in the job record, so any gateway replica continues where another stopped.
-- KEYS[1] job hash, KEYS[2] chunk stream
-- ARGV: max count
-- Returns {status, {entries}} | {'missing'}
register('drain', function(KEYS, ARGV)
  local f = redis.call('HMGET', KEYS[1], 'status', 'cursor')
  if not f[1] then return {'missing'} end
  local entries = redis.call('XRANGE', KEYS[2], '(' .. (f[2] or '0-0'), '+', 'COUNT', ARGV[1])
  if #entries > 0 then redis.call('HSET', KEYS[1], 'cursor', entries[#entries][1]) end
  return {f[1], entries}
end)
