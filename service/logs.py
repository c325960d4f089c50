"""One log format for the web process and the worker processes it spawns: JSON lines or text.

Log lines carry what clients send (a request's percent-decoded path, its ids), so both formats
escape control characters in every record's message and string fields: a client cannot end a line
and forge the next one, or send terminal escapes to whoever reads the log. Backslashes are escaped
too, so an escape in a message always stands for a control character. A text record's
continuation lines (a traceback) are indented, their control characters escaped: only a record's
first line starts at column 0.
"""

from __future__ import annotations

import logging
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(process)d %(name)s %(message)s"
CONTINUATION = "  "

# C0 controls, DEL and C1 controls (U+0085 is a line break to Python and to some viewers), and the
# Unicode line and paragraph separators.
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROLS = {code: _NAMED.get(chr(code), f"\\x{code:02x}")
             for code in (*range(0x20), *range(0x7f, 0xa0))} | {0x2028: "\\u2028", 0x2029: "\\u2029"}
_ESCAPES = _CONTROLS | {ord("\\"): "\\\\"}
_STANDARD = frozenset(RESERVED_ATTRS)  # a LogRecord's own attributes; any other is an `extra`


def escape_controls(text: str) -> str:
    """`text` on one line and without control characters: `\\n`, `\\x1b`, ..., and `\\\\`."""
    return text.translate(_ESCAPES)


def _plain(text: str) -> bool:
    return text.isprintable() and "\\" not in text


def escaped_record(record: logging.LogRecord) -> logging.LogRecord:
    """`record`, or where its message (arguments applied) or a string extra needs escaping, a copy
    with them escaped (other handlers, pytest's say, keep the original)."""
    message = record.getMessage()
    extras = {name: escape_controls(value) for name, value in vars(record).items()
              if name not in _STANDARD and isinstance(value, str) and not _plain(value)}
    if not extras and _plain(message):  # the usual case, at the cost of a scan
        return record
    escaped = logging.makeLogRecord(vars(record))
    escaped.msg, escaped.args = escape_controls(message), None
    vars(escaped).update(extras)
    return escaped


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(escaped_record(record))
        if "\n" not in text:  # no traceback
            return text
        first, *continued = text.split("\n")
        return "\n".join([first, *(CONTINUATION + line.translate(_CONTROLS) for line in continued)])


class JsonLinesFormatter(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return super().format(escaped_record(record))


def configure_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonLinesFormatter(JSON_FIELDS, rename_fields={"levelname": "level", "asctime": "time"}))
    else:
        handler.setFormatter(TextFormatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
