-- Shared by every script (prepended by serverless/scripts.py after the generated key header).
-- A status owns an index: IN_QUEUE <-> the endpoint's queue zset, IN_PROGRESS <-> its leases
-- zset; terminal statuses count in stats, start the retention clock, ring the done channel and
-- queue the job's webhook (a durable list any gateway replica pops, so none is lost or doubled).
-- Which moves are legal is decided in serverless/lifecycle.py and passed in by the caller.

local function is_in(list, status)
  return string.find(' ' .. list .. ' ', ' ' .. status .. ' ', 1, true) ~= nil
end

local function is_terminal(status)
  return status ~= 'IN_QUEUE' and status ~= 'IN_PROGRESS'
end

local function leave(ep, id, status)
  if status == 'IN_QUEUE' then
    redis.call('ZREM', K_queue(ep), id)
  elseif status == 'IN_PROGRESS' then
    redis.call('ZREM', K_leases(ep), id)
    redis.call('ZREM', K_deadlines(ep), id)
  end
end

local function ring(ep)
  redis.call('LPUSH', K_bell(ep), 1)
  redis.call('LTRIM', K_bell(ep), 0, BELL_CAP - 1)
end

-- publish: false when the caller announces a bulk change itself (purge)
local function enter(ep, id, jobkey, from, status, now, publish)
  if status == 'IN_QUEUE' then
    local score = redis.call('HGET', jobkey, 'score')
    redis.call('ZADD', K_queue(ep), score, id)
    redis.call('PERSIST', jobkey)
    if is_terminal(from) then redis.call('DEL', K_chunks(id)) end
    ring(ep)
  elseif is_terminal(status) then
    redis.call('HSET', jobkey, 'finished_at', now)
    redis.call('HINCRBY', K_stats(ep), string.lower(status), 1)
    local keep = redis.call('HGET', jobkey, 'retention_ms')
    redis.call('PEXPIRE', jobkey, keep)
    redis.call('PEXPIRE', K_chunks(id), keep)
    if publish then redis.call('PUBLISH', K_done(ep), id) end
    if redis.call('HEXISTS', jobkey, 'webhook') == 1 then redis.call('RPUSH', WEBHOOKS, id) end
    if from == 'IN_PROGRESS' and status == 'CANCELLED' then
      redis.call('PUBLISH', K_cancel(ep), id)
    end
    if from == 'IN_PROGRESS' then
      local w = redis.call('HMGET', jobkey, 'remote', 'worker_id')
      if w[1] == '1' and w[2] then  -- run by a RunPod-protocol worker
        redis.call('SREM', K_held(ep) .. ':' .. w[2], id)
        if status == 'CANCELLED' or status == 'TIMED_OUT' then
          -- it learns it on its job-stop long-poll (each id once)
          local stops = K_stops(ep) .. ':' .. w[2]
          redis.call('RPUSH', stops, id)
          redis.call('PEXPIRE', stops, 600000)
        end
      end
    end
  end
end

local function move(ep, id, jobkey, from, to, now, publish)
  if from == to then return end
  leave(ep, id, from)
  redis.call('HSET', jobkey, 'status', to)
  enter(ep, id, jobkey, from, to, now, publish)
end

-- Fields only a running attempt has; cleared when the job goes back to the queue.
local function clear_attempt(jobkey)
  redis.call('HDEL', jobkey, 'output', 'started_at', 'worker_id', 'remote', 'deadline')
end

-- HSET pairs; a field written '+name' is incremented by the value instead.
local function apply_fields(jobkey, args, first, count)
  for i = first, first + 2 * count - 1, 2 do
    local field = args[i]
    if string.sub(field, 1, 1) == '+' then
      redis.call('HINCRBY', jobkey, string.sub(field, 2), args[i + 1])
    else
      redis.call('HSET', jobkey, field, args[i + 1])
    end
  end
end
