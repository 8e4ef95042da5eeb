"""Names as text: topic-safe slugs, and names made safe for one human-readable line."""

from __future__ import annotations

import re
import unicodedata


def slug(text: str) -> str:
    """A topic/entity-safe name: `José María` -> `jose_maria`."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_") or "x"
