"""A Keras twin of OpenCV Zoo's SFace face-embedding network, read from its (int8 block-quantized) ONNX file.

`cv2.FaceRecognizerSF.feature(bgr_chip)` calls `blobFromImage(chip, 1, (112, 112), 0, swapRB=True)`, so the network
itself sees an RGB chip in 0..255; its own first nodes then compute (x - 127.5) * 0.0078125. The twin therefore takes
the RGB chip as it is, keeps that scaling as its first layer, and returns the raw 128-d feature of `feature()`.

The ONNX graph is walked node by node: int8 weights are dequantized with NumPy exactly as ONNX `DequantizeLinear`
defines it (per tensor, per axis or per block), batch norms are folded into the convolution or dense layer next to
them, and the NCHW flatten order is folded into the dense kernel, so the model is plain Keras layers named after the
ONNX nodes (stable names, for fine-tuning). Anything this walker does not expect raises `SFaceFormatError`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import onnx
from keras import layers
from onnx import numpy_helper

from facenet.config import SFACE_PRETRAINED_FILE
from facenet.models.cache import cached_conversion
from facenet.models.zoo import SFACE_ONNX, zoo_file

log = logging.getLogger(__name__)


class SFaceFormatError(ValueError):
    """The ONNX file holds a node or layout the SFace converter does not understand (the message names it)."""


def dequantize_linear(
    x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None = None, axis: int = 1, block_size: int = 0
) -> np.ndarray:
    """ONNX DequantizeLinear in NumPy: (x - zero_point) * scale, per tensor, per axis or per block along `axis`.

    Per block (opset 21), `scale` has x's rank with ceil(x.shape[axis] / block_size) entries along `axis`; each
    entry covers `block_size` consecutive elements. The integer difference is exact; one float32 multiply follows.
    """
    x = np.asarray(x)
    scale = np.asarray(scale, dtype=np.float32)
    zero_point = np.zeros(scale.shape, x.dtype) if zero_point is None else np.asarray(zero_point)
    if zero_point.shape != scale.shape:
        raise SFaceFormatError(f"zero point shape {zero_point.shape} differs from scale shape {scale.shape}")
    axis = axis % max(x.ndim, 1)
    if scale.size == 1 and scale.ndim <= 1 and block_size == 0:
        scale, zero_point = scale.reshape(()), zero_point.reshape(())
    elif block_size == 0:
        if scale.ndim != 1 or scale.shape[0] != x.shape[axis]:
            raise SFaceFormatError(f"per-axis scale {scale.shape} does not fit {x.shape} on axis {axis}")
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    else:
        blocks = -(-x.shape[axis] // block_size)
        expected = tuple(blocks if i == axis else n for i, n in enumerate(x.shape))
        if scale.shape != expected:
            raise SFaceFormatError(
                f"block scale {scale.shape} does not fit {x.shape} (block {block_size} on axis {axis})"
            )
        take = np.arange(x.shape[axis]) // block_size
        scale, zero_point = np.take(scale, take, axis=axis), np.take(zero_point, take, axis=axis)
    difference = x.astype(np.int32) - zero_point.astype(np.int32)
    return (difference.astype(np.float32) * scale).astype(np.float32)


@dataclass
class _Affine:
    """A Keras tensor with a per-channel map x * scale + offset still to apply (scale, offset: scalars or (C,))."""

    tensor: keras.KerasTensor
    scale: np.ndarray
    offset: np.ndarray
    name: str


@dataclass
class _Flat:
    """An NHWC value flattened in ONNX's NCHW order: the order is folded into the next dense kernel."""

    source: object
    name: str


@dataclass
class _Linear:
    """A conv / depthwise conv / dense layer not yet built, so a batch norm after it can fold into its weights."""

    kind: str  # "conv", "depthwise" or "dense"
    tensor: keras.KerasTensor
    kernel: np.ndarray  # Keras layout
    bias: np.ndarray
    name: str
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right

    def scale_outputs(self, scale: np.ndarray, offset: np.ndarray) -> None:
        """Fold y * scale + offset (per output channel) into the kernel and bias."""
        out_shape = self.kernel.shape[-2:] if self.kind == "depthwise" else self.kernel.shape[-1:]
        self.kernel = (self.kernel * np.broadcast_to(scale, self.bias.shape).reshape(out_shape)).astype(np.float32)
        self.bias = (self.bias * scale + offset).astype(np.float32)


def _layer_name(node: onnx.NodeProto, index: int) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", node.name or node.output[0]).strip("_")
    return name or f"{node.op_type.lower()}_{index}"


class _Converter:
    """Walks the ONNX nodes in order, keeping for each value a constant, a Keras tensor or a pending fold."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.values: dict[str, object] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.consumers: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1
        for output in graph.output:
            self.consumers[output.name] = self.consumers.get(output.name, 0) + 1
        data = [i for i in graph.input if i.name not in self.values and self.consumers.get(i.name)]
        if len(data) != 1:
            raise SFaceFormatError(f"expected one image input, found {[i.name for i in data]}")
        dims = [d.dim_value for d in data[0].type.tensor_type.shape.dim]
        if len(dims) != 4 or dims[1] != 3 or dims[2] <= 0 or dims[3] <= 0:
            raise SFaceFormatError(f"input {data[0].name}: expected N x 3 x H x W, got {dims}")
        self.inputs = keras.Input((dims[2], dims[3], 3), name="chip")
        self.values[data[0].name] = self.inputs
        if len(graph.output) != 1:
            raise SFaceFormatError(f"expected one output, found {[o.name for o in graph.output]}")
        self.graph = graph
        self.built: dict[int, keras.KerasTensor] = {}  # id of a pending value -> its tensor, so it is built once

    # --- value access -------------------------------------------------------------------------------------------

    def const(self, node: onnx.NodeProto, position: int) -> np.ndarray | None:
        if position >= len(node.input) or not node.input[position]:
            return None
        value = self.values.get(node.input[position])
        if not isinstance(value, np.ndarray):
            raise SFaceFormatError(f"node {node.name!r} ({node.op_type}): input {position} is not a constant")
        return value

    def value(self, node: onnx.NodeProto, position: int = 0) -> object:
        name = node.input[position]
        if name not in self.values:
            raise SFaceFormatError(f"node {node.name!r} ({node.op_type}): input {name!r} is not produced before it")
        return self.values[name]

    def tensor(self, value: object) -> keras.KerasTensor:
        """Build whatever is pending on `value` (once) and return the Keras tensor."""
        if isinstance(value, _Affine | _Flat | _Linear):
            if id(value) not in self.built:
                self.built[id(value)] = self._materialize(value)
            return self.built[id(value)]
        if isinstance(value, np.ndarray):
            raise SFaceFormatError("a constant reaches a layer input that needs an image tensor")
        return value

    def _materialize(self, value: _Affine | _Flat | _Linear) -> keras.KerasTensor:
        if isinstance(value, _Affine):
            if value.scale.size != 1 or value.offset.size != 1:
                raise SFaceFormatError(f"node {value.name!r}: a per-channel affine map here cannot be folded")
            name = "preprocess" if value.tensor is self.inputs else value.name
            rescale = layers.Rescaling(value.scale.item(), value.offset.item(), name=name, dtype="float32")
            return rescale(value.tensor)
        if isinstance(value, _Flat):
            x = layers.Permute((3, 1, 2), name=f"{value.name}_nchw")(self.tensor(value.source))
            return layers.Flatten(name=value.name)(x)
        return self.build(value)

    def build(self, pending: _Linear) -> keras.KerasTensor:
        x = pending.tensor
        if pending.kind == "dense":
            layer = layers.Dense(pending.kernel.shape[1], name=pending.name)
            out = layer(x)
            layer.set_weights([pending.kernel, pending.bias])
            return out
        top, left, bottom, right = pending.pads
        size = pending.kernel.shape[:2]
        same = pending.strides == (1, 1) and all(k % 2 for k in size)
        same = same and (top, bottom) == ((size[0] - 1) // 2,) * 2 and (left, right) == ((size[1] - 1) // 2,) * 2
        padding = "same" if same else "valid"
        if not same and any(pending.pads):
            x = layers.ZeroPadding2D(((top, bottom), (left, right)), name=f"{pending.name}_pad")(x)
        if pending.kind == "depthwise":
            layer = layers.DepthwiseConv2D(
                size, pending.strides, padding, depth_multiplier=pending.kernel.shape[3], name=pending.name
            )
        else:
            layer = layers.Conv2D(pending.kernel.shape[3], size, pending.strides, padding, name=pending.name)
        out = layer(x)
        layer.set_weights([pending.kernel, pending.bias])
        return out

    # --- nodes --------------------------------------------------------------------------------------------------

    def run(self) -> keras.Model:
        for index, node in enumerate(self.graph.node):
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None or node.domain not in ("", "ai.onnx"):
                operator = f"{node.domain or 'ai.onnx'}.{node.op_type}"
                raise SFaceFormatError(f"node {node.name!r}: unsupported operator {operator}")
            attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            result = handler(node, attributes, _layer_name(node, index))
            self.values[node.output[0]] = result
        output = self.values.get(self.graph.output[0].name)
        if output is None:
            raise SFaceFormatError(f"output {self.graph.output[0].name!r} is never produced")
        return keras.Model(self.inputs, self.tensor(output), name="sface")

    @staticmethod
    def _check(node: onnx.NodeProto, attributes: dict, allowed: dict) -> None:
        """Refuse attributes this converter would silently get wrong."""
        for key, value in attributes.items():
            if key not in allowed:
                raise SFaceFormatError(f"node {node.name!r} ({node.op_type}): unsupported attribute {key}={value!r}")
            if allowed[key] is not None and value not in allowed[key]:
                raise SFaceFormatError(f"node {node.name!r} ({node.op_type}): unsupported {key}={value!r}")

    def op_DequantizeLinear(self, node, attributes, name):
        self._check(node, attributes, {"axis": None, "block_size": None})
        x, scale, zero_point = self.const(node, 0), self.const(node, 1), self.const(node, 2)
        if x.dtype not in (np.int8, np.uint8, np.int32):
            raise SFaceFormatError(f"node {node.name!r}: unsupported quantized type {x.dtype}")
        try:
            return dequantize_linear(x, scale, zero_point, attributes.get("axis", 1), attributes.get("block_size", 0))
        except SFaceFormatError as error:
            raise SFaceFormatError(f"node {node.name!r}: {error}") from None

    def op_Reshape(self, node, attributes, name):
        self._check(node, attributes, {"allowzero": (0,)})
        data, shape = self.const(node, 0), self.const(node, 1).astype(np.int64).tolist()
        shape = [data.shape[i] if n == 0 else n for i, n in enumerate(shape)]  # ONNX: 0 copies the input dim
        return np.reshape(data, shape)

    def op_Constant(self, node, attributes, name):
        if set(attributes) != {"value"}:
            raise SFaceFormatError(f"node {node.name!r} (Constant): only a tensor value is supported")
        return numpy_helper.to_array(attributes["value"])

    def _elementwise(self, node: onnx.NodeProto, name: str, op: str) -> object:
        value, constant = self.value(node, 0), self.const(node, 1)
        if isinstance(value, np.ndarray):
            raise SFaceFormatError(f"node {node.name!r} ({op}): both inputs constant")
        channel = self._channel_vector(node, constant)
        if not isinstance(value, _Affine):
            one = np.ones((), np.float32)
            value = _Affine(self.tensor(value), one, np.zeros((), np.float32), name)
        scale, offset = value.scale, value.offset
        if op == "Sub":
            offset = offset - channel
        elif op == "Add":
            offset = offset + channel
        elif op == "Mul":
            scale, offset = scale * channel, offset * channel
        else:  # Div
            scale, offset = scale / channel, offset / channel
        return _Affine(value.tensor, scale.astype(np.float32), offset.astype(np.float32), name)

    @staticmethod
    def _channel_vector(node: onnx.NodeProto, constant: np.ndarray) -> np.ndarray:
        """A constant broadcast over NCHW as a scalar or (C,) vector; anything else is refused."""
        constant = constant.astype(np.float32)
        if constant.size == 1:
            return constant.reshape(())
        shape = constant.shape
        while len(shape) > 3 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) == 3 and shape[1:] == (1, 1):
            return constant.reshape(-1)
        raise SFaceFormatError(f"node {node.name!r} ({node.op_type}): constant {constant.shape} is not per channel")

    def op_Sub(self, node, attributes, name):
        return self._elementwise(node, name, "Sub")

    def op_Add(self, node, attributes, name):
        return self._elementwise(node, name, "Add")

    def op_Mul(self, node, attributes, name):
        return self._elementwise(node, name, "Mul")

    def op_Div(self, node, attributes, name):
        return self._elementwise(node, name, "Div")

    def op_Conv(self, node, attributes, name):
        self._check(
            node,
            attributes,
            {
                "dilations": ([1, 1],),
                "group": None,
                "kernel_shape": None,
                "pads": None,
                "strides": None,
                "auto_pad": (b"NOTSET", "NOTSET"),
            },
        )
        weight, bias = self.const(node, 1), self.const(node, 2)
        if weight.ndim != 4:
            raise SFaceFormatError(f"node {node.name!r} (Conv): expected a 2-D convolution, weight {weight.shape}")
        out_channels, per_group, height, width = weight.shape
        if list(attributes.get("kernel_shape", [height, width])) != [height, width]:
            raise SFaceFormatError(f"node {node.name!r} (Conv): kernel_shape differs from the weight {weight.shape}")
        x = self.tensor(self.value(node, 0))
        in_channels = x.shape[-1]
        group = attributes.get("group", 1)
        if group == 1 and per_group == in_channels:
            kind, kernel = "conv", weight.transpose(2, 3, 1, 0)
        elif group == in_channels and per_group == 1 and out_channels % group == 0:
            multiplier = out_channels // group
            kind, kernel = "depthwise", weight.reshape(group, multiplier, height, width).transpose(2, 3, 0, 1)
        else:
            raise SFaceFormatError(f"node {node.name!r} (Conv): group {group} with weight {weight.shape} unsupported")
        strides = tuple(attributes.get("strides", [1, 1]))
        pads = tuple(attributes.get("pads", [0, 0, 0, 0]))
        if len(strides) != 2 or len(pads) != 4:
            raise SFaceFormatError(f"node {node.name!r} (Conv): strides {strides} / pads {pads} not 2-D")
        bias = np.zeros(out_channels, np.float32) if bias is None else bias.astype(np.float32)
        return _Linear(kind, x, np.ascontiguousarray(kernel, np.float32), bias, name, strides, pads)

    def op_BatchNormalization(self, node, attributes, name):
        self._check(node, attributes, {"epsilon": None, "momentum": None, "training_mode": (0,), "spatial": (1,)})
        if len([o for o in node.output if o]) != 1:
            raise SFaceFormatError(f"node {node.name!r} (BatchNormalization): training outputs are not supported")
        gamma, beta, mean, var = (self.const(node, i).astype(np.float64) for i in range(1, 5))
        scale = gamma / np.sqrt(var + np.float64(np.float32(attributes.get("epsilon", 1e-5))))
        offset = beta - mean * scale
        value = self.value(node, 0)
        if isinstance(value, _Linear) and self.consumers[node.input[0]] == 1:
            value.scale_outputs(scale, offset)
            return value
        if isinstance(value, _Affine):
            scale, offset = value.scale * scale, value.offset * scale + offset
            value = value.tensor
        return _Affine(self.tensor(value), scale.astype(np.float32), offset.astype(np.float32), name)

    def op_PRelu(self, node, attributes, name):
        self._check(node, attributes, {})
        x = self.tensor(self.value(node, 0))
        slope = self._channel_vector(node, self.const(node, 1))
        if len(x.shape) != 4:
            raise SFaceFormatError(f"node {node.name!r} (PRelu): expected an image tensor, got {x.shape}")
        alpha = np.broadcast_to(slope, (x.shape[-1],)).reshape(1, 1, -1).astype(np.float32)
        layer = layers.PReLU(shared_axes=[1, 2], name=name)
        out = layer(x)
        layer.set_weights([alpha])
        return out

    def op_Dropout(self, node, attributes, name):
        self._check(node, attributes, {"seed": None})
        if len(node.output) > 1 and node.output[1] and self.consumers.get(node.output[1]):
            raise SFaceFormatError(f"node {node.name!r} (Dropout): its mask output is used")
        if len(node.input) > 2 and node.input[2] and bool(self.const(node, 2)):
            raise SFaceFormatError(f"node {node.name!r} (Dropout): training mode is on")
        return self.value(node, 0)  # identity at inference

    def op_Flatten(self, node, attributes, name):
        self._check(node, attributes, {"axis": (1,)})
        value = self.value(node, 0)
        if not isinstance(value, _Affine):
            value = self.tensor(value)  # a pending affine map stays pending: the next dense layer folds it
        shape = value.tensor.shape if isinstance(value, _Affine) else value.shape
        if len(shape) != 4:
            raise SFaceFormatError(f"node {node.name!r} (Flatten): expected an image tensor, got {shape}")
        return _Flat(value, name)

    def op_Gemm(self, node, attributes, name):
        self._check(node, attributes, {"alpha": None, "beta": None, "transA": (0,), "transB": (0, 1)})
        weight, bias = self.const(node, 1), self.const(node, 2)
        kernel = (weight.T if attributes.get("transB", 0) else weight).astype(np.float64) * attributes.get("alpha", 1.0)
        units = kernel.shape[1]
        bias = np.zeros(units) if bias is None else np.broadcast_to(bias.astype(np.float64), (units,))
        bias = bias * attributes.get("beta", 1.0)
        value = self.value(node, 0)
        if isinstance(value, _Flat):
            source, scale, offset = value.source, np.ones(()), np.zeros(())
            if isinstance(source, _Affine):
                source, scale, offset = source.tensor, source.scale, source.offset
            x = self.tensor(source)
            height, width, channels = x.shape[1:]
            if kernel.shape[0] != height * width * channels:
                raise SFaceFormatError(f"node {node.name!r} (Gemm): weight {weight.shape} does not fit {x.shape}")
            # ONNX rows are in (C, H, W) order: fold the per-channel affine map, then reorder rows to (H, W, C)
            chw = kernel.reshape(channels, height, width, units)
            bias = bias + np.einsum("chwu,c->u", chw, np.broadcast_to(offset, (channels,)))
            chw = chw * np.broadcast_to(scale, (channels,)).reshape(-1, 1, 1, 1)
            kernel = chw.transpose(1, 2, 0, 3).reshape(-1, units)
            x = layers.Flatten(name=value.name)(x)
        else:
            x = self.tensor(value)
            if len(x.shape) != 2 or x.shape[1] != kernel.shape[0]:
                raise SFaceFormatError(f"node {node.name!r} (Gemm): weight {weight.shape} does not fit {x.shape}")
        return _Linear("dense", x, kernel.astype(np.float32), bias.astype(np.float32), name)


def convert_sface(path: str | Path) -> keras.Model:
    """OpenCV Zoo's SFace ONNX file as Keras: RGB chip (N, 112, 112, 3) in 0..255 -> raw 128-d feature.

    Equal (up to float rounding) to `cv2.FaceRecognizerSF.feature()` on the same chip in BGR order.
    """
    try:
        model = onnx.load(str(path))
    except Exception as error:  # noqa: BLE001 - any unreadable file is a format error
        raise SFaceFormatError(f"{path}: not a readable ONNX file ({error})") from error
    return _Converter(model).run()


def pretrained_sface(weights_dir: str | Path) -> keras.Model:
    """SFace as Keras (raw feature), converted once from the checksummed zoo file and cached in `weights_dir`.

    A cache that is corrupt or was made from a different ONNX file is rebuilt with a warning.
    """
    return cached_conversion(weights_dir, SFACE_PRETRAINED_FILE, zoo_file(SFACE_ONNX), convert_sface)
