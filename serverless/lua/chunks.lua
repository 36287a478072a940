-- Append stream chunks for a running job, fenced by its attempt.
-- KEYS[1] job hash, KEYS[2] chunk stream
-- ARGV: attempt, maxlen, chunk...
-- Returns {'ok', last entry id} | {'stale', status} | {'missing'}
register('chunks', function(KEYS, ARGV)
  local f = redis.call('HMGET', KEYS[1], 'status', 'attempt')
  if not f[1] then return {'missing'} end
  if f[1] ~= 'IN_PROGRESS' or f[2] ~= ARGV[1] then return {'stale', f[1]} end
  local last = ''
  for i = 3, #ARGV do
    last = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[i])
  end
  return {'ok', last}
end)
