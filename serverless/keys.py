"""Every Redis key and channel name podq uses, spelled once (as arq's constants.py does).

Per job:      podq:job:{id}            HASH  the JobRecord fields
              podq:chunks:{id}         STREAM  stream chunks, entry field `d`
Per endpoint: podq:ep:{ep}:queue       ZSET  queued job ids, score = submit ms (+offset if lowPriority)
              podq:ep:{ep}:leases      ZSET  running job ids, score = lease deadline ms
              podq:ep:{ep}:stats       HASH  submitted (submit.lua; a /retry queues the job again and
                                       counts too), completed / failed / cancelled / timed_out
                                       (_lib.lua ended(), purge.lua), retried (reap.lua)
              podq:ep:{ep}:bell        LIST  doorbell: one entry per submit, BLPOP'ed by idle workers
              podq:ep:{ep}:workers     HASH  worker id -> WorkerBeat
              podq:ep:{ep}:done        channel: job ids as they reach a terminal status
              podq:ep:{ep}:cancel      channel: running job ids that were cancelled
              podq:ep:{ep}:deadlines   ZSET  jobs run by RunPod-protocol workers, score =
                                             executionTimeout deadline ms (podq enforces it)
              podq:ep:{ep}:held:{w}    SET   jobs handed to RunPod-protocol worker w (a take
                                             with job_in_progress=0 requeues those it still has)
              podq:ep:{ep}:stops:{w}   LIST  cancelled / timed-out job ids for worker w's job-stop
              podq:ep:{ep}:wake:{w}    LIST  pushed when worker w stops while it waits on the
                                             doorbell: its BLPOP watches the bell and this list
                                             (serverless/doorbell.py); PEXPIRE 60 s
              podq:ep:{ep}:logs        STREAM  worker log lines (worker/log_shipper.py): fields ts,
                                       worker, job, stream, level, line; MAXLEN ~ PODQ_LOG_STREAM_MAXLEN.
                                       Lines a worker had to drop are counted in the stats hash,
                                       field `log_lines_dropped` (LOG_LINES_DROPPED)
              podq:ep:{ep}:recent      ZSET  the console's recent jobs: job id -> submit score, the
                                       newest RECENT_CAP kept (submit.lua)
              podq:ep:{ep}:hist:delay  HASH  delay histogram (take.lua, a job's first try only):
                                       field = bucket `le` text (NOT cumulative), + sum_ms
              podq:ep:{ep}:hist:exec   HASH  execution histogram of jobs that ended while running
                                       (_lib.lua move()): `<status>:<le>`, `<status>:sum_ms`
              podq:ep:{ep}:scaler      HASH  the scaler leader's counters `cold:<backend>:<outcome>`,
                                       `decision:<action>`, and the gauge `desired` (ScalerTally)
              podq:ep:{ep}:hist:cold   HASH  cold-start histogram: `<backend>:<le>`, `<backend>:sum_ms`
                                       (metrics_store.py: the figures /metrics reports; its buckets are
                                       fixed, in whole ms)
Per batch:    podq:batch:{id}          HASH  `meta` (the Meta JSON, written once), the round's state
                                       and cursor, `written`, counters per result status, `rate`
              podq:batch:{id}:inflight SET   indices submitted as jobs, not yet collected
              podq:batch:{id}:ready    HASH  index -> result line, finished but not yet in a results part
              podq:batch:{id}:lease    STRING which gateway replica runs the batch (SET NX PX, renewed)
Rate limits:  podq:rate:{kind}:{subject}:{route} STRING one rate limit bucket (gateway/limits.py;
                                       its PTTL is the debt): kind ep | key, subject endpoint id | key
                                       digest, then the route; `podq:` like every key, so the ACL of
                                       docs/security.md covers it
Console:      podq:console:history:{ep} LIST  JSON [minute_ms, queued, in_progress, workers, finished]
                                       per minute (RPUSH + LTRIM to console/history.py's POINTS)
              podq:console:history-claim:{minute_ms} STRING the replica that wrote that minute
                                       (SET NX, EX 1 h)
              podq:console:secret      STRING the HMAC secret console sessions are signed with (SET NX
                                       by the first replica that needs it); deleting it signs every session
                                       out at once
              podq:console:signed-out:{nonce} STRING a signed-out session's nonce, until its token
                                       would have expired
Global:       podq:endpoints           SET   endpoint ids that ever got a job (for the reaper)
              podq:webhooks            LIST  ids of finished jobs with a webhook still to deliver
              podq:registry:endpoints  HASH  endpoint id -> EndpointConfig (JSON)
              podq:registry:templates  HASH  template id -> Template (JSON)
              podq:registry:status     HASH  endpoint id -> "status|reason" (the scaler writes it)
              podq:registry:scale-to-zero SET endpoints asked to drop to 0 until their next job
              podq:registry:webhooks   HASH  endpoint id -> its post-inference webhook URL (only
                                       endpoints that have one; the job-ending scripts read it)
              podq:scaler:leader       STRING the scaler replica holding the leader lease
              podq:scaler:worker-key-secret STRING the secret each endpoint's RunPod-protocol worker
                                       key is derived from (HMAC of the endpoint id;
                                       scaler/worker_keys.py; SET NX)
              podq:apikeys             HASH  sha256(API key) hex -> label (keys never stored plain)
              podq:batches             ZSET  every batch by creation time (GET /v1/batches)
              podq:batches:active      SET   batches a runner must drive (RUNNING, CANCELLING)
Per delivery: podq:webhook:{id}:{ms}   STRING  claim: the gateway replica that delivers a job's
                                       webhook for the terminal state reached at {ms}

The job store's Redis functions (serverless/lua/) get the same spellings through `lua_header()`,
so no function types a key by hand.
"""

from __future__ import annotations

import re

JOB = "podq:job:{}"
CHUNKS = "podq:chunks:{}"
QUEUE = "podq:ep:{}:queue"
LEASES = "podq:ep:{}:leases"
STATS = "podq:ep:{}:stats"
BELL = "podq:ep:{}:bell"
WORKERS = "podq:ep:{}:workers"
DONE = "podq:ep:{}:done"
CANCEL = "podq:ep:{}:cancel"
DEADLINES = "podq:ep:{}:deadlines"
HELD = "podq:ep:{}:held"  # + ":" + worker id
STOPS = "podq:ep:{}:stops"  # + ":" + worker id
WAKE = "podq:ep:{}:wake"  # + ":" + worker id
LOGS = "podq:ep:{}:logs"
# the console's recent jobs: job id -> submit score, the newest RECENT_CAP kept (submit function)
RECENT = "podq:ep:{}:recent"
RECENT_CAP = 1000
# field of the stats hash: log lines workers dropped rather than block a handler (HINCRBY)
LOG_LINES_DROPPED = "log_lines_dropped"
WORKER_KEY_SECRET = "podq:scaler:worker-key-secret"
ENDPOINTS = "podq:endpoints"
API_KEYS = "podq:apikeys"
REGISTRY_ENDPOINTS = "podq:registry:endpoints"
REGISTRY_TEMPLATES = "podq:registry:templates"
REGISTRY_STATUS = "podq:registry:status"
REGISTRY_ZERO = "podq:registry:scale-to-zero"
REGISTRY_WEBHOOKS = "podq:registry:webhooks"
# endpoint id -> its execution_timeout_ms: take (serverless/lua/take.lua) reads it inside Redis for
# a job without a timeout of its own, so a change applies to the next job without new workers
REGISTRY_TIMEOUTS = "podq:registry:execution-timeouts"
SCALER_LEADER = "podq:scaler:leader"
WEBHOOKS = "podq:webhooks"
# the ids a webhook dispatcher has taken off WEBHOOKS and not yet delivered (one list per
# dispatcher), and dispatcher id -> the ms until which it counts as alive (gateway/webhooks.py)
WEBHOOKS_CLAIMED = "podq:webhooks:claimed:{}"
WEBHOOK_DISPATCHERS = "podq:webhooks:dispatchers"
DONE_PATTERN = DONE.format("*")
# Cluster metrics (serverless/metrics_store.py): histograms and the scaler leader's counters.
HIST_DELAY = "podq:ep:{}:hist:delay"
HIST_EXEC = "podq:ep:{}:hist:exec"
HIST_COLD = "podq:ep:{}:hist:cold"
SCALER = "podq:ep:{}:scaler"
# Batches (serverless/batches/store.py): one hash per batch, and its parts.
BATCH = "podq:batch:{}"
BATCH_INFLIGHT = "podq:batch:{}:inflight"
BATCH_READY = "podq:batch:{}:ready"
BATCH_LEASE = "podq:batch:{}:lease"
BATCHES = "podq:batches"
BATCHES_ACTIVE = "podq:batches:active"
# One rate limit bucket (serverless/gateway/limits.py): kind (ep | key), subject, route.
RATE_BUCKET = "podq:rate:{}:{}:{}"
# The console (serverless/console/): per-minute history, its claims, and sessions.
CONSOLE_HISTORY = "podq:console:history:{}"
CONSOLE_HISTORY_CLAIM = "podq:console:history-claim:{}"
CONSOLE_SECRET = "podq:console:secret"
CONSOLE_SIGNED_OUT = "podq:console:signed-out:{}"
# Published on an endpoint's done channel when purge-queue ended many jobs at once.
PURGED = "*purged*"

# Low-priority jobs sort after every normal one (scores are submit ms, ~1.7e12 today).
LOW_PRIORITY_OFFSET = 10**13
# Cap on doorbell entries: a bell is only a hint to wake, the queue itself is the truth.
BELL_CAP = 64

# Endpoint and job ids, anchored for JSON Schema (ECMA `$` is the very end) and used with
# fullmatch here (Python's `$` would also match before a trailing newline: "ep\n").
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_ID = re.compile(ID_PATTERN[1:-1])


def valid_id(value: str) -> bool:
    """Endpoint and job ids: 1-128 chars of letters, digits and `_.:-` (no key injection)."""
    return bool(_ID.fullmatch(value))


def job(job_id: str) -> str:
    return JOB.format(job_id)


def chunks(job_id: str) -> str:
    return CHUNKS.format(job_id)


def queue(endpoint: str) -> str:
    return QUEUE.format(endpoint)


def leases(endpoint: str) -> str:
    return LEASES.format(endpoint)


def stats(endpoint: str) -> str:
    return STATS.format(endpoint)


def bell(endpoint: str) -> str:
    return BELL.format(endpoint)


def workers(endpoint: str) -> str:
    return WORKERS.format(endpoint)


def done(endpoint: str) -> str:
    return DONE.format(endpoint)


def cancel(endpoint: str) -> str:
    return CANCEL.format(endpoint)



def deadlines(endpoint: str) -> str:
    return DEADLINES.format(endpoint)


def held(endpoint: str, worker_id: str) -> str:
    return f"{HELD.format(endpoint)}:{worker_id}"


def stops(endpoint: str, worker_id: str) -> str:
    return f"{STOPS.format(endpoint)}:{worker_id}"


def wake(endpoint: str, worker_id: str) -> str:
    return f"{WAKE.format(endpoint)}:{worker_id}"


def logs(endpoint: str) -> str:
    return LOGS.format(endpoint)


def hist_delay(endpoint: str) -> str:
    return HIST_DELAY.format(endpoint)


def hist_exec(endpoint: str) -> str:
    return HIST_EXEC.format(endpoint)


def hist_cold(endpoint: str) -> str:
    return HIST_COLD.format(endpoint)


def scaler(endpoint: str) -> str:
    return SCALER.format(endpoint)


def batch(batch_id: str) -> str:
    return BATCH.format(batch_id)


def batch_inflight(batch_id: str) -> str:
    return BATCH_INFLIGHT.format(batch_id)


def batch_ready(batch_id: str) -> str:
    return BATCH_READY.format(batch_id)


def batch_lease(batch_id: str) -> str:
    return BATCH_LEASE.format(batch_id)


def rate_bucket(kind: str, subject: str, route: str) -> str:
    """A rate limit bucket: kind `ep` (subject: endpoint id) or `key` (subject: key digest)."""
    return RATE_BUCKET.format(kind, subject, route)


def console_history(endpoint: str) -> str:
    return CONSOLE_HISTORY.format(endpoint)


def console_history_claim(minute_ms: int) -> str:
    return CONSOLE_HISTORY_CLAIM.format(minute_ms)


def console_signed_out(nonce: str) -> str:
    return CONSOLE_SIGNED_OUT.format(nonce)


def endpoint_of_channel(channel: str) -> str:
    head, tail = DONE.split("{}")
    return channel[len(head) : len(channel) - len(tail)]


def lua_key_fn(name: str, template: str) -> str:
    """The Lua function K_<name>(x) that spells `template` (one `{}`) for x, so a Redis
    function never types a key by hand (also used by metrics_store.lua_header)."""
    head, tail = template.split("{}")
    return f"local function K_{name}(x) return '{head}' .. x .. '{tail}' end"


def lua_header() -> str:
    """Lua functions K_job(id), K_queue(ep), ... built from the templates above, and the
    constants the functions use: the head of the function library (serverless/functions.py),
    run once when Redis loads it."""
    names = {
        "job": JOB, "chunks": CHUNKS, "queue": QUEUE, "leases": LEASES, "stats": STATS,
        "bell": BELL, "workers": WORKERS, "done": DONE, "cancel": CANCEL,
        "deadlines": DEADLINES, "held": HELD, "stops": STOPS, "recent": RECENT,
    }
    lines = [lua_key_fn(n, t) for n, t in names.items()]
    lines.append(f"local BELL_CAP = {BELL_CAP}")
    lines.append(f"local RECENT_CAP = {RECENT_CAP}")
    lines.append(f"local PURGED = '{PURGED}'")
    lines.append(f"local ENDPOINTS = '{ENDPOINTS}'")
    lines.append(f"local WEBHOOKS = '{WEBHOOKS}'")
    lines.append(f"local ENDPOINT_WEBHOOKS = '{REGISTRY_WEBHOOKS}'")
    lines.append(f"local ENDPOINT_TIMEOUTS = '{REGISTRY_TIMEOUTS}'")
    return "\n".join(lines) + "\n"
