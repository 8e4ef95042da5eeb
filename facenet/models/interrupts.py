"""Ctrl-C held back while TensorFlow builds a model: a KeyboardInterrupt raised inside its C++ conversion code can
crash the process instead of unwinding it (seen once during start-up: "Fatal Python error: Segmentation fault" in
Keras' Normalization.build -> convert_to_eager_tensor, exit -11 instead of the command's one line and 130)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def interrupt_after() -> Iterator[None]:
    """A Ctrl-C that arrives inside is raised as KeyboardInterrupt once the block has ended (a model build takes
    seconds); a second one is raised at once, for a user who will not wait. Only where Python's own SIGINT handler
    is installed and only in the main thread: a server's or a live loop's handler, and other threads, are left
    alone. Also a decorator."""
    if threading.current_thread() is not threading.main_thread() or (
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    held: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        if held:
            raise KeyboardInterrupt
        held.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt
