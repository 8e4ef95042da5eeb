"""Tests for facenet.train.triplet against a brute-force NumPy reference and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from facenet.train.triplet import (
    batch_hard_triplet_loss,
    pairwise_distances,
    semi_hard_triplet_loss,
    triplet_loss,
)

ATOL = 1e-5
DUPLICATE_ATOL = 1e-3
STRATEGY_FNS = {"semi_hard": semi_hard_triplet_loss, "batch_hard": batch_hard_triplet_loss}


# --------------------------------------------------------------------------- reference


def ref_distances(embeddings: np.ndarray) -> list[list[float]]:
    e = np.asarray(embeddings, dtype=np.float64)
    return np.sqrt(((e[:, None, :] - e[None, :, :]) ** 2).sum(-1)).tolist()


def ref_semi_hard(labels, embeddings, margin: float) -> dict:
    """Explicit loop over all (a, p, n) triplets, following the definition literally."""
    labels = np.asarray(labels).reshape(-1).tolist()
    d = ref_distances(embeddings)
    n_items = len(labels)
    values, fallbacks = [], 0
    for a in range(n_items):
        for p in range(n_items):
            if p == a or labels[p] != labels[a]:
                continue
            semi_hard, hardest_fallback, has_negative = math.inf, -math.inf, False
            for n in range(n_items):
                if labels[n] == labels[a]:
                    continue
                has_negative = True
                if d[a][n] > d[a][p]:
                    semi_hard = min(semi_hard, d[a][n])
                hardest_fallback = max(hardest_fallback, d[a][n])
            if not has_negative:
                continue
            if semi_hard == math.inf:
                fallbacks += 1
                d_an = hardest_fallback
            else:
                d_an = semi_hard
            values.append(max(d[a][p] - d_an + margin, 0.0))
    return _summary(values, fallbacks)


def ref_batch_hard(labels, embeddings, margin: float) -> dict:
    labels = np.asarray(labels).reshape(-1).tolist()
    d = ref_distances(embeddings)
    n_items = len(labels)
    values = []
    for a in range(n_items):
        hardest_pos, hardest_neg = None, None
        for x in range(n_items):
            if x == a:
                continue
            if labels[x] == labels[a]:
                hardest_pos = d[a][x] if hardest_pos is None else max(hardest_pos, d[a][x])
            else:
                hardest_neg = d[a][x] if hardest_neg is None else min(hardest_neg, d[a][x])
        if hardest_pos is None or hardest_neg is None:
            continue
        values.append(max(hardest_pos - hardest_neg + margin, 0.0))
    return _summary(values, 0)


def _summary(values: list[float], fallbacks: int) -> dict:
    if not values:
        return {"loss": 0.0, "active": 0.0, "count": 0, "fallbacks": fallbacks}
    return {
        "loss": float(np.mean(values)),
        "active": float(np.mean([v > 1e-16 for v in values])),
        "count": len(values),
        "fallbacks": fallbacks,
    }


REFERENCES = {"semi_hard": ref_semi_hard, "batch_hard": ref_batch_hard}


# --------------------------------------------------------------------------- batches


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_batch(seed: int) -> tuple[np.ndarray, np.ndarray, float, str]:
    """Seeded random batch; the scenario cycles with the seed."""
    rng = np.random.default_rng(seed)
    scenario = ["random", "tight_negatives", "singletons", "duplicates", "single_identity"][seed % 5]
    n_items = int(rng.integers(2, 41))
    dim = int(rng.choice([2, 3, 8, 16, 64]))
    margin = float(rng.choice([0.2, 0.5, 1.0]))

    if scenario == "single_identity":
        labels = np.full(n_items, int(rng.integers(0, 100)))
    elif scenario == "singletons":
        n_items = max(n_items, 4)
        n_multi = n_items // 2
        labels = np.concatenate([rng.integers(0, 3, size=n_multi), 100 + np.arange(n_items - n_multi)])
    else:
        labels = rng.integers(0, int(rng.integers(1, n_items + 1)), size=n_items)
    rng.shuffle(labels)

    if scenario == "tight_negatives":
        # Identity centres close together, large within-identity spread: many positives
        # are farther than every negative, so the farthest-negative fallback is used.
        base = rng.normal(size=dim)
        centres = base + 0.05 * rng.normal(size=(labels.max() + 1, dim))
        emb = centres[labels] + 0.3 * rng.normal(size=(n_items, dim))
    else:
        emb = rng.normal(size=(n_items, dim))

    if scenario == "duplicates":
        n_dup = max(1, n_items // 3)
        src = rng.integers(0, n_items, size=n_dup)
        dst = rng.integers(0, n_items, size=n_dup)
        emb[dst] = emb[src]

    return labels.astype(np.int32), l2_normalize(emb).astype(np.float32), margin, scenario


SEEDS = list(range(60))


def run_tf(strategy: str, labels, emb, margin: float) -> tuple[float, float]:
    loss, active = STRATEGY_FNS[strategy](tf.constant(labels), tf.constant(emb), margin)
    return float(loss), float(active)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("strategy", ["semi_hard", "batch_hard"])
@pytest.mark.parametrize("seed", SEEDS)
def test_matches_reference_on_random_batches(strategy: str, seed: int) -> None:
    labels, emb, margin, scenario = make_batch(seed)
    ref = REFERENCES[strategy](labels, emb, margin)
    loss, active = run_tf(strategy, labels, emb, margin)
    # Identical float32 vectors are up to ~3e-4 apart through the Gram matrix (sqrt of a d^2 rounding of ~1e-7),
    # where the float64 reference says 0: "duplicates" batches differ by that much, others by float noise.
    np.testing.assert_allclose(loss, ref["loss"], atol=DUPLICATE_ATOL if scenario == "duplicates" else ATOL,
                               err_msg=scenario)
    if scenario != "duplicates":
        np.testing.assert_allclose(active, ref["active"], atol=1e-6, err_msg=scenario)
    if scenario == "single_identity":
        assert loss == 0.0 and active == 0.0 and ref["count"] == 0


def test_random_batches_cover_both_semi_hard_branches() -> None:
    """The seeded batches really exercise the fallback and the semi-hard branch."""
    fallbacks, pairs, nonzero = 0, 0, 0
    for seed in SEEDS:
        labels, emb, margin, scenario = make_batch(seed)
        ref = ref_semi_hard(labels, emb, margin)
        fallbacks += ref["fallbacks"]
        pairs += ref["count"]
        nonzero += ref["loss"] > 0
    assert 0 < fallbacks < pairs
    assert nonzero > len(SEEDS) // 2


def test_semi_hard_closed_form_unit_circle() -> None:
    # Chord length between unit-circle points separated by g degrees: 2 sin(g / 2).
    # A=0deg, P=60deg (id 0); N1=90deg, N2=210deg (id 1); margin 0.5.
    #   (A, P):   d=c(60)=1;        negatives c(90)=sqrt2, c(150)=2sin75; semi-hard = sqrt2
    #   (P, A):   d=1;              negatives c(30)=2sin15, c(150)=2sin75; semi-hard = 2sin75
    #   (N1, N2): d=c(120)=sqrt3;   negatives c(90)=sqrt2, c(30)=2sin15; none > sqrt3 -> max sqrt2
    #   (N2, N1): d=sqrt3;          negatives c(150)=2sin75 (twice); semi-hard = 2sin75
    angles = np.deg2rad([0.0, 60.0, 90.0, 210.0])
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    labels = np.array([0, 0, 1, 1])
    s2, s3, c150 = math.sqrt(2.0), math.sqrt(3.0), 2.0 * math.sin(math.radians(75.0))
    terms = [
        max(1.0 - s2 + 0.5, 0.0),  # 0.0858
        max(1.0 - c150 + 0.5, 0.0),  # -0.432 -> 0
        max(s3 - s2 + 0.5, 0.0),  # 0.8178 (fallback)
        max(s3 - c150 + 0.5, 0.0),  # 0.3002
    ]
    expected = sum(terms) / 4.0
    assert expected == pytest.approx(0.300956, abs=1e-6)
    loss, active = semi_hard_triplet_loss(labels, emb, margin=0.5)
    np.testing.assert_allclose(float(loss), expected, atol=1e-6)
    np.testing.assert_allclose(float(active), 3.0 / 4.0, atol=1e-7)


def test_batch_hard_closed_form_unit_circle() -> None:
    # Same points; per anchor hardest positive (max d) and hardest negative (min d):
    #   A:  pos 1,     neg min(sqrt2, 2sin75) = sqrt2
    #   P:  pos 1,     neg min(2sin15, 2sin75) = 2sin15
    #   N1: pos sqrt3, neg min(sqrt2, 2sin15) = 2sin15
    #   N2: pos sqrt3, neg 2sin75
    angles = np.deg2rad([0.0, 60.0, 90.0, 210.0])
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    labels = np.array([[0], [0], [1], [1]])  # (B, 1) labels are flattened
    s2, s3 = math.sqrt(2.0), math.sqrt(3.0)
    c30, c150 = 2.0 * math.sin(math.radians(15.0)), 2.0 * math.sin(math.radians(75.0))
    terms = [1.0 - s2 + 0.5, 1.0 - c30 + 0.5, s3 - c30 + 0.5, s3 - c150 + 0.5]
    expected = sum(terms) / 4.0
    assert expected == pytest.approx(0.770690, abs=1e-6)
    loss, active = triplet_loss(labels, emb, 0.5, strategy="batch_hard")
    np.testing.assert_allclose(float(loss), expected, atol=1e-6)
    np.testing.assert_allclose(float(active), 1.0, atol=1e-7)


def test_closed_form_separated_with_singleton() -> None:
    # id 0 at 0deg and 10deg, singleton id 1 at 180deg (only a negative).
    # Pairs (0,1), (1,0): d_ap = 2sin5 = 0.1743; negative d = 2 or 2sin85 = 1.9924;
    # 0.1743 - 1.99 + 0.5 < 0, so the loss and active fraction are 0 for both strategies.
    angles = np.deg2rad([0.0, 10.0, 180.0])
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    for strategy in STRATEGY_FNS:
        loss, active = triplet_loss([0, 0, 1], emb, 0.5, strategy=strategy)
        assert float(loss) == 0.0 and float(active) == 0.0
    # With margin 2.0 every hinge is active: semi-hard uses the closest negative above
    # d_ap from each anchor: from 0deg it is 2 (180deg gap), from 10deg it is 2sin85.
    d_ap, c170 = 2.0 * math.sin(math.radians(5.0)), 2.0 * math.sin(math.radians(85.0))
    expected = ((d_ap - 2.0 + 2.0) + (d_ap - c170 + 2.0)) / 2.0
    loss, active = triplet_loss([0, 0, 1], emb, 2.0, strategy="semi_hard")
    np.testing.assert_allclose(float(loss), expected, atol=1e-6)
    assert float(active) == 1.0


def test_pairwise_distances_closed_form() -> None:
    emb = tf.constant([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [3.0, 0.0]])
    expected = np.array([[0, 3, 4, 3], [3, 0, 5, 0], [4, 5, 0, 5], [3, 0, 5, 0]], np.float32)
    np.testing.assert_allclose(pairwise_distances(emb).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(pairwise_distances(emb, squared=True).numpy(), expected**2, atol=1e-5)
    with tf.GradientTape() as tape:
        tape.watch(emb)
        total = tf.reduce_sum(pairwise_distances(emb))
    grad = tape.gradient(total, emb).numpy()
    assert np.all(np.isfinite(grad))
    # d/dx0 of sum_ij d_ij for x0=(0,0): 2 * sum_j (x0 - xj)/d_0j = 2*((-1,0)+(0,-1)+(-1,0)).
    np.testing.assert_allclose(grad[0], [-4.0, -2.0], atol=1e-5)


def test_pairwise_distances_clipped_for_near_duplicates() -> None:
    # Large norms and tiny offsets: the Gram-matrix formula loses all precision and
    # rounding would give slightly negative squared distances without the clip.
    rng = np.random.default_rng(0)
    base = 100.0 * rng.normal(size=(1, 32))
    emb = tf.constant(np.repeat(base, 24, axis=0) + 1e-5 * rng.normal(size=(24, 32)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(emb)
        squared = pairwise_distances(emb, squared=True)
        dist = pairwise_distances(emb)
        total = tf.reduce_sum(dist)
    assert np.all(squared.numpy() >= 0.0) and np.all(np.diag(squared.numpy()) == 0.0)
    assert np.all(np.isfinite(dist.numpy())) and np.all(np.diag(dist.numpy()) == 0.0)
    assert np.all(np.isfinite(tape.gradient(total, emb).numpy()))


def _gradient(strategy: str, labels, emb) -> np.ndarray:
    emb = tf.constant(emb)
    with tf.GradientTape() as tape:
        tape.watch(emb)
        loss, _ = triplet_loss(tf.constant(labels), emb, 0.5, strategy=strategy)
    return tape.gradient(loss, emb).numpy()


@pytest.mark.parametrize("strategy", ["semi_hard", "batch_hard"])
def test_gradients_finite_with_duplicates_and_single_identity(strategy: str) -> None:
    rng = np.random.default_rng(123)
    emb = l2_normalize(rng.normal(size=(8, 4))).astype(np.float32)
    emb[1] = emb[0]  # duplicate inside an identity: d(a, p) = 0
    emb[5] = emb[0]  # duplicate across identities: d(a, n) = 0
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 3], np.int32)
    grad = _gradient(strategy, labels, emb)
    assert np.all(np.isfinite(grad))
    assert np.any(grad != 0.0)

    all_same = np.repeat(emb[:1], 6, axis=0)  # one identity, all rows identical
    grad = _gradient(strategy, np.zeros(6, np.int32), all_same)
    assert np.all(np.isfinite(grad)) and np.all(grad == 0.0)
    loss, _ = triplet_loss(np.zeros(6, np.int32), all_same, 0.5, strategy=strategy)
    assert float(loss) == 0.0

    grad = _gradient(strategy, np.zeros(1, np.int32), emb[:1])  # batch of one
    assert np.all(np.isfinite(grad)) and np.all(grad == 0.0)


@pytest.mark.parametrize("strategy", ["semi_hard", "batch_hard"])
def test_gradient_matches_finite_differences(strategy: str) -> None:
    rng = np.random.default_rng(7)
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 3], np.int32)
    emb = rng.normal(size=(8, 3))
    grad = _gradient(strategy, labels, emb.astype(np.float32))
    eps = 1e-6
    numeric = np.zeros_like(emb)
    for idx in np.ndindex(*emb.shape):
        plus, minus = emb.copy(), emb.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (
            REFERENCES[strategy](labels, plus, 0.5)["loss"] - REFERENCES[strategy](labels, minus, 0.5)["loss"]
        ) / (2 * eps)
    assert np.abs(numeric).max() > 1e-2
    np.testing.assert_allclose(grad, numeric, atol=1e-4)


@pytest.mark.parametrize("strategy", ["semi_hard", "batch_hard"])
def test_jit_compile_matches_eager(strategy: str) -> None:
    fn = STRATEGY_FNS[strategy]
    compiled = tf.function(lambda y, x: fn(y, x, 0.5), jit_compile=True)
    for seed in (1, 3, 5, 8):  # tight negatives, duplicates, random, duplicates
        labels, emb, _, scenario = make_batch(seed)
        eager = fn(tf.constant(labels), tf.constant(emb), 0.5)
        jitted = compiled(tf.constant(labels), tf.constant(emb))
        ref = REFERENCES[strategy](labels, emb, 0.5)
        for e, j, r in zip(eager, jitted, (ref["loss"], ref["active"]), strict=True):
            np.testing.assert_allclose(j.numpy(), e.numpy(), rtol=1e-6, atol=1e-7, err_msg=scenario)
            np.testing.assert_allclose(j.numpy(), r, atol=ATOL, err_msg=scenario)


@pytest.mark.parametrize("strategy", ["semi_hard", "batch_hard"])
def test_compiled_graph_has_no_cubic_tensor(strategy: str) -> None:
    """Memory stays O(B^2) under XLA (a B=1800 batch must not need B^3 elements)."""
    fn = STRATEGY_FNS[strategy]
    compiled = tf.function(lambda y, x: fn(y, x, 0.5), jit_compile=True)
    labels = tf.constant(np.arange(37) % 5, tf.int32)
    emb = tf.constant(l2_normalize(np.random.default_rng(0).normal(size=(37, 8))), tf.float32)
    hlo = compiled.experimental_get_compiler_ir(labels, emb)(stage="hlo")
    assert "f32[37,37]" in hlo  # sanity: the pattern format matches this HLO dialect
    assert "37,37,37" not in hlo and "37,37,8]" not in hlo


def test_float16_embeddings_computed_in_float32() -> None:
    labels, emb, margin, _ = make_batch(1)
    emb16 = emb.astype(np.float16)
    ref = ref_semi_hard(labels, emb16.astype(np.float32), margin)
    loss, active = semi_hard_triplet_loss(tf.constant(labels), tf.constant(emb16), margin)
    assert loss.dtype == tf.float32 and active.dtype == tf.float32
    np.testing.assert_allclose(float(loss), ref["loss"], atol=ATOL)
    np.testing.assert_allclose(float(active), ref["active"], atol=1e-6)


def test_int64_column_labels() -> None:
    labels, emb, margin, _ = make_batch(2)
    ref = ref_batch_hard(labels, emb, margin)
    loss, _ = batch_hard_triplet_loss(tf.constant(labels[:, None].astype(np.int64)), emb, margin)
    np.testing.assert_allclose(float(loss), ref["loss"], atol=ATOL)


def test_unknown_strategy_raises() -> None:
    with pytest.raises(ValueError, match="hardest"):
        triplet_loss([0, 0, 1], np.eye(3, dtype=np.float32), 0.5, strategy="hardest")
