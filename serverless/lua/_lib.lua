-- Shared by every operation: serverless/functions.py puts this after the generated key header
-- (keys.lua_header()) and before the operations, in one Redis function library, so it is
-- compiled once when the library loads, not on every call.
-- A status owns an index: IN_QUEUE <-> the endpoint's queue zset, IN_PROGRESS <-> its leases
-- zset; terminal statuses count in stats, start the retention clock, ring the done channel and
-- queue the job's webhook (a durable list any gateway replica pops, so none is lost or doubled).
-- Which moves are legal is decided in serverless/lifecycle.py and passed in by the caller.
-- Every redis.call costs Redis about as much as the command itself (arguments and reply cross
-- into Lua), so fields are read with one HMGET and written with one HSET where possible.

local function register(name, fn)
  redis.register_function(PREFIX .. name, fn)
end

local function is_in(list, status)
  return list == status or string.find(' ' .. list .. ' ', ' ' .. status .. ' ', 1, true) ~= nil
end

-- redis.call(cmd, key, [flag,] items...) in slices: unpack() yields at most a few thousand
-- values (Lua's C stack). `items` of pairs (ZADD) stay whole: SLICE is even.
local SLICE = 1000
local function bulk(cmd, key, flag, items)
  for i = 1, #items, SLICE do
    local last = math.min(i + SLICE - 1, #items)
    if flag then
      redis.call(cmd, key, flag, unpack(items, i, last))
    else
      redis.call(cmd, key, unpack(items, i, last))
    end
  end
end

local function is_terminal(status)
  return status ~= 'IN_QUEUE' and status ~= 'IN_PROGRESS'
end

-- The fields a move needs, read with one HMGET; job_read's reply is indexed by these names
-- (HMGET's own reply table: copying it into a keyed table would cost more Lua work per call).
local STATUS, ATTEMPT, ENDPOINT, RETENTION, WEBHOOK, REMOTE, WORKER, STARTED = 1, 2, 3, 4, 5, 6, 7, 8

local function job_read(jobkey)
  return redis.call('HMGET', jobkey, 'status', 'attempt', 'endpoint', 'retention_ms', 'webhook',
                    'remote', 'worker_id', 'started_at')
end

-- The job (job_read's reply) leaves the index of its status: the queue, or its lease, and for a
-- RunPod-protocol worker's job (`remote`: the only kind with a deadlines entry) its deadline and
-- its place in the worker's held set.
local function leave(ep, id, job)
  local status = job[STATUS]
  if status == 'IN_QUEUE' then
    redis.call('ZREM', K_queue(ep), id)
  elseif status == 'IN_PROGRESS' then
    redis.call('ZREM', K_leases(ep), id)
    if job[REMOTE] then
      redis.call('ZREM', K_deadlines(ep), id)
      -- no longer held by its RunPod worker, whatever comes next (an end, or the queue again)
      if job[WORKER] then redis.call('SREM', K_held(ep) .. ':' .. job[WORKER], id) end
    end
  end
end

local function ring(ep)
  -- LPUSH answers the new length: trim only when the bell grew past its cap
  if redis.call('LPUSH', K_bell(ep), '1') > BELL_CAP then
    redis.call('LTRIM', K_bell(ep), 0, BELL_CAP - 1)
  end
end

-- The stats counter of each terminal status.
local COUNTER = {COMPLETED = 'completed', FAILED = 'failed', CANCELLED = 'cancelled',
                 TIMED_OUT = 'timed_out'}

-- What the done channel says about a job that ended: its id; for a /runsync job ('sync-' id)
-- whose worker wrote its result, the result too, so the waiting gateway answers without
-- reading the job back (serverless/notify.py parses it):
--   id \n status \n started_at \n finished_at \n worker_id \n ('o' output | 'e' error | '-')
-- sets[first..last]: the fields the move writes. A result over INLINE_MAX bytes, or a move that
-- writes both output and error, announces the id only (the waiter reads the job).
local INLINE_MAX = 65536

local function announcement(id, job, status, now, sets, first, last)
  if string.sub(id, 1, 5) ~= 'sync-' then return id end
  local kind, body = '-', ''
  for i = first, last, 2 do
    local field = sets[i]
    if field == 'output' or field == 'error' then
      if kind ~= '-' then return id end
      kind, body = (field == 'output') and 'o' or 'e', sets[i + 1]
    end
  end
  if #body > INLINE_MAX then return id end
  return id .. '\n' .. status .. '\n' .. (job[STARTED] or '') .. '\n' .. now .. '\n' ..
         (job[WORKER] or '') .. '\n' .. kind .. body
end

-- A job reached a terminal status (already written): count it, start its retention clock and
-- announce it. job: job_read()'s reply, read before the move.
-- message: what to publish on the done channel (the id, or announcement()), false when the
-- caller announces a bulk change itself (purge)
local function ended(ep, id, jobkey, job, status, message)
  redis.call('HINCRBY', K_stats(ep), COUNTER[status], '1')
  redis.call('PEXPIRE', jobkey, job[RETENTION])
  redis.call('PEXPIRE', K_chunks(id), job[RETENTION])
  if message then redis.call('PUBLISH', K_done(ep), message) end
  -- its own webhook, or its endpoint's (registry.py keeps ENDPOINT_WEBHOOKS)
  if job[WEBHOOK] or redis.call('HEXISTS', ENDPOINT_WEBHOOKS, ep) == 1 then
    redis.call('RPUSH', WEBHOOKS, id)
  end
  if job[STATUS] ~= 'IN_PROGRESS' then return end
  if status == 'CANCELLED' then redis.call('PUBLISH', K_cancel(ep), id) end
  local worker = job[WORKER]
  if job[REMOTE] == '1' and worker then  -- run by a RunPod-protocol worker (leave() unheld it)
    if status == 'CANCELLED' or status == 'TIMED_OUT' then
      -- it learns it on its job-stop long-poll (each id once)
      local stops = K_stops(ep) .. ':' .. worker
      redis.call('RPUSH', stops, id)
      redis.call('PEXPIRE', stops, '600000')
    end
  end
end

-- The job entered the queue (status already written): from a terminal status (/retry), or from
-- a running attempt that was lost, handed back or released. Chunks an earlier attempt streamed
-- go (the next attempt streams its own from the start; /stream and SSE would otherwise give the
-- old attempt's output followed by the new one's).
-- A job queued again from a terminal status counts as submitted once more, so
-- submitted - finished is what is queued or running.
local function queued(ep, id, jobkey, from)
  local score = redis.call('HGET', jobkey, 'score')
  redis.call('ZADD', K_queue(ep), score, id)
  redis.call('PERSIST', jobkey)
  redis.call('DEL', K_chunks(id))
  if is_terminal(from) then
    redis.call('HINCRBY', K_stats(ep), 'submitted', '1')
  end
  ring(ep)
end

local NO_FIELDS = {}

-- Move a job from job[STATUS] to `to`. sets[first..last]: more field/value pairs for the same
-- HSET as the status (and finished_at, for a terminal status); sets may be nil.
-- publish: false (the caller announces it), true (announce the id), or 'result' (a worker's
-- fenced final write: a /runsync job's result goes with the announcement)
local function move(ep, id, jobkey, job, to, now, publish, sets, first, last)
  local from = job[STATUS]
  if not sets then sets, first, last = NO_FIELDS, 1, 0 end
  first, last = first or 1, last or #sets
  if from == to then
    if last >= first then redis.call('HSET', jobkey, unpack(sets, first, last)) end
    return
  end
  leave(ep, id, job)
  if is_terminal(to) then
    redis.call('HSET', jobkey, 'status', to, 'finished_at', now, unpack(sets, first, last))
    if from == 'IN_PROGRESS' and job[STARTED] then  -- it ran: its execution time (/metrics)
      observe(K_hist_exec(ep), COUNTER[to] .. ':', EXEC_MS, EXEC_LE,
              tonumber(now) - tonumber(job[STARTED]))
    end
    local message = publish and id
    if publish == 'result' then message = announcement(id, job, to, now, sets, first, last) end
    ended(ep, id, jobkey, job, to, message)
  else
    redis.call('HSET', jobkey, 'status', to, unpack(sets, first, last))
    if to == 'IN_QUEUE' then queued(ep, id, jobkey, from) end
  end
end

-- Whether a queued job's ttl has passed: submitted, ttl as HMGET read them (ttl false: none).
-- lifecycle.is_expired is the same rule for a record read in Python.
local function ttl_passed(submitted, ttl, now)
  return ttl and tonumber(submitted) + tonumber(ttl) <= tonumber(now)
end

-- A queued job whose ttl passed ends TIMED_OUT; fmt: the error's format (%d = the ttl in ms).
local function time_out_queued(ep, id, jobkey, ttl, now, fmt)
  move(ep, id, jobkey, job_read(jobkey), 'TIMED_OUT', now, true,
       {'error', string.format(fmt, tonumber(ttl))})
end

-- Fields only a running attempt has; cleared when the job goes back to the queue.
local function clear_attempt(jobkey)
  redis.call('HDEL', jobkey, 'output', 'started_at', 'worker_id', 'remote', 'deadline')
end

-- The `count` field/value pairs from args[first] as move() takes them (list, first, last):
-- args itself when all are plain; else a field written '+name' is incremented by its value
-- at once (HINCRBY) and the plain pairs are copied out.
local function split_fields(jobkey, args, first, count)
  local last = first + 2 * count - 1
  local plain = true
  for i = first, last, 2 do
    if string.byte(args[i], 1) == 43 then plain = false end  -- 43: '+'
  end
  if plain then return args, first, last end
  local sets = {}
  for i = first, last, 2 do
    local field = args[i]
    if string.byte(field, 1) == 43 then
      redis.call('HINCRBY', jobkey, string.sub(field, 2), args[i + 1])
    else
      sets[#sets + 1] = field
      sets[#sets + 1] = args[i + 1]
    end
  end
  return sets, 1, #sets
end
