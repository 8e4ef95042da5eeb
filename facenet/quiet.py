"""Keeping TensorFlow's and TFLite's start-up chatter (oneDNN, CPU features, converter, XNNPACK) off stderr.

A library must not print: these lines come from C++ loggers, so they are silenced by the environment before
TensorFlow is imported (`facenet/__init__.py` sets TF_CPP_MIN_LOG_LEVEL=2, unless the user set it) and, for the
one INFO line TFLite writes past that setting, by filtering stderr around the call that writes it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

TF_LOG_LEVEL = "2"
"""TF_CPP_MIN_LOG_LEVEL the package sets when unset: warnings and errors of the C++ core still show."""

TFLITE_NOISE = ("INFO: Created TensorFlow Lite XNNPACK delegate",)
"""Lines TFLite writes to stderr whatever TF_CPP_MIN_LOG_LEVEL says (the first allocation of an interpreter)."""


def quiet_tensorflow_env() -> None:
    """TF_CPP_MIN_LOG_LEVEL=2 unless set: must run before TensorFlow is imported (it reads it once)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVEL)


@contextlib.contextmanager
def stderr_without(noise: tuple[str, ...] = TFLITE_NOISE) -> Iterator[None]:
    """Capture file descriptor 2 for the block and write back every line except those starting with `noise`
    (C++ code writes there directly, past sys.stderr). Anything else, errors included, still reaches stderr."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2 (an embedded interpreter): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not line.startswith(noise)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
