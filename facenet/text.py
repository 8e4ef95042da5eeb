"""Names as text: topic-safe slugs, and names made safe for one human-readable line."""

from __future__ import annotations

import logging
import re
import unicodedata


def slug(text: str) -> str:
    """A topic/entity-safe name: `José María` -> `jose_maria`."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_") or "x"


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(text: str) -> str:
    """`text` safe for one human-readable line: control characters (C0, C1, DEL, line/paragraph separators)
    escaped (`\\n`, `\\r`, `\\t`, `\\x1b`, `\\u2028`), so a crafted name cannot start a fake line or a terminal
    escape sequence."""
    if text.isprintable():
        return text
    return "".join(_ESCAPES.get(ch) or (ascii(ch)[1:-1] if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch)
                   for ch in text)


class OneLineFormatter(logging.Formatter):
    """A log formatter whose messages are one line each (`one_line`); tracebacks stay as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = one_line(record.message)
        return super().formatMessage(record)


def printable(text: str) -> str:
    """`text` with control and format characters (newline, CR, tab, bidi marks...) shown as spaces, for drawing.

    The text layout engine fails on some of them (raqm on a newline); lines of text use `one_line` instead.
    """
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text).strip() or "?"
