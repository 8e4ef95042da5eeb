"""The training step (triplet mining or a margin loss through a cosine head), the loss settings, the devices."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from facenet.config import DEFAULT_LOSS, FUSED_TRAINED_BRANCHES, LOSSES, MARGIN_LOSSES, TRIPLET_LOSSES
from facenet.settings import scale_problem, triplet_margin_problem
from facenet.train.chips import TrainingError
from facenet.train.keep import kept
from facenet.train.margin import DEFAULTS, NormalizedClassifier, check_margin, make_margin_train_step
from facenet.train.triplet import triplet_loss

log = logging.getLogger(__name__)

"""Training losses: semi_hard and batch_hard triplet mining, the cosface, arcface and sphereface margin losses."""

TRIPLET_MARGIN = 0.5
"""The triplet losses' default margin (unit-sphere Euclidean distance)."""

Step = Callable[..., tuple[tf.Tensor, tf.Tensor]]
"""`step(x, y[, start]) -> (loss, second output)`; `start`: the batch's starting embeddings for the keep loss."""


@dataclass(frozen=True)
class LossSettings:
    """The loss of a run and its parameters: `margin` in the loss's own unit, `scale` (margin losses only)."""

    loss: str
    margin: float
    scale: float | None = None

    @property
    def is_margin(self) -> bool:
        return self.loss in MARGIN_LOSSES

    @property
    def second_output(self) -> str:
        """What the step returns beside the loss: the share of active triplets, or the head's accuracy."""
        return "head_accuracy" if self.is_margin else "active_fraction"


def loss_settings(loss: str, margin: float | None = None, scale: float | None = None) -> LossSettings:
    """The loss with its defaults filled in (margin.DEFAULTS for margin losses, TRIPLET_MARGIN for triplets);
    TrainingError for an unknown loss or a margin/scale it cannot use."""
    if loss not in LOSSES:
        raise TrainingError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if loss in TRIPLET_LOSSES:
        if scale is not None:
            log.warning("--scale is a setting of the margin losses; ignored with the %s triplet loss", loss)
        margin = TRIPLET_MARGIN if margin is None else margin
        problem = triplet_margin_problem(margin)
        if problem:
            raise TrainingError(f"margin {problem}")
        return LossSettings(loss, float(margin))
    margin = DEFAULTS[loss]["margin"] if margin is None else margin
    scale = DEFAULTS[loss]["scale"] if scale is None else scale
    problem = scale_problem(scale)
    if problem:
        raise TrainingError(f"scale {problem}")
    try:
        check_margin(loss, scale, margin)
    except ValueError as error:
        raise TrainingError(str(error)) from None
    return LossSettings(loss, float(margin), float(scale))


def make_train_step(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    margin: float,
    strategy: str = DEFAULT_LOSS,
    distribution: tf.distribute.Strategy | None = None,
    jit_compile: bool = False,
    keep: float = 0.0,
) -> Step:
    """`step(x, y[, start]) -> (loss, active_fraction)`: one compiled update on a batch (per replica under a
    distribution). With `keep` > 0 and `start` given, `keep * keep_loss(embeddings, start)` is added to the loss
    that is minimised; the returned loss is the triplet loss alone.

    The loss is computed in float32 whatever the compute dtype; the optimizer's `scale_loss` applies the
    loss scale of a LossScaleOptimizer (mixed precision) and is the identity otherwise. Under
    MirroredStrategy each replica's batch is its own P x K batch; gradients are summed, so each replica's
    loss is divided by the number of replicas.
    """
    distribution = distribution or tf.distribute.get_strategy()
    replicas = distribution.num_replicas_in_sync

    def replica_step(x: tuple[tf.Tensor, ...], y: tf.Tensor, *start: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            embeddings = tf.cast(model(list(x) if len(x) > 1 else x[0], training=True), tf.float32)
            loss, active = triplet_loss(y, embeddings, margin, strategy)
            scaled = optimizer.scale_loss((loss + kept(embeddings, start, keep)) / replicas)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss, active

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def step(x: tuple[tf.Tensor, ...], y: tf.Tensor, *start: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        loss, active = distribution.run(replica_step, args=(x, y, *start))
        mean = tf.distribute.ReduceOp.MEAN
        return distribution.reduce(mean, loss, axis=None), distribution.reduce(mean, active, axis=None)

    return step


def make_step(
    model: keras.Model,
    head: NormalizedClassifier | None,
    optimizer: keras.optimizers.Optimizer,
    settings: LossSettings,
    distribution: tf.distribute.Strategy | None = None,
    jit_compile: bool = False,
    keep: float = 0.0,
) -> Step:
    """The step of `settings.loss`: `step(x, y[, start]) -> (loss, active fraction | head accuracy)`; margin
    losses train `head` together with the model (y: class indices into the head); `keep`: the weight of
    the keep loss (`facenet.train.keep`), applied where the step is given `start`."""
    if settings.is_margin:
        return make_margin_train_step(model, head, optimizer, settings.loss, settings.scale, settings.margin,
                                      distribution=distribution, jit_compile=jit_compile, keep=keep)
    return make_train_step(model, optimizer, settings.margin, settings.loss, distribution, jit_compile, keep)


def build_optimizer(learning_rate: float, variables: list[tf.Variable]) -> keras.optimizers.Optimizer:
    """Adam (loss-scaled under mixed float16), its slots made here for `variables`, not inside the traced step."""
    optimizer = keras.optimizers.Adam(learning_rate)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(variables)
    return optimizer


def make_head(classes: int, dim: int, embeddings: np.ndarray, labels: np.ndarray) -> NormalizedClassifier:
    """A cosine head over `classes` training identities, each class vector its identity's mean embedding."""
    head = NormalizedClassifier(classes, name="margin_head")
    head.build((None, dim))
    head.init_from_centroids(embeddings, labels)
    return head


def freeze_batch_norm(model: keras.Model) -> None:
    """Batch-norm layers keep their pretrained statistics and scales: P x K batches of a few people would
    otherwise overwrite statistics learnt on millions of faces (resnet50 has them; SFace's are folded into its
    convolutions and the dlib twin has fixed affines). In the fused model only FUSED_TRAINED_BRANCHES train."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    if model.name == "fused_embedder":
        for branch in ("dlib_resnet", "sface"):
            model.get_layer(branch).trainable = branch.split("_")[0] in FUSED_TRAINED_BRANCHES


FLOAT32_LAYERS = ("dlib_preprocess",)
"""Layers that compute in float32 under mixed precision too (the dlib input scaling: 256**2 overflows float16)."""


def compute_in_global_policy(model: keras.Model) -> None:
    """Under mixed float16, the twins' layers compute in float16 (variables stay float32). Loaded from their cache
    they carry the float32 policy they were converted under, and the GPU path would silently run in float32."""
    if keras.mixed_precision.global_policy().name != "mixed_float16":
        return
    for branch in (layer for layer in model.layers if layer.name in ("dlib_resnet", "sface")):
        for layer in branch._flatten_layers(include_self=False, recursive=True):
            if not isinstance(layer, keras.layers.InputLayer) and layer.name not in FLOAT32_LAYERS:
                layer.dtype_policy = keras.DTypePolicy("mixed_float16")


@contextlib.contextmanager
def device_setup(devices: list[str] | None = None) -> Iterator[tf.distribute.Strategy]:
    """GPUs: mixed float16 (set before the model is built) and MirroredStrategy for 2+; CPU: float32 as is.

    `devices` (e.g. two logical CPUs, "/cpu:0", "/cpu:1"): the GPU path on exactly those devices, so that the
    suite runs it without a GPU. The previous dtype policy is restored afterwards, so models built later (the
    database's) are float32.
    """
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")] if devices is None else devices
    previous = keras.mixed_precision.global_policy()
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    distribution = tf.distribute.MirroredStrategy(devices) if len(gpus) > 1 else tf.distribute.get_strategy()
    log.info("training on %s", f"{len(gpus)} device(s), mixed float16" if gpus else "the CPU, float32")
    try:
        yield distribution
    finally:
        keras.mixed_precision.set_global_policy(previous)
