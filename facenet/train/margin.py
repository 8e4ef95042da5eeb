"""Normalized-softmax margin losses (CosFace, ArcFace, SphereFace) and the cosine classifier head they train.

The alternative to the triplet losses of `facenet.train.triplet`: a `NormalizedClassifier` holds one unit weight vector
per training identity, the embedding's cosine to each is a logit, and a margin on the true class's logit forces
every embedding to be closer (in angle) to its own class than to any other by that margin. The head only exists
for training and is thrown away; recognition keeps comparing embeddings with each other.

With cos θ_j the cosine of an embedding to class j and y its label, the logits are s·cos θ_j for j != y and

- CosFace (LMCL / AM-Softmax, Wang et al. 2018): s·(cos θ_y − m), an additive cosine margin;
- ArcFace (Deng et al. 2019): s·cos(θ_y + m), an additive angular margin;
- SphereFace (A-Softmax, Liu et al. 2017): s·ψ(θ_y), ψ(θ) = (−1)^k cos(mθ) − 2k on θ ∈ [kπ/m, (k+1)π/m], a
  multiplicative angular margin with an integer m.

Everything is graph- and XLA-friendly and computed in float32 whatever the compute dtype (mixed precision).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from facenet.config import MARGIN_LOSSES
from facenet.train.keep import kept

DEFAULTS: dict[str, dict[str, float]] = {
    "cosface": {"scale": 30.0, "margin": 0.35},
    "arcface": {"scale": 30.0, "margin": 0.5},
    "sphereface": {"scale": 30.0, "margin": 4},
}
"""Scale s and margin m per loss (the CLI's -m is the chosen loss's margin).

s = 30 for all three: the usual value for a few to a few thousand identities (AM-Softmax's setting; the paper's
64 is for 10k+ classes, where the bound s >= (C-1)/C * ln((C-1) P / (1-P)) on the scale needed to reach a target
probability P grows with ln C). With a handful of people a large s only makes the softmax saturate early, which on
small data acts as a brake rather than a problem. The margins are the papers' own: CosFace 0.35 (AM-Softmax's best,
with s = 30), ArcFace 0.5 rad (about 29 degrees), SphereFace m = 4. They ask for more separation than a pretrained
face embedding has between its people (a photo is typically 15-20 degrees from its own class centre and 45-55
degrees from the others): that gap is what fine-tuning pushes on, and the validation guard in `facenet.train`
refuses weights that got worse.
"""

SIN_EPS = 1e-12
"""Floor under sin²θ in ArcFace: keeps the value and gradient finite at θ = 0 and θ = π (cosine exactly ±1)."""


def check_margin(loss: str, scale: float, margin: float) -> None:
    """Raise ValueError for an unknown loss name or a scale/margin the loss cannot use."""
    if loss not in MARGIN_LOSSES:
        raise ValueError(f"Unknown margin loss {loss!r}; expected one of {MARGIN_LOSSES}.")
    if not scale > 0:
        raise ValueError(f"the scale must be positive, got {scale}")
    if loss == "sphereface":
        if float(margin) != int(margin) or int(margin) < 1:
            raise ValueError(f"the SphereFace margin is an integer >= 1 (1 = no margin), got {margin}")
    elif not 0 <= margin < (math.pi if loss == "arcface" else 2.0):
        limit = "π" if loss == "arcface" else "2"
        raise ValueError(f"the {loss} margin must be in [0, {limit}), got {margin}")


def cosface_target(cosine: tf.Tensor, margin: float) -> tf.Tensor:
    """cos θ − m."""
    return cosine - margin


def arcface_target(cosine: tf.Tensor, margin: float) -> tf.Tensor:
    """cos(θ + m) while θ + m <= π, else cos θ − (1 − cos m): continuous and strictly decreasing over [0, π].

    cos(θ + m) alone turns back up once θ + m passes π, rewarding embeddings that move away from their class.
    InsightFace's fallback cos θ − m·sin m jumps down at θ = π − m (from −1 to −cos m − m·sin m); the CosFace-style
    margin 1 − cos m used here equals cos θ − cos(θ + m) at θ = π − m, so the two pieces meet. "Easy margin" (no
    margin at all for θ > π/2) is not offered: it drops the margin exactly where samples are hardest.

    cos(θ + m) = cos θ·cos m − sin θ·sin m with sin θ = sqrt(max(1 − cos²θ, SIN_EPS)): no acos, whose gradient is
    infinite at cos θ = ±1.
    """
    sine = tf.sqrt(tf.maximum(1.0 - tf.square(cosine), SIN_EPS))
    shifted = cosine * math.cos(margin) - sine * math.sin(margin)
    return tf.where(cosine >= -math.cos(margin), shifted, cosine - (1.0 - math.cos(margin)))


def sphereface_target(cosine: tf.Tensor, margin: int, anneal: float = 0.0) -> tf.Tensor:
    """ψ(θ) = (−1)^k cos(mθ) − 2k on [kπ/m, (k+1)π/m], mixed as (λ cos θ + ψ(θ)) / (1 + λ) with λ = `anneal`.

    cos(mθ) is the Chebyshev polynomial T_m(cos θ) and k counts the j in 1..m with cos θ <= cos(jπ/m), as in the
    original implementation: no acos, smooth bounded gradients everywhere. ψ falls from 1 at θ = 0 to 1 − 2m at π.
    The paper anneals λ from 1000 down to 5 during training to make A-Softmax converge; a fixed λ > 0 softens the
    margin (λ = 0: the full margin, m = 1: none).
    """
    m = int(margin)
    previous, chebyshev = tf.ones_like(cosine), cosine
    for _ in range(m - 1):
        previous, chebyshev = chebyshev, 2.0 * cosine * chebyshev - previous
    k = tf.add_n([tf.cast(cosine <= math.cos(j * math.pi / m), tf.float32) for j in range(1, m + 1)])
    sign = 1.0 - 2.0 * tf.math.floormod(k, 2.0)
    psi = sign * chebyshev - 2.0 * k
    return (anneal * cosine + psi) / (1.0 + anneal)


def margin_logits(
    cosine: tf.Tensor, labels: tf.Tensor, loss: str, scale: float, margin: float, anneal: float = 0.0
) -> tf.Tensor:
    """(B, C) float32 logits: s·cos θ_j, with the true class's entry replaced by the loss's margin target.

    `cosine` (B, C) is clipped to [-1, 1] (rounding can leave it just outside); `labels` (B,) or (B, 1) int.
    `anneal` is SphereFace's λ (ignored by the other losses).
    """
    check_margin(loss, scale, margin)
    cosine = tf.clip_by_value(tf.cast(cosine, tf.float32), -1.0, 1.0)
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    target_cos = tf.gather(cosine, labels, batch_dims=1)
    if loss == "cosface":
        target = cosface_target(target_cos, margin)
    elif loss == "arcface":
        target = arcface_target(target_cos, margin)
    else:
        target = sphereface_target(target_cos, int(margin), anneal)
    is_target = tf.one_hot(labels, tf.shape(cosine)[1], on_value=True, off_value=False, dtype=tf.bool)
    return scale * tf.where(is_target, target[:, None], cosine)


def margin_loss(
    labels: tf.Tensor, cosine: tf.Tensor, loss: str, scale: float, margin: float, anneal: float = 0.0
) -> tf.Tensor:
    """Mean softmax cross-entropy (scalar float32) over `margin_logits`."""
    logits = margin_logits(cosine, labels, loss, scale, margin, anneal)
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


@keras.saving.register_keras_serializable(package="facenet")
class NormalizedClassifier(keras.layers.Layer):
    """Cosine classifier: (B, D) embeddings -> (B, C) cosines to C unit class vectors (a (D, C) kernel).

    Inputs and kernel columns are both L2-normalized in `call`, so the output is a true cosine whatever their
    norms. Computes in float32 by default (mixed precision: the margin losses need the cosines' precision).
    Trained alongside the embedding, thrown away after.
    """

    def __init__(self, num_classes: int, **kwargs) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)

    def build(self, input_shape: tuple) -> None:
        self.kernel = self.add_weight(
            name="kernel",
            shape=(int(input_shape[-1]), self.num_classes),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
        )

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        x = x / ops.maximum(ops.norm(x, axis=-1, keepdims=True), 1e-12)
        return ops.matmul(x, self.unit_kernel())

    def unit_kernel(self):
        """The (D, C) kernel with unit columns: the class vectors."""
        kernel = ops.cast(self.kernel, self.compute_dtype)
        return kernel / ops.maximum(ops.norm(kernel, axis=0, keepdims=True), 1e-12)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.num_classes)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes}

    def init_from_centroids(self, embeddings: np.ndarray, labels: np.ndarray) -> None:
        """Set each class vector to its class's normalized mean (unit) embedding; classes without any keep theirs.

        Fine-tuning starts with a head that already classifies, so the first steps move the embedding by the
        margin rather than by a random head (and the head barely moves at the small learning rates used there).
        """
        x = np.asarray(embeddings, np.float64)
        labels = np.asarray(labels).reshape(-1)
        if x.ndim != 2 or len(x) != len(labels):
            raise ValueError(f"embeddings {x.shape} and labels {labels.shape} do not match")
        if not self.built:
            self.build(x.shape)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        kernel = np.array(ops.convert_to_numpy(self.kernel), np.float64)
        for cls in np.unique(labels):
            if not 0 <= cls < self.num_classes:
                raise ValueError(f"label {cls} out of range for {self.num_classes} classes")
            mean = x[labels == cls].mean(axis=0)
            norm = np.linalg.norm(mean)
            if norm > 1e-12:
                kernel[:, cls] = mean / norm
        self.kernel.assign(kernel.astype(self.kernel.dtype))


def _model_input(x):
    """A tuple of batches (one per model input, as facenet.train's datasets give) as the model takes it."""
    if isinstance(x, (tuple, list)):
        return list(x) if len(x) > 1 else x[0]
    return x


def make_margin_train_step(
    model: keras.Model,
    head: NormalizedClassifier,
    optimizer: keras.optimizers.Optimizer,
    loss: str,
    scale: float,
    margin: float,
    anneal: float = 0.0,
    distribution: tf.distribute.Strategy | None = None,
    jit_compile: bool = False,
    keep: float = 0.0,
) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
    """`step(x, y[, start]) -> (loss, accuracy)`: one update of the embedding model and the head on a batch
    (`keep`: the keep loss's weight, `facenet.train.keep`, applied where the step is given `start`).

    Like `facenet.train.make_train_step`: loss in float32, `optimizer.scale_loss` for a LossScaleOptimizer,
    per-replica loss divided by the replicas under a distribution. `x` is one batch, or a tuple/list of batches
    (one per model input, as facenet.train's datasets give them); `y` holds class indices into the head;
    `accuracy` is the share of the batch whose nearest class vector (plain cosine, no margin) is its own.
    The head is built from the model's output size and the optimizer built on both variable sets here, outside
    the traced step, when they are not yet (under a distribution: call this inside its scope). An optimizer
    built beforehand must have been built on model + head variables (Keras rejects variables it has no slots for).
    """
    check_margin(loss, scale, margin)
    distribution = distribution or tf.distribute.get_strategy()
    replicas = distribution.num_replicas_in_sync
    if not head.built:
        head.build(model.output_shape)
    variables = model.trainable_variables + head.trainable_variables
    if not optimizer.built:
        optimizer.build(variables)

    def replica_step(x: tf.Tensor, y: tf.Tensor, *start: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        with tf.GradientTape() as tape:
            embeddings = tf.cast(model(_model_input(x), training=True), tf.float32)
            cosine = tf.cast(head(embeddings, training=True), tf.float32)
            value = margin_loss(y, cosine, loss, scale, margin, anneal)
            scaled = optimizer.scale_loss((value + kept(embeddings, start, keep)) / replicas)
        grads = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        hits = tf.equal(tf.argmax(cosine, axis=1, output_type=tf.int32), y)
        return value, tf.reduce_mean(tf.cast(hits, tf.float32))

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def step(x: tf.Tensor, y: tf.Tensor, *start: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        value, accuracy = distribution.run(replica_step, args=(x, y, *start))
        mean = tf.distribute.ReduceOp.MEAN
        return distribution.reduce(mean, value, axis=None), distribution.reduce(mean, accuracy, axis=None)

    return step
