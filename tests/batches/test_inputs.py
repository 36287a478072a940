"""Reading batch files: records, cursors, CSV rows, bad lines, resuming at a cursor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from serverless.batches.inputs import Splitter, Surveyor, items, parse_header
from serverless.batches.model import Cursor
from serverless.errors import BadRequest, PayloadTooLarge


async def chunked(data: bytes, size: int = 3) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def read_all(data: bytes, fmt: str, start: Cursor = Cursor(), header=None, size: int = 3):  # type: ignore[no-untyped-def]
    return [item async for item in items(chunked(data[start.offset:], size), fmt, start, header)]


def test_splitter_counts_offsets_lines_and_skips_blank_lines() -> None:
    s = Splitter(csv_quotes=False)
    records = s.feed(b'1\n\n{"a"') + s.feed(b': 2}\n3') + s.finish()
    assert [r.raw for r in records] == [b"1\n", b'{"a": 2}\n', b"3"]
    assert [r.line for r in records] == [1, 3, 4]
    assert [r.end for r in records] == [Cursor(1, 2, 2), Cursor(2, 12, 4), Cursor(3, 13, 4)]


def test_a_quoted_csv_field_may_hold_newlines() -> None:
    s = Splitter(csv_quotes=True)
    records = s.feed(b'a,"b\nc ""q"" d"\ne,f\n')
    assert [r.raw for r in records] == [b'a,"b\nc ""q"" d"\n', b"e,f\n"]
    assert records[1].line == 3


async def test_jsonl_inputs_and_a_bad_line_that_fails_alone() -> None:
    got = await read_all(b'{"x": 1}\n{oops\n\n"s"\n\xff\n', "jsonl")
    assert [(i.index, i.input) for i in got] == [(0, b'{"x": 1}'), (1, None), (2, b'"s"'), (3, None)]
    assert got[1].error.startswith("line 2 is not valid JSON (")
    assert got[3].error == "line 5 is not valid UTF-8 (byte 0); fix the file and retry"


async def test_resuming_at_a_cursor_reads_nothing_twice() -> None:
    data = b"".join(b"%d\n" % i for i in range(100))
    first = await read_all(data, "jsonl", size=7)
    again = await read_all(data, "jsonl", first[41].after, size=7)
    assert [i.index for i in again] == list(range(42, 100))
    assert [i.input for i in again] == [b"%d" % i for i in range(42, 100)]


async def test_csv_rows_become_objects_and_a_short_row_fails_alone() -> None:
    data = b'prompt,n\n"hi, there",1\nshort\n'
    header = parse_header(b"prompt,n\n")
    got = await read_all(data, "csv", Cursor(0, 9, 2), header)
    assert got[0].input == b'{"prompt":"hi, there","n":"1"}'
    assert got[1].input is None and got[1].error == "line 3 has 1 field(s), the header has 2; fix the row and retry"


@pytest.mark.parametrize("header", [b"\n", b"a,,b\n", b"a,a\n"])
def test_a_csv_header_needs_distinct_names(header: bytes) -> None:
    with pytest.raises(BadRequest, match="needs distinct, non-empty column names"):
        parse_header(header)


async def test_the_surveyor_counts_inputs_and_finds_where_csv_rows_start() -> None:
    surveyor = Surveyor("csv", 1000)
    passed = b"".join([c async for c in surveyor.tee(chunked(b"a,b\n1,2\n\n3,4"))])
    assert passed == b"a,b\n1,2\n\n3,4"
    assert surveyor.result() == (2, 12, ["a", "b"], Cursor(0, 4, 2))


async def test_the_surveyor_refuses_an_empty_file_and_one_over_the_cap() -> None:
    empty = Surveyor("jsonl", 1000)
    [c async for c in empty.tee(chunked(b"\n \n"))]
    with pytest.raises(BadRequest, match="the batch file has no inputs"):
        empty.result()
    with pytest.raises(PayloadTooLarge, match="over the 5 byte limit"):
        [c async for c in Surveyor("jsonl", 5).tee(chunked(b"1\n2\n3\n"))]
