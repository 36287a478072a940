"""A pure, incremental Server-Sent Events decoder (bytes in, events out; no I/O).

Follows the event stream interpretation of the HTML standard
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
lines end in CRLF, LF or CR; `:` starts a comment; `data:` lines of one event are joined with
LF; a blank line dispatches the event; the last `id:` seen is kept for Last-Event-ID.
It works on bytes, so a UTF-8 character split between two network reads is never broken.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_EOL = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event: its type (`message` unless named), its data, the last id."""

    event: str
    data: bytes
    id: str | None


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the events completed by them."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scanned = 0
        self._data: list[bytes] = []
        self._event = ""
        self.last_id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Take the next bytes of the stream; returns the events they complete, in order."""
        self._buf += chunk
        events = []
        for line in self._lines():
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _lines(self) -> list[bytes]:
        lines, start = [], 0
        for match in _EOL.finditer(self._buf, max(0, self._scanned - 1)):
            if match.group() == b"\r" and match.end() == len(self._buf):
                break  # may be the first half of CRLF: wait for the next read
            lines.append(bytes(self._buf[start : match.start()]))
            start = match.end()
        del self._buf[:start]
        self._scanned = len(self._buf)
        return lines

    def _line(self, line: bytes) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        self._field(name.decode("utf-8", "replace"), value[1:] if value[:1] == b" " else value)
        return None

    def _field(self, name: str, value: bytes) -> None:
        match name:
            case "data":
                self._data.append(value)
            case "event":
                self._event = value.decode("utf-8", "replace")
            case "id" if b"\0" not in value:
                self.last_id = value.decode("utf-8", "replace")

    def _dispatch(self) -> SSEEvent | None:
        data, event = self._data, self._event or "message"
        self._data, self._event = [], ""
        if not data:
            return None
        return SSEEvent(event, b"\n".join(data), self.last_id)
