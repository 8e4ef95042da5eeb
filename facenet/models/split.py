"""An embedder cut in two: a frozen bottom (chips -> feature maps, run once per photo) and a trainable top (feature
maps -> unit vector): what `--tune top` and `--tune top2` train on a CPU.

The cut is where each branch's features are still spatial: before the last residual block(s) of the dlib ResNet
(4x4x256 maps) and before SFace's last layer(s) (7x7x1024 maps). At the cut, a `PositionGain` learns how much to
trust each position of the map (a mask hides the same places of every aligned face). The top's other layers are the
embedder's own (shared, not copied): training the top trains the embedder. `--tune adapter` is the cut at the very
end (the features are the frozen embedder's unit vector; the top is the adapter alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
from keras import layers, ops

from facenet.config import FUSION_SFACE_WEIGHT
from facenet.models.adapter import EmbeddingAdapter, adapter_of
from facenet.models.dlib_resnet import PadAdd

CUTS = {"top": {"dlib_resnet": 1, "sface": "conv_14_relu"}, "top2": {"dlib_resnet": 2, "sface": "conv_13_relu"}}
"""Where `--tune top|top2` cuts each branch: the dlib ResNet before its last (top2: last two) residual blocks,
SFace before its fully connected layer over the 7x7 map (top2: before its last depthwise-separable block too)."""

BRANCHES = ("dlib_resnet", "sface")


@keras.saving.register_keras_serializable(package="facenet")
class PositionGain(layers.Layer):
    """x * exp(g[row, col]): a learned weight per position of a feature map, 1 at the start."""

    def build(self, input_shape) -> None:
        self.gain = self.add_weight(name="gain", shape=(int(input_shape[1]), int(input_shape[2]), 1),
                                    initializer="zeros")

    def call(self, inputs):
        return inputs * ops.cast(ops.exp(self.gain), inputs.dtype)


@dataclass
class SplitEmbedder:
    """`bottom(chips) -> features`, `top(features) -> unit vector`; the top ends with the adapter."""

    bottom: keras.Model
    top: keras.Model
    adapter: EmbeddingAdapter
    inputs: list
    """The embedder's chip inputs."""
    vector: keras.KerasTensor
    """The un-adapted unit vector, computed from `inputs` through the bottom, the gains and the top."""
    gains: list[PositionGain] = field(default_factory=list)

    @property
    def feature_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(int(d) for d in tensor.shape[1:]) for tensor in self.bottom.outputs]

    def joined_base(self) -> keras.Model:
        """Chips -> the un-adapted unit vector, one flat model of the split's layers: the architecture trained
        `top` weights are saved from and loaded into (`tuned_architecture`)."""
        return keras.Model(_single(self.inputs), self.vector, name=self.bottom.name.removesuffix("_bottom"))

    def joined(self) -> keras.Model:
        """`joined_base` followed by the adapter (its last layer, so its weights are saved apart)."""
        base = self.joined_base()
        return keras.Model(_single(base.inputs), self.adapter(base.output), name=base.name)


def _cut_layer(branch: keras.Model, where: int | str) -> keras.layers.Layer:
    if isinstance(where, str):
        return branch.get_layer(where)
    block_ends = [add._outbound_nodes[0].operation for add in branch.layers if isinstance(add, PadAdd)]
    return block_ends[-1 - where]


def split_embedder(model: keras.Model, tune: str, hidden: int = 1) -> SplitEmbedder:
    """Cut `model` (an embedder, with or without an adapter; `hidden`: a new adapter's width) for `tune`.

    The fusion head is rebuilt over the branches' tops, so with gains of 1 the top computes exactly what the
    embedder computes from the same features.
    """
    adapter = adapter_of(model)
    base = model
    if adapter is not None:  # the adapter may be shared with a top: its input in THIS model is its output's node's
        history = model.outputs[0]._keras_history
        vector = history.operation._inbound_nodes[history.node_index].input_tensors[0]
        base = keras.Model(_single(model.inputs), vector, name=model.name)
    adapter = adapter or EmbeddingAdapter(hidden, name="adapter", dtype="float32")
    if tune == "adapter":
        features = keras.Input(base.output.shape[1:], name="vector")
        bottom = keras.Model(_single(base.inputs), base.output, name=f"{base.name}_bottom")
        return SplitEmbedder(bottom, keras.Model(features, adapter(features), name="top"), adapter, base.inputs,
                             base.output)
    parts = _parts(base, tune)
    features = [keras.Input(bottom.output.shape[1:], name=f"{bottom.name}_features") for _, (bottom, _, _) in parts]
    keys = [key for key, _ in parts]
    from_features = fusion_head({key: top(gain(x)) for key, x, (_, (_, gain, top)) in
                                 zip(keys, features, parts, strict=True)})
    maps = [bottom(chip) for chip, (_, (bottom, _, _)) in zip(_chip_inputs(base), parts, strict=True)]
    vector = fusion_head({key: top(gain(x)) for key, x, (_, (_, gain, top)) in zip(keys, maps, parts, strict=True)})
    bottom = keras.Model(_single(base.inputs), _single(maps), name=f"{base.name}_bottom")
    top = keras.Model(_single(features), adapter(from_features), name="top")
    return SplitEmbedder(bottom, top, adapter, base.inputs, vector, [gain for _, (_, gain, _) in parts])


class CutError(ValueError):
    """The model is already cut elsewhere than asked (trained weights of another --tune)."""


Part = tuple[keras.Model, PositionGain, keras.Model]


def _parts(base: keras.Model, tune: str) -> list[tuple[str, Part]]:
    """(the branch's kind, dlib or sface, (bottom, gain, top)) per branch: cut anew, or those of a model cut before
    (trained `top` weights)."""
    gains = [layer for layer in base.layers if isinstance(layer, PositionGain)]
    if gains:
        tops = [base.get_layer(gain.name.replace("_gain", "_top")) for gain in gains]
        blocks = sum(isinstance(layer, PadAdd) for top in tops for layer in top.layers)
        if blocks != sum(CUTS[tune].get("dlib_resnet", 0) for top in tops if top.name.startswith("dlib")):
            raise CutError(f"its weights were trained with another --tune than {tune}")
        return [(t.name.split("_")[0], (base.get_layer(g.name.replace("_gain", "_bottom")), g, t))
                for g, t in zip(gains, tops, strict=True)]
    parts = []
    for branch in (layer for layer in base.layers if layer.name in BRANCHES):
        cut = _cut_layer(branch, CUTS[tune][branch.name]).output
        parts.append((branch.name.split("_")[0], (
            keras.Model(branch.input, cut, name=f"{branch.name}_bottom"), PositionGain(name=f"{branch.name}_gain"),
            keras.Model(cut, branch.output, name=f"{branch.name}_top"))))
    return parts


def _chip_inputs(base: keras.Model) -> list:
    """The base's chip input feeding each branch (or each cut branch's bottom), in layer order."""
    fed = [layer for layer in base.layers if layer.name in BRANCHES or layer.name.endswith("_bottom")]
    return [layer._inbound_nodes[0].input_tensors[0] for layer in fed]


def tuned_architecture(embedder: keras.Model, tune: str) -> keras.Model:
    """The pretrained `embedder` in the shape `--tune top|top2` saves its weights in (cut, with position gains)."""
    return split_embedder(embedder, tune).joined_base()


def _single(tensors: list):
    """A one-element list as the tensor itself (a one-input model is then called with an array, not a list)."""
    return tensors[0] if len(tensors) == 1 else tensors


def fusion_head(raw: dict[str, keras.KerasTensor]) -> keras.KerasTensor:
    """Each branch's raw descriptor -> the embedding: its unit vector alone, or (fused) the dlib and SFace unit
    vectors joined (SFace scaled by FUSION_SFACE_WEIGHT) and re-normalised. Weightless: built anew where needed."""
    def unit(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
        return layers.UnitNormalization(name=name, dtype="float32")(x)

    if len(raw) == 1:
        return unit(next(iter(raw.values())), "unit_sphere")
    dlib, sface = unit(raw["dlib"], "dlib_unit"), unit(raw["sface"], "sface_unit")
    weighted = layers.Rescaling(FUSION_SFACE_WEIGHT, name="sface_weight", dtype="float32")(sface)
    return unit(layers.Concatenate(name="fusion", dtype="float32")([dlib, weighted]), "unit_sphere")
