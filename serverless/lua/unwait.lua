-- A podq worker stops waiting on its inbox (it is stopping): its idle registrations go (every
-- entry it has in the list: the list is as long as the endpoint has idle workers), and the
-- jobs handed to it meanwhile come back to it, for it to queue again (its requeue).
-- KEYS: none (the idle list and the inbox are named by the endpoint and the worker)
-- ARGV: endpoint, worker id
-- Returns the handed jobs as take reply items.
register('unwait', function(KEYS, ARGV)
  local ep, worker = ARGV[1], ARGV[2]
  local prefix = worker .. '|'
  for _, entry in ipairs(redis.call('LRANGE', K_idle(ep), 0, -1)) do
    if string.sub(entry, 1, #prefix) == prefix then redis.call('LREM', K_idle(ep), 0, entry) end
  end
  redis.call('DEL', idle_alive(ep, worker))
  local inbox = K_inbox(ep) .. ':' .. worker
  local items = redis.call('LRANGE', inbox, 0, -1)
  redis.call('DEL', inbox)
  local handed = {}
  for _, item in ipairs(items) do
    if item ~= WAKE then handed[#handed + 1] = cmsgpack.unpack(item) end
  end
  return handed
end)
