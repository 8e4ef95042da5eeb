"""Online triplet losses (semi-hard and batch-hard mining) in pure TensorFlow.

Replacement for ``tensorflow_addons.losses.TripletSemiHardLoss``, which does not
work with Keras 3. Everything here is graph- and XLA-friendly: no Python control
flow on tensor values and no NumPy, so it runs under ``tf.function(jit_compile=True)``.
"""

from __future__ import annotations

import tensorflow as tf

from facenet.config import TRIPLET_LOSSES as STRATEGIES

ACTIVE_EPS = 1e-16


def _prepare(labels: tf.Tensor, embeddings: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Flatten labels to (B,) and cast embeddings to float32 (mixed-precision safe)."""
    labels = tf.reshape(tf.convert_to_tensor(labels), [-1])
    embeddings = tf.cast(tf.convert_to_tensor(embeddings), tf.float32)
    return labels, embeddings


def _masks(labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Return (positive_mask, negative_mask), both (B, B) bool; positives exclude i == j."""
    same = tf.equal(labels[:, None], labels[None, :])
    not_self = tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool))
    return tf.logical_and(same, not_self), tf.logical_not(same)


def _masked_mean(values: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean of ``values`` over ``mask`` and fraction of masked values > ACTIVE_EPS; 0 if mask is empty."""
    mask_f = tf.cast(mask, tf.float32)
    count = tf.maximum(tf.reduce_sum(mask_f), 1.0)
    loss = tf.reduce_sum(tf.where(mask, values, 0.0)) / count
    active = tf.logical_and(mask, values > ACTIVE_EPS)
    return loss, tf.reduce_sum(tf.cast(active, tf.float32)) / count


def pairwise_distances(embeddings: tf.Tensor, squared: bool = False) -> tf.Tensor:
    """(B, B) Euclidean distance matrix via the Gram matrix.

    Squared distances are clipped at 0 (rounding can make them slightly negative) and
    the diagonal is exactly 0. The square root is gradient-safe: where the squared
    distance is 0 the value and its gradient are 0 instead of NaN.
    """
    embeddings = tf.cast(embeddings, tf.float32)
    gram = tf.matmul(embeddings, embeddings, transpose_b=True)
    sq_norms = tf.linalg.diag_part(gram)
    d2 = tf.maximum(sq_norms[:, None] - 2.0 * gram + sq_norms[None, :], 0.0)
    off_diag = tf.logical_not(tf.eye(tf.shape(embeddings)[0], dtype=tf.bool))
    d2 = tf.where(off_diag, d2, 0.0)
    if squared:
        return d2
    positive = d2 > 0.0
    return tf.where(positive, tf.sqrt(tf.where(positive, d2, 1.0)), 0.0)


def _count_negatives_within(dist: tf.Tensor, neg_mask: tf.Tensor) -> tf.Tensor:
    """(B, B) int32: entry (a, p) counts the negatives n of a with d(a, n) <= d(a, p).

    Sorts the negative distances and all distances of a row together; the running count of negatives at
    the last element of each group of equal values is the answer for that group, so
    ties are handled exactly without relying on a stable sort.
    """
    batch = tf.shape(dist)[0]
    width = 2 * batch
    joint = tf.concat([tf.where(neg_mask, dist, float("inf")), dist], axis=1)
    is_neg = tf.concat([tf.cast(neg_mask, tf.int32), tf.zeros_like(dist, tf.int32)], axis=1)
    order = tf.argsort(joint, axis=1)
    sorted_values = tf.gather(joint, order, batch_dims=1)
    running = tf.cumsum(tf.gather(is_neg, order, batch_dims=1), axis=1)

    new_group = tf.concat(
        [tf.ones([batch, 1], tf.int32), tf.cast(sorted_values[:, 1:] != sorted_values[:, :-1], tf.int32)], axis=1
    )
    row_offset = tf.range(batch)[:, None] * width
    group = tf.cumsum(new_group, axis=1) - 1 + row_offset
    group_count = tf.math.unsorted_segment_max(running, group, batch * width)
    counts = tf.math.unsorted_segment_sum(tf.gather(group_count, group), order + row_offset, batch * width)
    return tf.reshape(counts, [batch, width])[:, batch:]


def semi_hard_triplet_loss(
    labels: tf.Tensor, embeddings: tf.Tensor, margin: float = 0.5
) -> tuple[tf.Tensor, tf.Tensor]:
    """Triplet loss with online semi-hard negative mining (FaceNet, Schroff et al. 2015).

    For every anchor-positive pair (a, p), the negative is the closest one that is still
    farther than p (d(a, n) > d(a, p)); if none exists, the farthest negative. The loss is
    the mean of max(d(a, p) - d(a, n) + margin, 0) over all anchor-positive pairs whose
    anchor has at least one negative (0 if there are none).

    Runs in O(B^2 log B) time and O(B^2) memory: no (B, B, B) tensor is materialised,
    also not under XLA (where ``tf.searchsorted`` would lower to one).

    Returns:
        (loss, active_fraction): scalar float32 tensors; ``active_fraction`` is the share
        of those pairs with a non-zero hinge.
    """
    labels, embeddings = _prepare(labels, embeddings)
    dist = pairwise_distances(embeddings)
    pos_mask, neg_mask = _masks(labels)

    sorted_neg = tf.sort(tf.where(neg_mask, dist, float("inf")), axis=1)
    num_neg = tf.reduce_sum(tf.cast(neg_mask, tf.int32), axis=1, keepdims=True)
    # Number of negatives with d(a, n) <= d(a, p) is the index of the first semi-hard
    # negative; clamping it to the last negative yields the farthest-negative fallback.
    num_closer = _count_negatives_within(dist, neg_mask)
    index = tf.minimum(num_closer, tf.maximum(num_neg - 1, 0))
    neg_dist = tf.gather(sorted_neg, index, batch_dims=1)

    valid = tf.logical_and(pos_mask, num_neg > 0)
    neg_dist = tf.where(valid, neg_dist, 0.0)
    triplet = tf.maximum(dist - neg_dist + margin, 0.0)
    return _masked_mean(triplet, valid)


def batch_hard_triplet_loss(
    labels: tf.Tensor, embeddings: tf.Tensor, margin: float = 0.5
) -> tuple[tf.Tensor, tf.Tensor]:
    """Batch-hard triplet loss (Hermans et al. 2017, "In Defense of the Triplet Loss").

    For each anchor with at least one positive and one negative: hinge of the hardest
    (farthest) positive minus the hardest (closest) negative plus margin, averaged over
    those anchors (0 if there are none).

    Returns:
        (loss, active_fraction): scalar float32 tensors.
    """
    labels, embeddings = _prepare(labels, embeddings)
    dist = pairwise_distances(embeddings)
    pos_mask, neg_mask = _masks(labels)

    hardest_pos = tf.reduce_max(tf.where(pos_mask, dist, 0.0), axis=1)
    hardest_neg = tf.reduce_min(tf.where(neg_mask, dist, float("inf")), axis=1)
    valid = tf.logical_and(tf.reduce_any(pos_mask, axis=1), tf.reduce_any(neg_mask, axis=1))
    hardest_neg = tf.where(valid, hardest_neg, 0.0)
    triplet = tf.maximum(hardest_pos - hardest_neg + margin, 0.0)
    return _masked_mean(triplet, valid)


def triplet_loss(
    labels: tf.Tensor,
    embeddings: tf.Tensor,
    margin: float = 0.5,
    strategy: str = "semi_hard",
) -> tuple[tf.Tensor, tf.Tensor]:
    """Dispatch to the triplet loss for ``strategy`` ("semi_hard" or "batch_hard")."""
    if strategy == "semi_hard":
        return semi_hard_triplet_loss(labels, embeddings, margin)
    if strategy == "batch_hard":
        return batch_hard_triplet_loss(labels, embeddings, margin)
    raise ValueError(f"Unknown triplet strategy {strategy!r}; expected one of {STRATEGIES}.")
