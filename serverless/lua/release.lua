-- A RunPod-protocol worker said it holds no job (a take with job_in_progress=0): every job
-- podq handed it that is still IN_PROGRESS under it was lost on the way (a take answer it never
-- read, a restart) and goes back to the queue at once, without counting as a try.
-- KEYS[1] the worker's held set
-- ARGV: endpoint, worker id, now
-- Returns the number of jobs requeued.
register('release', function(KEYS, ARGV)
  local ep, worker, now = ARGV[1], ARGV[2], ARGV[3]
  local requeued = 0
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local jobkey = K_job(id)
    local job = job_read(jobkey)
    if job[STATUS] == 'IN_PROGRESS' and job[WORKER] == worker then
      clear_attempt(jobkey)
      redis.call('HINCRBY', jobkey, 'tries', '-1')
      move(ep, id, jobkey, job, 'IN_QUEUE', now, true)
      requeued = requeued + 1
    end
  end
  redis.call('DEL', KEYS[1])
  return requeued
end)
