"""Progress of long loops, on stderr so stdout stays clean for --json: a tqdm bar on a terminal, plain lines off one."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

PLAIN_PROGRESS_EVERY = 100
"""Without a terminal and without a known total, one progress line per this many items."""


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return False


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Progress on stderr, so stdout stays clean for --json.

    A tqdm bar when stderr is a terminal; otherwise (a log file, a pipe, CI) plain lines, no carriage returns:
    one every 10% of a known total (every 100 items when the total is unknown) and one at the end.
    """
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if _stderr_is_terminal():
        return iter(tqdm(items, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False))
    return _plain_progress(items, desc, total, unit)


def _plain_progress(items: Iterable[T], desc: str, total: int | None, unit: str) -> Iterator[T]:
    every = max(1, math.ceil(total / 10)) if total else PLAIN_PROGRESS_EVERY
    started = time.monotonic()
    count = 0

    def line(final: bool) -> None:
        of = f"/{total}" if total else ""
        share = f" ({100 * count // total}%)" if total else ""
        done = f", done in {time.monotonic() - started:.1f} s" if final else ""
        sys.stderr.write(f"{desc}: {count}{of} {unit}{share}{done}\n")
        sys.stderr.flush()

    for item in items:
        yield item
        count += 1
        if count % every == 0 and count != total:
            line(final=False)
    line(final=True)
