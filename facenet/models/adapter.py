"""A learned residual adapter over a frozen embedding: what `-t True` trains by default.

    y = unit(x + W2 · gelu(W1 · x + b1) + b2)

x is the frozen model's unit vector (256-d fused, 128-d dlib or SFace). W2 and b2 start at zero, so an untrained
adapter is the identity and recognition is unchanged until the guard keeps a better one. Training on the user's
domain (masked faces, a cheap camera, low light) only has to learn which directions of the embedding that domain
corrupts and how to weigh the rest: a few hundred thousand parameters, trained in seconds on the backbone's cached
vectors, where fine-tuning the backbones (15 M parameters) on a few hundred photos at a CPU's pace overfits or
barely moves.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

ADAPTER_LAYER = "adapter"


@keras.saving.register_keras_serializable(package="facenet")
class EmbeddingAdapter(layers.Layer):
    """unit(x + W2 · gelu(W1 · x + b1) + b2), the residual branch zero-initialised (identity at the start)."""

    def __init__(self, hidden: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hidden = int(hidden)

    def build(self, input_shape) -> None:
        dim = int(input_shape[-1])
        self.expand = layers.Dense(self.hidden, activation="gelu", name="expand", dtype="float32")
        self.expand.build((None, dim))
        self.project = layers.Dense(dim, kernel_initializer="zeros", name="project", dtype="float32")
        self.project.build((None, self.hidden))
        super().build(input_shape)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        y = x + self.project(self.expand(x))
        return y / ops.maximum(ops.norm(y, axis=-1, keepdims=True), 1e-12)

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden": self.hidden}


def with_adapter(base: keras.Model, hidden: int, weights: list[np.ndarray] | None = None) -> keras.Model:
    """`base` followed by an adapter (its weights when given), one model with the base's inputs and name.

    The base's layers are shared, not copied: `base` itself still computes the un-adapted embedding.
    """
    adapter = EmbeddingAdapter(hidden, name=ADAPTER_LAYER, dtype="float32")
    adapted = keras.Model(base.inputs, adapter(base.outputs[0]), name=base.name)
    if weights is not None:
        adapter.set_weights(weights)
    return adapted


def adapter_of(model: keras.Model) -> EmbeddingAdapter | None:
    """The model's adapter layer, or None."""
    return next((layer for layer in model.layers if isinstance(layer, EmbeddingAdapter)), None)
