"""facenet.train.margin: closed-form logits, gradients, monotonic targets, the cosine head, a small training run."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from facenet.eval.metrics import auc
from facenet.train.margin import (
    DEFAULTS,
    MARGIN_LOSSES,
    NormalizedClassifier,
    make_margin_train_step,
    margin_logits,
    margin_loss,
)

NO_MARGIN = {"cosface": 0.0, "arcface": 0.0, "sphereface": 1}


# --------------------------------------------------------------------------- float64 reference from the definitions


def ref_target(theta: float, loss: str, margin: float, anneal: float = 0.0) -> float:
    """The true class's logit / s, straight from the papers' formulas in terms of the angle."""
    if loss == "cosface":
        return math.cos(theta) - margin
    if loss == "arcface":
        if theta + margin <= math.pi:
            return math.cos(theta + margin)
        return math.cos(theta) - (1.0 - math.cos(margin))
    m = int(margin)
    k = min(math.floor(m * theta / math.pi), m - 1)
    psi = (-1) ** k * math.cos(m * theta) - 2 * k
    return (anneal * math.cos(theta) + psi) / (1.0 + anneal)


def ref_loss(x: np.ndarray, w: np.ndarray, labels, loss: str, scale: float, margin: float) -> float:
    """Mean cross-entropy of the margin logits of raw embeddings x (B, D) against raw class vectors w (D, C)."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    cos = np.clip(x @ w, -1.0, 1.0)
    total = 0.0
    for i, y in enumerate(labels):
        logits = scale * cos[i].copy()
        logits[y] = scale * ref_target(math.acos(cos[i, y]), loss, margin)
        top = logits.max()
        total += top + math.log(np.exp(logits - top).sum()) - logits[y]
    return total / len(labels)


def unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


# --------------------------------------------------------------------------- closed form

# Class vectors at 0 and 90 degrees in the plane; embeddings at 30 (class 0), 100 (class 1), 170 (class 0) degrees.
# Angles to the true class: 30, 10, 170 degrees; to the other class: 60, 100, 80 degrees.
W = np.array([[1.0, 0.0], [0.0, 1.0]])
X = np.array([unit(30.0), unit(100.0), unit(170.0)])
LABELS = np.array([0, 1, 0])
TRUE, OTHER = (30.0, 10.0, 170.0), (60.0, 100.0, 80.0)


def hand_targets(loss: str, margin: float) -> list[float]:
    c = [math.cos(math.radians(t)) for t in TRUE]
    if loss == "cosface":  # cos θ − m
        return [c[0] - margin, c[1] - margin, c[2] - margin]
    if loss == "arcface":  # 30+28.6 and 10+28.6 degrees stay below 180; 170 + 28.6 does not: cos θ − (1 − cos m)
        return [
            math.cos(math.radians(30.0) + margin),
            math.cos(math.radians(10.0) + margin),
            c[2] - 1.0 + math.cos(margin),
        ]
    # SphereFace m = 4: 4θ = 120 (k=0), 40 (k=0), 680 degrees (k=3: −cos 680° − 6 = −cos 40° − 6).
    return [math.cos(math.radians(120.0)), math.cos(math.radians(40.0)), -math.cos(math.radians(40.0)) - 6.0]


@pytest.mark.parametrize("loss", MARGIN_LOSSES)
def test_logits_and_loss_closed_form(loss: str) -> None:
    scale, margin = DEFAULTS[loss]["scale"], DEFAULTS[loss]["margin"]
    targets = hand_targets(loss, margin)
    expected = np.zeros((3, 2))
    for i, (y, other) in enumerate(zip(LABELS, OTHER, strict=True)):
        expected[i, y] = scale * targets[i]
        expected[i, 1 - y] = scale * math.cos(math.radians(other))
    cosine = tf.constant(X @ W, tf.float32)
    logits = margin_logits(cosine, LABELS, loss, scale, margin)
    assert logits.dtype == tf.float32
    np.testing.assert_allclose(logits.numpy(), expected, atol=2e-5)
    hand_loss = np.mean(
        [math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(expected, LABELS, strict=True)]
    )
    np.testing.assert_allclose(float(margin_loss(LABELS, cosine, loss, scale, margin)), hand_loss, rtol=1e-5)
    np.testing.assert_allclose(hand_loss, ref_loss(X, W, LABELS, loss, scale, margin), rtol=1e-9)


def test_sphereface_anneal_mixes_with_cosine() -> None:
    cosine = tf.constant(X @ W, tf.float32)
    logits = margin_logits(cosine, LABELS, "sphereface", 1.0, 4, anneal=5.0).numpy()
    for i, y in enumerate(LABELS):
        c = math.cos(math.radians(TRUE[i]))
        assert logits[i, y] == pytest.approx((5.0 * c + hand_targets("sphereface", 4)[i]) / 6.0, abs=1e-6)


@pytest.mark.parametrize("loss", MARGIN_LOSSES)
def test_no_margin_is_normalized_softmax(loss: str) -> None:
    rng = np.random.default_rng(3)
    cosine = np.clip(rng.uniform(-1, 1, size=(6, 5)), -1, 1).astype(np.float32)
    labels = rng.integers(0, 5, size=6)
    logits = margin_logits(cosine, labels, loss, 16.0, NO_MARGIN[loss]).numpy()
    np.testing.assert_allclose(logits, 16.0 * cosine, atol=1e-5)
    plain = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, 16.0 * cosine))
    np.testing.assert_allclose(float(margin_loss(labels, cosine, loss, 16.0, NO_MARGIN[loss])), float(plain), rtol=1e-5)


@pytest.mark.parametrize(
    ("loss", "margin", "anneal"),
    [("cosface", 0.35, 0.0), ("arcface", 0.5, 0.0), ("arcface", 1.2, 0.0), ("sphereface", 2, 0.0),
     ("sphereface", 3, 0.0), ("sphereface", 4, 0.0), ("sphereface", 4, 5.0)],
)
def test_target_logit_continuous_and_decreasing(loss: str, margin: float, anneal: float) -> None:
    theta = np.linspace(0.0, math.pi, 1001)
    cosine = tf.constant(np.cos(theta)[:, None], tf.float32)
    target = margin_logits(cosine, np.zeros(len(theta)), loss, 1.0, margin, anneal).numpy()[:, 0]
    steps = np.diff(target)
    assert np.all(steps < 0), f"not strictly decreasing at θ = {theta[np.argmax(steps >= 0)]:.4f}"
    assert np.max(-steps) < 0.05  # no jump anywhere (the largest slope times the grid step is ~0.04)
    reference = [ref_target(t, loss, margin, anneal) for t in theta]
    np.testing.assert_allclose(target, reference, atol=2e-5)
    if loss == "arcface":
        assert target[0] == pytest.approx(math.cos(margin), abs=1e-5)
    if loss == "sphereface" and anneal == 0.0:
        assert target[-1] == pytest.approx(1 - 2 * margin, abs=1e-5)


# --------------------------------------------------------------------------- gradients


def _tf_gradients(x: np.ndarray, w: np.ndarray, labels, loss: str, scale: float, margin: float):
    head = NormalizedClassifier(w.shape[1])
    head.build(x.shape)
    head.kernel.assign(w.astype(np.float32))
    xt = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        value = margin_loss(labels, head(xt), loss, scale, margin)
    gx, gw = tape.gradient(value, [xt, head.kernel])
    return float(value), gx.numpy(), gw.numpy()


@pytest.mark.parametrize("loss", MARGIN_LOSSES)
def test_gradient_matches_finite_differences(loss: str) -> None:
    rng = np.random.default_rng(11)
    x, w = rng.normal(size=(4, 3)), rng.normal(size=(3, 3))
    labels = np.array([0, 1, 2, 1])
    scale, margin = 4.0, DEFAULTS[loss]["margin"]
    value, gx, gw = _tf_gradients(x, w, labels, loss, scale, margin)
    assert value == pytest.approx(ref_loss(x, w, labels, loss, scale, margin), rel=1e-5)
    eps = 1e-6
    for array, grad in ((x, gx), (w, gw)):
        numeric = np.zeros_like(array)
        for idx in np.ndindex(*array.shape):
            plus, minus = array.copy(), array.copy()
            plus[idx] += eps
            minus[idx] -= eps
            args = (plus, w) if array is x else (x, plus)
            back = (minus, w) if array is x else (x, minus)
            numeric[idx] = (ref_loss(*args, labels, loss, scale, margin) - ref_loss(*back, labels, loss, scale, margin))
            numeric[idx] /= 2 * eps
        assert np.abs(numeric).max() > 1e-2
        np.testing.assert_allclose(grad, numeric, atol=2e-4)


@pytest.mark.parametrize("loss", MARGIN_LOSSES)
def test_gradients_finite_at_zero_and_pi(loss: str) -> None:
    w = np.array([[1.0, 0.0], [0.0, 1.0]])
    # θ = 0 and π exactly, and 1e-4 rad away, to the true class 0.
    x = np.array([unit(0.0), unit(180.0), unit(0.0057), unit(179.9943)])
    value, gx, gw = _tf_gradients(x, w, np.zeros(4, int), loss, 30.0, DEFAULTS[loss]["margin"])
    assert math.isfinite(value)
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gw))
    assert np.abs(gx).max() < 1e3 and np.abs(gw).max() < 1e3
    # Straight on the cosine too (the head's clip can hide a cosine of exactly ±1): target at ±1 and one ulp inside.
    # The other class at cosine 0.95 keeps the softmax off saturation, so no zero upstream gradient masks an inf.
    one, zero = np.float32(1.0), np.float32(0.0)
    target = np.array([one, -one, np.nextafter(one, zero), np.nextafter(-one, zero)], np.float32)
    cosine = tf.constant(np.stack([target, np.full(4, 0.95, np.float32)], axis=1))
    with tf.GradientTape() as tape:
        tape.watch(cosine)
        value = margin_loss(np.zeros(4, int), cosine, loss, 30.0, DEFAULTS[loss]["margin"])
    assert math.isfinite(float(value)) and np.all(np.isfinite(tape.gradient(value, cosine).numpy()))


# --------------------------------------------------------------------------- the head


def test_classifier_columns_unit_norm_and_cosines() -> None:
    head = NormalizedClassifier(7)
    head.build((None, 5))
    head.kernel.assign(3.0 * np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32))
    columns = head(np.eye(5, dtype=np.float32)).numpy()  # row i: coordinate i of every class vector
    np.testing.assert_allclose(np.linalg.norm(columns, axis=0), 1.0, atol=1e-6)
    np.testing.assert_allclose(head.unit_kernel().numpy(), columns, atol=1e-7)
    cosine = head(10.0 * np.random.default_rng(1).normal(size=(20, 5)).astype(np.float32)).numpy()
    assert cosine.shape == (20, 7) and cosine.dtype == np.float32
    assert np.all(np.abs(cosine) <= 1.0 + 1e-6)


def test_classifier_serializable_and_float32_under_mixed_precision() -> None:
    head = NormalizedClassifier(4, name="head")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert isinstance(restored, NormalizedClassifier) and restored.num_classes == 4 and restored.name == "head"
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        assert NormalizedClassifier(4)(np.ones((2, 3), np.float16)).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy(previous)
    cos16 = tf.constant(X @ W, tf.float16)
    assert margin_loss(LABELS, cos16, "arcface", 30.0, 0.5).dtype == tf.float32


def test_init_from_centroids() -> None:
    rng = np.random.default_rng(5)
    embeddings = rng.normal(size=(12, 4))
    labels = np.arange(12) % 3
    head = NormalizedClassifier(4)
    head.build((None, 4))
    untouched = head.kernel.numpy()[:, 3].copy()
    head.init_from_centroids(embeddings, labels)
    unit_rows = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    for cls in range(3):
        mean = unit_rows[labels == cls].mean(axis=0)
        np.testing.assert_allclose(head.kernel.numpy()[:, cls], mean / np.linalg.norm(mean), atol=1e-6)
    np.testing.assert_allclose(head.kernel.numpy()[:, 3], untouched)  # no samples: left as it was
    with pytest.raises(ValueError, match="out of range"):
        head.init_from_centroids(embeddings, np.full(12, 4))


def test_unknown_loss_and_bad_settings_raise() -> None:
    cosine = tf.constant(X @ W, tf.float32)
    with pytest.raises(ValueError, match="normface"):
        margin_logits(cosine, LABELS, "normface", 30.0, 0.3)
    with pytest.raises(ValueError, match="normface"):
        margin_loss(LABELS, cosine, "normface", 30.0, 0.3)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="normface"):
        make_margin_train_step(model, NormalizedClassifier(2), keras.optimizers.Adam(), "normface", 30.0, 0.3)
    for loss, scale, margin in (("sphereface", 30.0, 2.5), ("sphereface", 30.0, 0), ("arcface", 30.0, 4.0),
                                ("cosface", 0.0, 0.35), ("cosface", 30.0, -0.1)):
        with pytest.raises(ValueError):
            margin_logits(cosine, LABELS, loss, scale, margin)


def test_jit_compile_matches_eager() -> None:
    rng = np.random.default_rng(2)
    cosine = tf.constant(rng.uniform(-1, 1, size=(8, 5)), tf.float32)
    labels = tf.constant(rng.integers(0, 5, size=8), tf.int32)
    compiled = tf.function(
        lambda c, y: [margin_loss(y, c, loss, **DEFAULTS[loss]) for loss in MARGIN_LOSSES], jit_compile=True
    )
    for loss, jitted in zip(MARGIN_LOSSES, compiled(cosine, labels), strict=True):
        np.testing.assert_allclose(float(jitted), float(margin_loss(labels, cosine, loss, **DEFAULTS[loss])),
                                   rtol=1e-5)


# --------------------------------------------------------------------------- training


def clustered(rng: np.random.Generator, means: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Identity features (class mean + noise) next to 24 louder nuisance features that say nothing of identity."""
    labels = np.repeat(np.arange(len(means)), per_class)
    identity = means[labels] + 0.5 * rng.normal(size=(len(labels), means.shape[1]))
    nuisance = 3.0 * rng.normal(size=(len(labels), 24))
    return np.concatenate([identity, nuisance], axis=1).astype(np.float32), labels.astype(np.int32)


@pytest.mark.parametrize("loss", MARGIN_LOSSES)
def test_training_improves_verification_on_held_out_classes(loss: str) -> None:
    """A random linear embedding is dominated by the nuisance features; training must learn to ignore them,
    which shows as a higher verification AUC on held-out samples of 8 classes never seen in training."""
    rng = np.random.default_rng(0)
    means = rng.normal(size=(20, 8))
    x_train, y_train = clustered(rng, means[:12], 20)
    x_test, y_test = clustered(rng, means[12:], 10)
    a, b = np.triu_indices(len(y_test), 1)
    same = y_test[a] == y_test[b]

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(8), keras.layers.UnitNormalization()])

    def verification_auc() -> float:
        embeddings = model(x_test).numpy()
        return auc(np.linalg.norm(embeddings[a] - embeddings[b], axis=1), same)

    head = NormalizedClassifier(12)
    head.init_from_centroids(model(x_train).numpy(), y_train)
    step = make_margin_train_step(model, head, keras.optimizers.Adam(1e-2), loss, **DEFAULTS[loss])
    before = verification_auc()
    kernel_before = head.kernel.numpy().copy()
    for _ in range(150):
        batch = rng.choice(len(y_train), 48, replace=False)
        value, accuracy = step(tf.constant(x_train[batch]), tf.constant(y_train[batch]))
    after = verification_auc()
    assert before < 0.6 and after > before + 0.2, (before, after)
    assert math.isfinite(float(value)) and float(accuracy) > 0.8
    assert not np.allclose(head.kernel.numpy(), kernel_before)  # the head is trained too


def test_train_step_under_mixed_precision() -> None:
    """float16 model, float32 head and loss, a LossScaleOptimizer: the step runs and both parts learn."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4),
                                  keras.layers.UnitNormalization(dtype="float32")])
        head = NormalizedClassifier(3)
        optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-2))
        step = make_margin_train_step(model, head, optimizer, "arcface", **DEFAULTS["arcface"])
        x = tf.constant(np.random.default_rng(1).normal(size=(12, 6)), tf.float32)
        y = tf.constant(np.arange(12) % 3, tf.int32)
        first = [v.numpy().copy() for v in model.trainable_variables + head.trainable_variables]
        for _ in range(3):
            value, accuracy = step(x, y)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert value.dtype == tf.float32 and math.isfinite(float(value)) and 0.0 <= float(accuracy) <= 1.0
    assert model.layers[0].kernel.dtype == "float32" and head.kernel.dtype == "float32"
    for before, variable in zip(first, model.trainable_variables + head.trainable_variables, strict=True):
        assert not np.allclose(before, variable.numpy())
