"""A Keras embedding model as TFLite (XNNPACK) for inference: ~1.5x faster than a `tf.function` on 2 CPU cores.

Training always uses the Keras model; recognition may run this converted copy, which agrees with it to ~3e-5. The
flatbuffer is cached in the weights folder under the model's fingerprint, so it is converted once (~10 s).
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import warnings
from pathlib import Path

import keras
import numpy as np

from facenet.files import read_checked, write_checked
from facenet.models.interrupts import interrupt_after
from facenet.quiet import stderr_without

log = logging.getLogger(__name__)


def to_tflite(model: keras.Model) -> bytes:
    """The model as a float32 TFLite flatbuffer with a free batch size."""
    import tensorflow as tf  # the converter and interpreter: only where the TFLite runtime is used

    # from_keras_model: a hand-made concrete function of a Keras 3 model converts to NaN-producing TFLite (TF 2.21)
    with contextlib.redirect_stdout(io.StringIO()):  # Keras' export prints the temporary SavedModel's signature
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def cached_tflite(model: keras.Model, path: Path) -> bytes:
    """`to_tflite(model)`, read from `path` when it was converted before and its bytes are those written (checked
    against the sha256 recorded in `path.json`), else converted and written atomically: a truncated, emptied or
    altered cache is rebuilt with a one-line warning."""
    if path.exists():
        try:
            data = path.read_bytes()
            read_checked(path, data)
            return data
        except (OSError, ValueError) as error:
            log.warning("%s: stale or corrupt TFLite cache (%s); converting again", path, error)
    return _convert_and_cache(model, path)


def _convert_and_cache(model: keras.Model, path: Path) -> bytes:
    data = to_tflite(model)
    try:
        write_checked(path, lambda tmp: tmp.write_bytes(data))
    except OSError as error:
        log.warning("%s: could not cache the TFLite model (%s)", path, error)
    return data


@interrupt_after()  # the conversion is TensorFlow building a graph: see facenet.models.interrupts
def cached_runner(model: keras.Model, path: Path, names: list[str] | None = None) -> TFLiteRunner:
    """A `TFLiteRunner` of `cached_tflite(model, path)`; a cache that the interpreter refuses although its checksum
    holds (made by another TensorFlow version) is converted again, with a one-line warning."""
    try:
        return TFLiteRunner(cached_tflite(model, path), names=names)
    except (ValueError, RuntimeError, StopIteration) as error:
        log.warning("%s: the interpreter refuses the cached TFLite model (%s); converting again", path, error)
    return TFLiteRunner(_convert_and_cache(model, path), names=names)


class TFLiteRunner:
    """Runs a `to_tflite` flatbuffer on chips: one (N, H, W, 3) array per model input (float32 or uint8), any N.

    Inputs are matched to the model's by order of the Keras model's inputs (`names`, matched as substrings of the
    TFLite tensor names). Batches of up to `max_batch` go through one interpreter, resized only when the batch size
    changes. Calls are serialised by a lock (an interpreter is not thread-safe).
    """

    def __init__(self, model_bytes: bytes, num_threads: int = 2, max_batch: int = 32,
                 names: list[str] | None = None) -> None:
        import tensorflow as tf  # the converter and interpreter: only where the TFLite runtime is used

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's notice about ai_edge_litert
            self.interpreter = tf.lite.Interpreter(model_content=model_bytes, num_threads=num_threads)
        details = self.interpreter.get_input_details()
        if names:
            details = [next(d for d in details if name in d["name"]) for name in names]
        self.inputs = details
        self.output = self.interpreter.get_output_details()[0]
        self.max_batch = max_batch
        self.batch = 0
        self.lock = threading.Lock()

    def _resize(self, size: int) -> None:
        for detail in self.inputs:
            self.interpreter.resize_tensor_input(detail["index"], [size, *detail["shape"][1:]], strict=True)
        if self.batch == 0:  # the first allocation applies XNNPACK, which announces it on stderr
            with stderr_without():
                self.interpreter.allocate_tensors()
        else:
            self.interpreter.allocate_tensors()
        self.batch = size

    def __call__(self, *chips: np.ndarray) -> np.ndarray:
        arrays = [np.asarray(c).astype(np.float32, copy=False) for c in chips]
        for array, detail in zip(arrays, self.inputs, strict=True):
            if array.ndim != 4 or tuple(array.shape[1:]) != tuple(detail["shape"][1:]):
                raise ValueError(f"expected chips (N, {', '.join(map(str, detail['shape'][1:]))}), got {array.shape}")
        outputs = []
        with self.lock:
            for start in range(0, len(arrays[0]), self.max_batch):
                batch = [np.ascontiguousarray(a[start : start + self.max_batch]) for a in arrays]
                if len(batch[0]) != self.batch:
                    self._resize(len(batch[0]))
                for array, detail in zip(batch, self.inputs, strict=True):
                    self.interpreter.set_tensor(detail["index"], array)
                self.interpreter.invoke()
                outputs.append(self.interpreter.get_tensor(self.output["index"]).copy())
        if not outputs:
            return np.zeros((0, *self.output["shape"][1:]), np.float32)
        return np.concatenate(outputs)
