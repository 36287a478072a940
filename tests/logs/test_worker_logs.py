"""serverless/worker_logs.py's pure parts, by tables: the query, entries as lines, filters."""

from __future__ import annotations

import pytest

from serverless.errors import BadRequest
from serverless.worker_logs import (
    START,
    TAIL_DEFAULT,
    TAIL_MAX,
    LogLine,
    LogQuery,
    line_of,
    matches,
    parse_query,
    parse_since,
    parse_tail,
    select,
)

MAX = 2**64 - 1


@pytest.mark.parametrize("raw,cursor", [
    ("1712345678901-0", "1712345678901-0"),     # an entry id: the lines after it
    ("1712345678901-7", "1712345678901-7"),
    (" 1712345678901-7 ", "1712345678901-7"),
    ("0-0", START),
    ("1712345678901", f"1712345678900-{MAX}"),  # epoch ms: the lines of that ms on
    ("1", f"0-{MAX}"),
    ("0", START),                                # the beginning
    ("007-01", "7-1"),
])
def test_since_becomes_an_exclusive_cursor(raw: str, cursor: str) -> None:
    assert parse_since(raw) == cursor


@pytest.mark.parametrize("raw", ["", "yesterday", "1712-", "-5", "1.5", "1-2-3", f"{2**53}",
                                 f"1-{MAX + 1}", "2026-12-01T00:00:00Z"])
def test_a_since_that_is_neither_form_is_refused_naming_both(raw: str) -> None:
    with pytest.raises(BadRequest, match=r"^since=.* is neither an entry id \(`1712345678901-0`"):
        parse_since(raw)


@pytest.mark.parametrize("raw,tail", [(None, TAIL_DEFAULT), ("1", 1), ("250", 250),
                                      (str(TAIL_MAX), TAIL_MAX)])
def test_tail_defaults_to_100_and_takes_1_to_5000(raw: str | None, tail: int) -> None:
    assert parse_tail(raw) == tail


@pytest.mark.parametrize("raw,message", [
    ("0", r"^tail=0 is out of range; ask for 1\.\.5000 lines"),
    ("5001", r"^tail=5001 is out of range"),
    ("-3", r"^tail=-3 is out of range"),
    ("ten", r"^tail='ten' is not a whole number of lines; use e\.g\. \?tail=200"),
    ("", r"^tail='' is not a whole number"),
])
def test_a_bad_tail_is_refused_naming_it(raw: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_tail(raw)


@pytest.mark.parametrize("query,expected", [
    ({}, LogQuery()),
    ({"worker": "w1", "job": "j1", "tail": "5"}, LogQuery(worker="w1", job="j1", tail=5)),
    ({"since": "10-2", "tail": "7"}, LogQuery(after="10-2", tail=7)),
    ({"unknown": "ignored"}, LogQuery()),
])
def test_the_query_string_becomes_filters_cursor_and_count(query: dict, expected: LogQuery) -> None:
    assert parse_query(query) == expected


FIELDS = {b"ts": b"1712345678000", b"worker": b"w1", b"job": b"j1", b"stream": b"log",
          b"level": b"warning", b"line": b"caf\xc3\xa9 \xff"}  # invalid UTF-8 at the end


@pytest.mark.parametrize("entry_id,fields,expected", [
    (b"1712345678123-4", FIELDS,
     LogLine("1712345678123-4", 1712345678000, "w1", "j1", "log", "warning", "caf\u00e9 \ufffd")),
    ("5-0", {b"line": b"no other field"}, LogLine("5-0", 5, "", "", "", "", "no other field")),
    (b"9-1", {b"ts": b"garbage", b"line": b""}, LogLine("9-1", 9, "", "", "", "", "")),
])
def test_an_entry_becomes_a_line(entry_id, fields, expected: LogLine) -> None:
    assert line_of(entry_id, fields) == expected


def _line(worker: str, job: str) -> LogLine:
    return LogLine("1-0", 1, worker, job, "stdout", "", "text")


@pytest.mark.parametrize("line,query,expected", [
    (_line("w1", "j1"), LogQuery(), True),
    (_line("w1", "j1"), LogQuery(worker="w1"), True),
    (_line("w1", "j1"), LogQuery(worker="w2"), False),
    (_line("w1", "j1"), LogQuery(job="j1"), True),
    (_line("w1", ""), LogQuery(job="j1"), False),   # a line outside any job is no job's
    (_line("w1", "j1"), LogQuery(worker="w1", job="j2"), False),
])
def test_filters_keep_a_workers_or_a_jobs_lines(line: LogLine, query: LogQuery, expected: bool) -> None:
    assert matches(line, query) is expected


def test_select_stops_at_the_limit_and_names_the_last_entry_looked_at() -> None:
    entries = [(f"{i}-0".encode(), {b"job": b"j1" if i % 3 == 0 else b"j2", b"line": b"x"})
               for i in range(1, 10)]
    found, last = select(entries, LogQuery(job="j1"), limit=2)
    assert [line.id for line in found] == ["3-0", "6-0"] and last == "6-0"
    found, last = select(entries, LogQuery(job="nobody"), limit=2)
    assert found == [] and last == "9-0"  # every entry looked at: the cursor skips them all
    assert select([], LogQuery(), limit=2) == ([], "")
