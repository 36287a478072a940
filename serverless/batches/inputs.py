"""Reading a batch's input file: JSONL (one JSON value per line: the job's `input`) or CSV (a
header row, then one row per input: `{"column": "value", ...}`), from the object store's byte
stream, resumable at a byte offset (a ranged read of the stored file).

The file is cut into records by `Splitter`, which knows each record's end offset and line, so
the runner can save a `Cursor` after every step and a restarted runner continues at the next
record without reading any record twice. Blank lines are not inputs (they get no index). A CSV
record ends at a newline outside quotes (RFC 4180: a quoted field may hold newlines; quotes are
doubled inside one, so an even count of `"` means the record is complete).

A record that cannot be an input (not UTF-8, not JSON, a CSV row with the wrong number of
fields) does not stop the batch: it becomes a FAILED result whose error names its line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterable, AsyncIterator
from typing import NamedTuple

import msgspec

from serverless.batches.model import Cursor
from serverless.errors import BadRequest, PayloadTooLarge


class Record(NamedTuple):
    raw: bytes
    line: int  # the line it starts on (1-based)
    end: Cursor  # the cursor just after it (index counts it)


class Item(NamedTuple):
    """One input: its index, the job input as JSON bytes (or None and why not), and the
    cursor after it."""

    index: int
    input: bytes | None
    error: str | None
    after: Cursor


class Splitter:
    """Cuts a byte stream into records, counting offsets, lines and inputs from `start`."""

    def __init__(self, csv_quotes: bool, start: Cursor = Cursor()) -> None:
        self._quotes = csv_quotes
        self._buf = bytearray()
        self._at = start  # the cursor at the start of the buffer

    def feed(self, chunk: bytes) -> list[Record]:
        self._buf += chunk
        out: list[Record] = []
        start, search = 0, 0
        while (nl := self._buf.find(b"\n", search)) >= 0:
            raw = bytes(self._buf[start:nl + 1])
            if self._quotes and raw.count(b'"') % 2:
                search = nl + 1  # a newline inside a quoted field: the record goes on
                continue
            self._take(raw, out)
            start = search = nl + 1
        del self._buf[:start]
        return out

    def finish(self) -> list[Record]:
        """The last record, when the file does not end with a newline."""
        out: list[Record] = []
        if self._buf:
            self._take(bytes(self._buf), out)
            self._buf.clear()
        return out

    def _take(self, raw: bytes, out: list[Record]) -> None:
        at = self._at
        lines = raw.count(b"\n")
        blank = not raw.strip()
        self._at = Cursor(at.index + (not blank), at.offset + len(raw), at.line + lines)
        if not blank:
            out.append(Record(raw, at.line, self._at))


def parse_header(raw: bytes) -> list[str]:
    """A CSV header row's column names; 400 when it has none, an empty one, or a repeat."""
    try:
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as e:
        raise BadRequest(f"the CSV header row cannot be read ({e}); send UTF-8 CSV with a header row") from None
    columns = [c.strip() for c in rows[0]] if rows else []
    if not columns or "" in columns or len(set(columns)) != len(columns):
        raise BadRequest(f"the CSV header row {raw[:200].decode('utf-8', 'replace').strip()!r} needs "
                         "distinct, non-empty column names (they become the input's keys)")
    return columns


def decode_jsonl(record: Record) -> tuple[bytes | None, str | None]:
    """The job input a JSONL record gives, or why it cannot be one."""
    try:
        record.raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"line {record.line} is not valid UTF-8 (byte {e.start}); fix the file and retry"
    try:
        msgspec.json.decode(record.raw)
    except (msgspec.DecodeError, RecursionError) as e:
        return None, f"line {record.line} is not valid JSON ({e}); fix the file and retry"
    return record.raw.strip(), None


def decode_csv(record: Record, header: list[str]) -> tuple[bytes | None, str | None]:
    """The job input a CSV row gives (`{"column": "value"}`), or why it cannot be one."""
    try:
        row = next(csv.reader(io.StringIO(record.raw.decode("utf-8"))))
    except UnicodeDecodeError as e:
        return None, f"line {record.line} is not valid UTF-8 (byte {e.start}); fix the file and retry"
    except csv.Error as e:
        return None, f"line {record.line} is not a valid CSV row ({e}); fix the file and retry"
    if len(row) != len(header):
        return None, (f"line {record.line} has {len(row)} field(s), the header has {len(header)}; "
                      "fix the row and retry")
    return msgspec.json.encode(dict(zip(header, row))), None


async def items(
    chunks: AsyncIterator[bytes], fmt: str, start: Cursor, header: list[str] | None = None
) -> AsyncIterator[Item]:
    """Every input from `start` on: `chunks` begin at byte `start.offset` of the file (a ranged
    read: ObjectStore.stream(key, start=...)), where the last run stopped or just after the CSV
    header, so a restarted runner never reads the file's head again."""
    splitter = Splitter(fmt == "csv", start)

    def decoded(record: Record) -> Item:
        value, error = decode_csv(record, header or []) if fmt == "csv" else decode_jsonl(record)
        return Item(record.end.index - 1, value, error, record.end)

    async for chunk in chunks:
        for record in splitter.feed(chunk):
            yield decoded(record)
    for record in splitter.finish():
        yield decoded(record)


class Survey(NamedTuple):
    """What reading a file once tells: its inputs, size, CSV columns and where inputs start."""

    total: int
    size: int
    header: list[str] | None
    start: Cursor


class Surveyor:
    """Counts the inputs of a file as it passes through (the upload is stored meanwhile),
    refusing it (413) past `max_bytes`."""

    def __init__(self, fmt: str, max_bytes: int) -> None:
        self.fmt, self.max_bytes = fmt, max_bytes
        self._splitter = Splitter(fmt == "csv")
        self._size, self._total = 0, 0
        self._header: list[str] | None = None
        self._start = Cursor()

    async def tee(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self._size += len(chunk)
            if self._size > self.max_bytes:
                raise PayloadTooLarge(f"the batch file is over the {self.max_bytes} byte limit; "
                                      "split it into several batches")
            self._count(self._splitter.feed(chunk))
            yield chunk

    def _count(self, records: list[Record]) -> None:
        if self.fmt == "csv" and self._header is None and records:
            self._header, self._start = parse_header(records[0].raw), Cursor(0, records[0].end.offset,
                                                                             records[0].end.line)
            records = records[1:]
        self._total += len(records)

    def result(self) -> Survey:
        self._count(self._splitter.finish())
        if self._total == 0:
            what = "rows after the header" if self.fmt == "csv" else "non-blank lines"
            raise BadRequest(f"the batch file has no inputs (no {what}); send a {self.fmt} file "
                             "with one input per line")
        return Survey(self._total, self._size, self._header, self._start)
