"""Read dlib's face ResNet (`dlib_face_recognition_resnet_model_v1.dat`) into an equivalent Keras model.

The file format and numerics follow `docs/dlib_resnet_format.md`: dlib's own serialisation
(variable-length integers, mantissa/exponent floats), layers stored input -> output, and
residual additions that zero-pad the smaller operand at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from facenet.config import CHIP_SIZE, EMBEDDING_DIM

DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
"""Per-channel means the dlib ResNet subtracts before dividing by 256."""

DLIB_INPUT_SCALE = 256.0


class DlibFormatError(ValueError):
    """The file is not a dlib face ResNet this loader understands."""


class DlibReader:
    """Sequential decoder of dlib's serialisation primitives."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of file at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def integer(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8:
            raise DlibFormatError(f"bad integer control byte {control:#x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        special = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}
        return special.get(exponent, float(mantissa) * 2.0**exponent)

    def string(self) -> str:
        return self._take(self.integer()).decode("latin-1")

    def boolean(self) -> bool:
        byte = self._take(1)
        if byte not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {byte!r} at byte {self.pos - 1}")
        return byte == b"1"

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            raise DlibFormatError(f"unsupported tensor version {version}")
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)
        return values.reshape(shape)

    def alias(self) -> tuple[int, ...]:
        if self.integer() != 1:
            raise DlibFormatError("unsupported alias tensor version")
        return tuple(self.integer() for _ in range(4))


@dataclass
class DlibWeights:
    """Parameters of the dlib ResNet in file order (input -> output)."""

    convs: list[tuple[np.ndarray, np.ndarray, int]] = field(default_factory=list)
    """(kernel HWIO, bias, stride) per convolution."""
    affines: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    """(gamma, beta) per affine layer."""
    fc: np.ndarray | None = None
    """Dense kernel (in, out), no bias."""
    means: tuple[float, float, float] = DLIB_MEAN_RGB
    layer_names: list[str] = field(default_factory=list)


def _read_layer(reader: DlibReader, weights: DlibWeights) -> None:
    name = reader.string()
    weights.layer_names.append(name)
    if name.startswith("con_"):
        params = reader.tensor().ravel()
        n_filters, nr, nc, stride_y, stride_x, _pad_y, _pad_x = (reader.integer() for _ in range(7))
        if name in ("con_5", "con_6"):
            reader.boolean()
        if name == "con_6":
            reader.boolean()
        filter_shape = reader.alias()
        reader.alias()
        for _ in range(4):
            reader.real()
        n_weights = int(np.prod(filter_shape))
        kernel = params[:n_weights].reshape(filter_shape).transpose(2, 3, 1, 0)
        bias = params[n_weights : n_weights + n_filters]
        if bias.size != n_filters:
            bias = np.zeros(n_filters, np.float32)
        if stride_y != stride_x or kernel.shape[:2] != (nr, nc):
            raise DlibFormatError(f"unexpected convolution geometry {filter_shape} stride {stride_y}x{stride_x}")
        weights.convs.append((np.ascontiguousarray(kernel), bias.copy(), stride_y))
    elif name in ("affine_", "affine_2"):
        params = reader.tensor().ravel()
        gamma_shape = reader.alias()
        reader.alias()
        reader.integer()
        if name == "affine_2":
            reader.boolean()
        channels = int(np.prod(gamma_shape))
        weights.affines.append((params[:channels].copy(), params[channels : 2 * channels].copy()))
    elif name == "bn_con2":
        raise DlibFormatError("batch-norm layers are not supported in this file")
    elif name == "relu_":
        pass
    elif name == "relu_2":
        reader.boolean()
    elif name in ("max_pool_2", "avg_pool_2"):
        for _ in range(6):
            reader.integer()
    elif name == "add_prev_":
        pass
    elif name in ("fc_2", "fc_3"):
        n_out, n_in = reader.integer(), reader.integer()
        params = reader.tensor().ravel()
        reader.alias()
        reader.alias()
        reader.integer()
        if name == "fc_3":
            reader.boolean()
        for _ in range(4):
            reader.real()
        weights.fc = params[: n_in * n_out].reshape(n_in, n_out).copy()
    else:
        raise DlibFormatError(f"unknown layer type {name!r}")


def read_dlib_resnet(path: str | Path) -> DlibWeights:
    """Parse the .dat file; raises DlibFormatError if it is not the expected network."""
    data = Path(path).read_bytes()
    reader = DlibReader(data)
    weights = DlibWeights()
    reader.integer()
    if reader.string() != "loss_metric_2":
        raise DlibFormatError(f"{path}: not a dlib metric-learning network")
    reader.real()
    reader.real()
    versions: list[int] = []
    while True:
        start = reader.pos
        try:
            versions.append(reader.integer())
        except DlibFormatError:
            reader.pos = start
            break
        if versions[-1] == 3:
            break
    if reader.string() != "input_rgb_image_sized":
        raise DlibFormatError(f"{path}: unexpected input layer")
    weights.means = (reader.real(), reader.real(), reader.real())
    rows, cols = reader.integer(), reader.integer()
    if (rows, cols) != (CHIP_SIZE, CHIP_SIZE):
        raise DlibFormatError(f"{path}: input size {rows}x{cols}, expected {CHIP_SIZE}")
    n_payloads = sum(v in (2, 3) for v in versions)
    for index in range(n_payloads):
        _read_layer(reader, weights)
        for _ in range(3):
            reader.boolean()
        for _ in range(3):
            reader.tensor()
        if index == 0:
            reader.integer()
    if reader.pos != len(data):
        raise DlibFormatError(f"{path}: {len(data) - reader.pos} trailing bytes")
    if len(weights.convs) != 29 or len(weights.affines) != 29 or weights.fc is None:
        raise DlibFormatError(f"{path}: expected 29 conv, 29 affine and 1 fc layers")
    return weights


@keras.saving.register_keras_serializable(package="facenet")
class Affine(layers.Layer):
    """dlib's affine layer: a fixed-statistics per-channel scale and shift."""

    def build(self, input_shape: tuple) -> None:
        channels = input_shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, inputs):
        return inputs * ops.cast(self.gamma, inputs.dtype) + ops.cast(self.beta, inputs.dtype)


@keras.saving.register_keras_serializable(package="facenet")
class PadAdd(layers.Layer):
    """dlib's add_prev: sum of two tensors, the smaller zero-padded at the end of each axis."""

    def call(self, inputs):
        a, b = inputs
        target = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:], strict=True)]

        def pad(t):
            widths = [(0, 0)] + [(0, size - have) for size, have in zip(target, t.shape[1:], strict=True)]
            return ops.pad(t, widths) if any(w[1] for w in widths) else t

        return pad(a) + pad(b)

    def compute_output_shape(self, input_shapes):
        a, b = input_shapes
        return (a[0], *[max(x, y) for x, y in zip(a[1:], b[1:], strict=True)])


def _conv(x, filters: int, size: int, stride: int, name: str):
    padding = "same" if stride == 1 else "valid"
    return layers.Conv2D(filters, size, strides=stride, padding=padding, name=name)(x)


def build_dlib_resnet(name: str = "dlib_resnet") -> keras.Model:
    """The dlib face ResNet architecture: RGB chip in [0, 255] -> raw 128-d descriptor."""
    counter = iter(range(1000))

    def conv_affine(x, filters: int, stride: int, relu: bool):
        i = next(counter)
        x = _conv(x, filters, 3, stride, f"conv{i}")
        x = Affine(name=f"affine{i}")(x)
        return layers.ReLU(name=f"relu{i}")(x) if relu else x

    def residual(x, filters: int, down: bool):
        y = conv_affine(x, filters, 2 if down else 1, relu=True)
        y = conv_affine(y, filters, 1, relu=False)
        skip = layers.AveragePooling2D(2, 2, padding="valid")(x) if down else x
        return layers.ReLU()(PadAdd()([y, skip]))

    inputs = keras.Input((CHIP_SIZE, CHIP_SIZE, 3), name="chip")
    x = layers.Normalization(  # float32 always: the variance 256**2 overflows float16 under mixed precision
        mean=list(DLIB_MEAN_RGB), variance=[DLIB_INPUT_SCALE**2] * 3, name="dlib_preprocess", dtype="float32"
    )(inputs)
    x = _conv(x, 32, 7, 2, "conv_stem")
    x = Affine(name="affine_stem")(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D(3, 2, padding="valid")(x)
    for filters, n_blocks, down in ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True)):
        for block in range(n_blocks):
            x = residual(x, filters, down and block == 0)
    x = residual(x, 256, True)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(EMBEDDING_DIM, use_bias=False, name="descriptor")(x)
    return keras.Model(inputs, outputs, name=name)


def _conv_layers(model: keras.Model) -> list[layers.Conv2D]:
    return [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]


def load_dlib_weights(model: keras.Model, weights: DlibWeights) -> None:
    """Copy parsed dlib parameters into a model built by `build_dlib_resnet` (layer order = file order)."""
    convs = _conv_layers(model)
    affines = [layer for layer in model.layers if isinstance(layer, Affine)]
    for layer, (kernel, bias, stride) in zip(convs, weights.convs, strict=True):
        if layer.strides[0] != stride or tuple(layer.kernel.shape) != kernel.shape:
            raise DlibFormatError(f"layer {layer.name}: shape {kernel.shape}/s{stride} does not fit")
        layer.set_weights([kernel, bias])
    for layer, (gamma, beta) in zip(affines, weights.affines, strict=True):
        layer.set_weights([gamma, beta])
    model.get_layer("descriptor").set_weights([weights.fc])
    if not np.allclose(weights.means, DLIB_MEAN_RGB, atol=1e-3):
        raise DlibFormatError(f"input means {weights.means} differ from {DLIB_MEAN_RGB}")


def convert(path: str | Path) -> keras.Model:
    """Build the Keras twin of the dlib ResNet stored at `path` (raw, un-normalised output)."""
    model = build_dlib_resnet()
    load_dlib_weights(model, read_dlib_resnet(path))
    return model
