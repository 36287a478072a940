"""Reading an endpoint's worker log lines: the Redis stream worker/log_shipper.py writes.

    podq:ep:{ep}:logs   STREAM  one entry per line: ts, worker, job, stream, level, line
    podq:ep:{ep}:stats  HASH    log_lines_dropped: lines workers dropped rather than block

A reader asks for the last `tail` lines, or the lines after a cursor (`since`: an entry id, or
epoch ms), optionally only one worker's or one job's. Filters are applied here, on the reader's
side of the stream: a job's lines are a few among every line of the endpoint, so a filtered read
pages through the stream (PAGE entries a call, newest first for a tail) until it has `tail`
lines or the stream ends; the stream is capped (PODQ_LOG_STREAM_MAXLEN), so that is bounded.
Every answer carries `next`, the cursor after the last entry looked at, so the next read (or a
follow) continues exactly there, whatever the filters skipped.

`follow` is for Server-Sent Events: one blocking XREAD a call on the caller's pooled client (a
connection per open log stream; admin-only streams are few, unlike job streams, which share
readers: gateway/chunk_fanout.py). Parsing the query and turning entries into lines are pure and
tested by tables.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from serverless import keys
from serverless.errors import BadRequest

TAIL_DEFAULT = 100
TAIL_MAX = 5_000  # as RunPod's worker-log API (default 100, max 5000)
PAGE = 1_000  # entries a filtered read asks Redis for at a time
FOLLOW_COUNT = 500  # entries one XREAD of a follow returns at most
START = "0-0"  # the cursor before every entry
_SEQ_MAX = 2**64 - 1  # the largest part of a stream entry id
MS_MAX = 2**53 - 1  # the largest epoch ms `since` takes (JSON's largest exact integer)
_ENTRY_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")
_MS = re.compile(r"^\d{1,20}$")


class LogLine(msgspec.Struct):
    """One line as the API shows it."""

    id: str  # the stream entry id: an SSE event's `id:`, and a `since` cursor
    time: int  # epoch ms when the worker wrote it
    worker: str
    job: str  # "" for lines written outside any job
    stream: str  # stdout | stderr | log
    level: str  # a log record's level (info, warning, ...); "" for stdout / stderr lines
    line: str


class LogsReply(msgspec.Struct):
    """GET /v1/endpoints/{id}/logs: lines oldest first, the endpoint's dropped-line count, and
    the cursor to pass as `since` for what comes after them."""

    lines: list[LogLine]
    dropped: int
    next: str


class LogQuery(msgspec.Struct, frozen=True, kw_only=True):
    worker: str = ""  # "" = every worker
    job: str = ""  # "" = every job
    after: str = ""  # exclusive entry-id cursor; "" = the last `tail` lines
    tail: int = TAIL_DEFAULT


# ---- pure ---------------------------------------------------------------------------------


def parse_since(raw: str) -> str:
    """`since` as an exclusive cursor: an entry id as it is, epoch ms as "just before that ms".

    Raises:
        BadRequest: neither form; the message names the parameter and both forms.
    """
    value = raw.strip()
    if (match := _ENTRY_ID.match(value)) and max(int(match[1]), int(match[2])) <= _SEQ_MAX:
        return f"{int(match[1])}-{int(match[2])}"
    if _MS.match(value) and int(value) <= MS_MAX:
        ms = int(value)
        return f"{ms - 1}-{_SEQ_MAX}" if ms > 0 else START
    raise BadRequest(f"since={raw!r} is neither an entry id (`1712345678901-0`, a line's `id`) "
                     f"nor epoch milliseconds (`1712345678901`, at most {MS_MAX})")


def parse_tail(raw: str | None) -> int:
    """`tail` in lines: TAIL_DEFAULT when absent, else a whole number in 1..TAIL_MAX.

    Raises:
        BadRequest: not a whole number, or out of range; the message names the parameter.
    """
    if raw is None:
        return TAIL_DEFAULT
    try:
        tail = int(raw)
    except ValueError:
        raise BadRequest(f"tail={raw!r} is not a whole number of lines; use e.g. ?tail=200 "
                         f"(1..{TAIL_MAX})") from None
    if not 1 <= tail <= TAIL_MAX:
        raise BadRequest(f"tail={tail} is out of range; ask for 1..{TAIL_MAX} lines (page on "
                         "with `since` set to the answer's `next`)")
    return tail


def parse_query(query: Mapping[str, str]) -> LogQuery:
    """The filters and cursor of a logs request's query string."""
    since = query.get("since")
    return LogQuery(worker=query.get("worker", ""), job=query.get("job", ""),
                    after=parse_since(since) if since is not None else "",
                    tail=parse_tail(query.get("tail")))


def _text(fields: Mapping[bytes, bytes], name: bytes) -> str:
    return fields.get(name, b"").decode("utf-8", "replace")


def line_of(entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> LogLine:
    """One stream entry as a LogLine; `time` falls back to the entry id's ms."""
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ts = fields.get(b"ts", b"")
    return LogLine(id=eid, time=int(ts) if ts.isdigit() else int(eid.split("-", 1)[0]),
                   worker=_text(fields, b"worker"), job=_text(fields, b"job"),
                   stream=_text(fields, b"stream"), level=_text(fields, b"level"),
                   line=_text(fields, b"line"))


def matches(line: LogLine, query: LogQuery) -> bool:
    """Whether the line passes the query's worker and job filters."""
    return (not query.worker or line.worker == query.worker) and (
        not query.job or line.job == query.job)


def select(entries: Sequence[tuple[Any, Any]], query: LogQuery, limit: int) -> tuple[list[LogLine], str]:
    """The matching lines among `entries` (in the order given), at most `limit`, and the id of
    the last entry looked at ("" when none was)."""
    out: list[LogLine] = []
    last = ""
    for entry_id, fields in entries:
        line = line_of(entry_id, fields)
        last = line.id
        if matches(line, query):
            out.append(line)
            if len(out) == limit:
                break
    return out, last


# ---- Redis --------------------------------------------------------------------------------


async def dropped(redis: Redis, endpoint: str) -> int:
    """Lines the endpoint's workers dropped rather than block a handler, ever."""
    return int(await redis.hget(keys.stats(endpoint), keys.LOG_LINES_DROPPED) or 0)


async def read(redis: Redis, endpoint: str, query: LogQuery) -> LogsReply:
    """The last `tail` matching lines, or the first `tail` after `query.after`; oldest first.

    Args:
        redis: a pooled client.
        endpoint: the endpoint id.
        query: filters, cursor and count (parse_query).

    Returns:
        The lines, the dropped count and the cursor that continues after them.
    """
    if query.after:
        lines, last = await _forward(redis, keys.logs(endpoint), query)
        cursor = last or query.after
    else:
        lines, cursor = await _backward(redis, keys.logs(endpoint), query)
    return LogsReply(lines=lines, dropped=await dropped(redis, endpoint), next=cursor)


async def _forward(redis: Redis, key: str, query: LogQuery) -> tuple[list[LogLine], str]:
    lines: list[LogLine] = []
    cursor, last = query.after, ""
    while len(lines) < query.tail:
        page = await redis.xrange(key, min=f"({cursor}", max="+", count=PAGE)
        found, seen = select(page, query, query.tail - len(lines))
        lines += found
        last = seen or last
        if len(page) < PAGE or not seen:
            break
        cursor = seen
    return lines, last


async def _backward(redis: Redis, key: str, query: LogQuery) -> tuple[list[LogLine], str]:
    """The newest matching lines and, as the cursor, the newest entry's id (START if none)."""
    lines: list[LogLine] = []
    newest, bound = "", "+"
    while len(lines) < query.tail:
        page = await redis.xrevrange(key, max=bound, min="-", count=PAGE)
        found, seen = select(page, query, query.tail - len(lines))
        lines += found
        if page and not newest:
            newest = line_of(*page[0]).id
        if len(page) < PAGE or not seen:
            break
        bound = f"({seen}"
    lines.reverse()
    return lines, newest or START


async def follow(redis: Redis, endpoint: str, query: LogQuery, after: str,
                 block_ms: int) -> AsyncGenerator[list[LogLine], None]:
    """The matching lines written after the cursor `after`, as they come: each blocking read
    gives one list, empty when nothing matched within `block_ms` (so the caller can send a
    keep-alive or stop). Runs until the caller stops iterating."""
    key, cursor = keys.logs(endpoint), after
    while True:
        reply = await redis.xread({key: cursor}, count=FOLLOW_COUNT, block=block_ms)
        entries = reply[0][1] if reply else []
        found, seen = select(entries, query, len(entries) or 1)
        cursor = seen or cursor
        yield found
