-- Histograms for /metrics, counted by the operations that make the moves (no extra round
-- trip): serverless/functions.py puts this after the key and bucket header
-- (keys.lua_header(), metrics_store.lua_header()) and before _lib.lua. A histogram is a hash:
-- one field per bucket, named by its Prometheus `le` text and NOT cumulative (the reader
-- adds them up), plus `sum_ms`; a field prefix ('completed:') splits it by a label.
-- serverless/metrics_store.py reads them; its `bucket()` is this file's bucket_of().

-- The `le` of the bucket `ms` falls in: bounds (ms, ascending) and les are the header's
-- DELAY_MS / DELAY_LE or EXEC_MS / EXEC_LE.
local function bucket_of(bounds, les, ms)
  for i = 1, #bounds do
    if ms <= bounds[i] then return les[i] end
  end
  return '+Inf'
end

-- One observation, written at once (two HINCRBYs).
local function observe(key, prefix, bounds, les, ms)
  ms = math.max(0, ms)
  redis.call('HINCRBY', key, prefix .. bucket_of(bounds, les, ms), '1')
  redis.call('HINCRBY', key, prefix .. 'sum_ms', string.format('%d', ms))
end

-- Observations gathered in a table (field -> increment) and written by tally_write, one
-- HINCRBY per bucket used: a take of many jobs costs a few calls, not two per job.
local function tally(into, bounds, les, ms)
  ms = math.max(0, ms)
  local le = bucket_of(bounds, les, ms)
  into[le] = (into[le] or 0) + 1
  into.sum_ms = (into.sum_ms or 0) + ms
end

local function tally_write(key, into)
  for field, n in pairs(into) do
    redis.call('HINCRBY', key, field, string.format('%d', n))
  end
end
