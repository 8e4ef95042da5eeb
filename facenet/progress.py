"""Progress of long loops, on stderr so stdout stays clean for --json: a tqdm bar on a terminal, plain lines off one.

Off by default: library modules never print, so progress shows only once `show_progress(True)` was called (the
command line does; an API user may).
"""

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

_shown = False


def show_progress(enabled: bool = True) -> None:
    """Turn progress on stderr on (the command line) or off (the default: a library call prints nothing)."""
    global _shown
    _shown = enabled


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return False


def progress(items: Iterable[T], desc: str | None, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Progress on stderr, so stdout stays clean for --json.

    A tqdm bar when stderr is a terminal; otherwise (a log file, a pipe, CI) plain lines, no carriage returns:
    one every 10% of a known total (every 100 items when the total is unknown) and one at the end. Nothing at all
    (the items as they are) unless `show_progress()` turned it on, or when `desc` is None (an outer loop shows it).
    """
    if not _shown or desc is None:
        return iter(items)
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


class PlainBar:
    """tqdm's update/set_postfix/close for a loop with its own figures, printed as plain lines (one every 10% of
    `total` and one at the end) when stderr is not a terminal; silent when `printing` is False."""

    def __init__(self, total: int, desc: str, unit: str, printing: bool = True) -> None:
        self.total, self.desc, self.unit, self.printing = total, desc, unit, printing
        self.count, self.postfix, self.started = 0, "", time.monotonic()
        self.every = max(1, math.ceil(total / 10)) if total else PLAIN_PROGRESS_EVERY

    def set_postfix(self, values: dict) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def _line(self, final: bool) -> None:
        if not self.printing:
            return
        done = f", done in {time.monotonic() - self.started:.1f} s" if final else ""
        extra = f" ({self.postfix})" if self.postfix else ""
        sys.stderr.write(f"{self.desc}: {self.count}/{self.total} {self.unit}{extra}{done}\n")
        sys.stderr.flush()

    def update(self, n: int = 1) -> None:
        before, self.count = self.count, self.count + n
        if self.count // self.every > before // self.every and self.count != self.total:
            self._line(final=False)

    def close(self) -> None:
        self._line(final=True)


ProgressBar = tqdm | PlainBar
"""What `progress_bar` returns: update(n), set_postfix(dict), close()."""


def progress_bar(total: int, desc: str, unit: str = "it") -> ProgressBar:
    """A bar to update by hand (tqdm's update/set_postfix/close): tqdm on a terminal, plain lines off one, nothing
    while progress is off (see `show_progress`)."""
    if _shown and _stderr_is_terminal():
        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)
    return PlainBar(total, desc, unit, printing=_shown)
