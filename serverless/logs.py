"""Structured, quiet-by-default logging: `level=... logger=... msg="..."` lines on stderr.

PODQ_LOG_LEVEL (default WARNING) sets the level; PODQ_LOG_FORMAT=json switches to JSON lines.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time


class _LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        msg = record.getMessage().replace('"', "'")
        line = f'ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} logger={record.name} msg="{msg}"'
        if record.exc_info:
            line += f' exc="{self.formatException(record.exc_info)!r}"'
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {"ts": record.created, "level": record.levelname.lower(), "logger": record.name,
                "msg": record.getMessage()}
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


def configure(level: str | None = None) -> None:
    """Install podq's handler on the `podq` logger (idempotent)."""
    root = logging.getLogger("podq")
    level = (level or os.environ.get("PODQ_LOG_LEVEL") or "WARNING").upper()
    root.setLevel(level)
    if any(getattr(h, "_podq", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    json_lines = os.environ.get("PODQ_LOG_FORMAT", "").lower() == "json"
    handler.setFormatter(_JsonFormatter() if json_lines else _LogfmtFormatter())
    handler._podq = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.propagate = False
