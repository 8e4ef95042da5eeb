"""Keeping TensorFlow's and TFLite's start-up chatter (oneDNN, CPU features, converter, XNNPACK) off stderr.

A library must not print: these lines come from C++ loggers, so they are silenced by the environment before
TensorFlow is imported (`facenet/__init__.py` sets TF_CPP_MIN_LOG_LEVEL=2, unless the user set it) and, for the
one INFO line TFLite writes past that setting, by filtering stderr around the call that writes it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

TF_LOG_LEVEL = "2"
"""TF_CPP_MIN_LOG_LEVEL the package sets when unset: warnings and errors of the C++ core still show."""

TFLITE_NOISE = ("INFO: Created TensorFlow Lite XNNPACK delegate",)
"""Lines TFLite writes to stderr whatever TF_CPP_MIN_LOG_LEVEL says (the first allocation of an interpreter)."""

TF_BANNER = ("oneDNN custom operations are on", "All log messages before absl::InitializeLog()",
             "cpu_feature_guard", "TensorFlow binary is optimized")
"""Lines TensorFlow 2.21 writes to stderr while it is imported, before TF_CPP_MIN_LOG_LEVEL takes effect (on CPUs
with oneDNN's custom operations)."""


def quiet_tensorflow_env() -> None:
    """TF_CPP_MIN_LOG_LEVEL=2 unless set, and TensorFlow's first import (by the package, Keras or the user's own code)
    without its start-up banner (TF_BANNER): must run before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVEL)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlow())


class _Imported(importlib.abc.Loader):
    """A loader that hands back a module already imported."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return self.module

    def exec_module(self, module: ModuleType) -> None:
        return None


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Imports TensorFlow, the first time anything asks for it, with TF_BANNER's lines filtered from stderr."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        with stderr_without(TF_BANNER):
            module = importlib.import_module(name)
        return importlib.util.spec_from_loader(name, _Imported(module))


@contextlib.contextmanager
def stderr_without(noise: tuple[str, ...] = TFLITE_NOISE) -> Iterator[None]:
    """Capture file descriptor 2 for the block and write back every line except those holding one of `noise`
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
                    if not any(text in line for text in noise)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
