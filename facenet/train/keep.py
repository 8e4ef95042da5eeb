"""The keep loss: how far a batch's embeddings moved from where the run started (the same photo views, embedded
by the model as it was before training).

Triplet mining on a few hundred people of a new domain pulls the embedding wherever it separates *those* people;
the keep term holds every view near its starting point unless the mining loss pays for the move, so the blocks can
learn at a rate that otherwise costs clean photos (`config.KEEP_WEIGHTS`)."""

from __future__ import annotations

import tensorflow as tf


def keep_loss(embeddings: tf.Tensor, start: tf.Tensor) -> tf.Tensor:
    """Mean squared Euclidean distance between each embedding and its starting embedding (float32)."""
    moved = tf.cast(embeddings, tf.float32) - tf.cast(start, tf.float32)
    return tf.reduce_mean(tf.reduce_sum(tf.square(moved), axis=1))


def kept(embeddings: tf.Tensor, start: tuple[tf.Tensor, ...], keep: float) -> tf.Tensor | float:
    """The term a training step adds to its loss: `keep * keep_loss(embeddings, start[0])`; 0 without a start."""
    return keep * keep_loss(embeddings, start[0]) if keep and start else 0.0
