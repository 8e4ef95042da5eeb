"""The validation guard: held-out photos, the verification pairs they make, their metrics, and the decision.

Trained weights are saved only when the AUC on held-out pairs is strictly higher than before training (or equal
with a strictly higher best-threshold accuracy) AND the accuracy at the calibrated threshold recognition uses
(the model's verify threshold, rescaled by the weights' distance scale) is not lower AND no more held-out photos are
named as someone else (`strangers_rejected`): see `is_better`; the kept epoch's gain must also hold across
resamples of the held-out people (`gain_holds`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from facenet.config import SPLIT_SEED
from facenet.eval.metrics import accuracy_at, auc, best_threshold
from facenet.gallery.enroll import centroid, nearest_other
from facenet.gallery.thresholds import person_thresholds
from facenet.models.embed import Embedder

MAX_VALIDATION_PAIRS = 20_000
"""Held-out pairs at most (half same-person, half different-person), sampled with the fixed seed: validation
costs the same whatever the size of data/, and never lists every held-out x training pair."""

LIST_PAIRS = 1_000_000
"""Candidate pairs of one kind are listed when there are at most this many, else drawn at random."""

EMBED_CHUNK = 1024
"""Chips embedded per read of the cache's memory maps."""

STRANGER_GALLERY_PEOPLE = 500
"""The guard's open-set check enrolls the held-out photos of at most this many held-out people (its gallery) and asks
who each held-out photo is, its own person left out."""

GAIN_DRAWS = 200
GAIN_CONFIDENCE = 0.95
"""The kept epoch's AUC gain must hold in this share of GAIN_DRAWS resamples (with replacement) of the held-out
people, or nothing is saved: a gain carried by a few people is chance. Measured (bench/bench_domain.py, top2, 56
unseen DevTrain people): masks 100% (+2.0 on the 361 DevTest people), low light 99% (-0.1 on DevTest: a gain that
holds for the held-out people but not for others, which no check on them can see)."""


def split_validation(
    labels: np.ndarray, validation_split: float, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): `validation_split` of each person's photos, at least one from
    every person with 3+ photos, always leaving 2 to train on; people with 1 or 2 photos are not held out."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for person in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == person))
        hold = min(max(1, round(len(idx) * validation_split)), len(idx) - 2) if len(idx) >= 3 else 0
        held.extend(idx[:hold])
        train.extend(idx[hold:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(held, dtype=np.int64))


GUARD_PEOPLE = 20
"""The guard holds out whole people (never trained on: it then measures transfer to new people, not memory of the
trained ones) when that gives it at least this many people with 2+ photos; with fewer it holds out photos of each
person, and its verdict is weak."""

GUARD_STRONG_PEOPLE = 40
"""Held-out people from which the guard's verdict counts as reliable. Measured (bench/bench_domain.py, masks): sets
of k unseen people whose AUC change had the sign of the change on all 361 DevTest people (adapter / top): k=10
73.5 / 76.5% of the time, 20 88.5 / 91.5%, 40 92.5 / 95.0%, 80 99.0 / 100%."""


def split_people(labels: np.ndarray, validation_split: float, seed: int = SPLIT_SEED,
                 minimum: int = GUARD_PEOPLE) -> tuple[np.ndarray, np.ndarray] | None:
    """(train indices, held-out indices) holding out `validation_split` of the people with 2+ photos, whole;
    None when that would be fewer than `minimum` people (or leave fewer than 2 to train on)."""
    people, counts = np.unique(labels, return_counts=True)
    eligible = people[counts >= 2]
    hold = round(len(eligible) * validation_split)
    if hold < minimum or len(eligible) - hold < 2:
        return None
    held_people = np.random.default_rng(seed).choice(eligible, hold, replace=False)
    held = np.isin(labels, held_people)
    return np.flatnonzero(~held).astype(np.int64), np.flatnonzero(held).astype(np.int64)


# --------------------------------------------------------------------------- pairs


def _triu_pair(k: np.ndarray, n: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """Pair number k of the pairs (i, j), 0 <= i < j < n, counted row by row -> (i, j); vectorized."""
    k, n = np.asarray(k, np.int64), np.asarray(n, np.int64)
    width = 2 * n - 1

    def row_start(i: np.ndarray) -> np.ndarray:
        return i * (width - i) // 2

    i = np.floor((width - np.sqrt(np.maximum(width * width - 8 * k, 0).astype(np.float64))) / 2).astype(np.int64)
    i = np.where(row_start(i + 1) <= k, i + 1, i)  # float rounding, either way
    i = np.where(row_start(i) > k, i - 1, i)
    return i, k - row_start(i) + i + 1


Decode = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _choose(rng: np.random.Generator, space: int, want: int, decode: Decode,
            keep: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Up to `want` distinct pairs, uniformly among the pair numbers [0, space) whose pairs `keep` accepts.

    Up to LIST_PAIRS candidates are listed; beyond, candidates are drawn at random until enough are accepted (or
    LIST_PAIRS were tried), so memory stays bounded by the number wanted, not by the candidates.
    """
    tried = np.arange(space, dtype=np.int64) if space <= LIST_PAIRS else np.zeros(0, np.int64)
    while True:
        if space > LIST_PAIRS:
            tried = np.unique(np.r_[tried, rng.integers(space, size=max(4 * want, 1024))])
        a, b = decode(tried)
        ok = keep(a, b) if keep is not None else np.ones(len(a), bool)
        if space <= LIST_PAIRS or np.count_nonzero(ok) >= want or len(tried) >= LIST_PAIRS:
            break
    a, b = a[ok], b[ok]
    pick = np.sort(rng.choice(len(a), min(want, len(a)), replace=False))
    return a[pick], b[pick]


def _same_person_pairs(labels: np.ndarray, held: np.ndarray, train: np.ndarray, want: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to `want` of the pairs of a held-out photo with another photo of its person (held-out or training).

    Person p's photos are numbered held-out first, then training; its pairs are the first held_n rows of the
    (i < j) pairs of those photos, and all people's pairs are numbered one after the other.
    """
    pool = np.r_[held[np.argsort(labels[held], kind="stable")], train[np.argsort(labels[train], kind="stable")]]
    held_labels, train_labels = labels[pool[: len(held)]], labels[pool[len(held) :]]
    people, held_start, held_n = np.unique(held_labels, return_index=True, return_counts=True)
    train_start = len(held) + np.searchsorted(train_labels, people, side="left")
    sizes = held_n + len(held) + np.searchsorted(train_labels, people, side="right") - train_start
    first = np.r_[0, np.cumsum(held_n * (2 * sizes - 1 - held_n) // 2)].astype(np.int64)

    def photo(person: np.ndarray, i: np.ndarray) -> np.ndarray:
        return pool[np.where(i < held_n[person], held_start[person] + i, train_start[person] + i - held_n[person])]

    def decode(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        person = np.searchsorted(first, k, side="right") - 1
        i, j = _triu_pair(k - first[person], sizes[person])
        return photo(person, i), photo(person, j)

    return _choose(rng, int(first[-1]), want, decode)


def validation_pairs(
    labels: np.ndarray, held: np.ndarray, train: np.ndarray, seed: int = SPLIT_SEED,
    max_pairs: int = MAX_VALIDATION_PAIRS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, same) index pairs, each with at least one held-out photo: a new photo against the known ones.

    Same-person pairs: every held-out photo with every other photo of its person (held-out or training), or
    max_pairs // 2 of them drawn at random. Different-person pairs: as many, drawn among pairs of held-out photos
    first, then held-out x training photos. Deterministic for a seed; memory grows with the pairs returned.
    """
    rng = np.random.default_rng(seed)
    labels, held, train = np.asarray(labels), np.asarray(held, np.int64), np.asarray(train, np.int64)
    pos_a, pos_b = _same_person_pairs(labels, held, train, max_pairs // 2, rng)

    def differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return labels[a] != labels[b]

    def held_pair(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        i, j = _triu_pair(k, len(held))
        return held[i], held[j]

    def held_train(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return held[k // max(len(train), 1)], train[k % max(len(train), 1)]

    neg = [_choose(rng, len(held) * (len(held) - 1) // 2, len(pos_a), held_pair, differ)]
    neg.append(_choose(rng, len(held) * len(train), len(pos_a) - len(neg[0][0]), held_train, differ))
    neg_a, neg_b = np.concatenate([a for a, _ in neg]), np.concatenate([b for _, b in neg])
    same = np.r_[np.ones(len(pos_a), bool), np.zeros(len(neg_a), bool)]
    return np.r_[pos_a, neg_a].astype(np.int64), np.r_[pos_b, neg_b].astype(np.int64), same


@dataclass(frozen=True)
class Strangers:
    """The guard's open set: a gallery of held-out photos (`gallery_rows`, grouped by their `labels`) and the held-out
    photos (`query_rows`) asked against everyone in it but their own person, each a stranger to that gallery. `model`
    picks the calibrated gallery thresholds."""

    labels: np.ndarray
    gallery_rows: np.ndarray
    query_rows: np.ndarray
    model: str
    people: int
    """The gallery size the thresholds are for: everyone in the training data, as recognition will enroll them."""


def stranger_plan(labels: np.ndarray, held: np.ndarray, model: str, seed: int = SPLIT_SEED) -> Strangers:
    """Every held-out photo against a gallery of the held-out photos of up to STRANGER_GALLERY_PEOPLE held-out people
    (drawn with the seed): people whose photos were never trained on, when the guard holds out whole people. Its
    thresholds are those of a gallery of everyone in `labels`, the one recognition will use (the deeper in the
    stranger-distance tail, the less a single distance scale fits)."""
    labels, held = np.asarray(labels), np.sort(np.asarray(held, np.int64))
    people = np.unique(labels[held])
    chosen = np.random.default_rng(seed).choice(people, min(len(people), STRANGER_GALLERY_PEOPLE), replace=False)
    return Strangers(labels, held[np.isin(labels[held], chosen)], held, model, len(np.unique(labels)))


def strangers_rejected(strangers: Strangers, gallery: np.ndarray, queries: np.ndarray, scale: float) -> float:
    """Share of the held-out photos (`queries`, unit vectors) that the gallery (`gallery`, the embeddings of
    `strangers.gallery_rows`) rejects at its default thresholds times `scale`, their own person left out: what
    recognition would answer for a stranger."""
    people, person = np.unique(strangers.labels[strangers.gallery_rows], return_inverse=True)
    if len(people) == 0 or len(queries) == 0:
        return 1.0
    centroids = np.stack([centroid(gallery[person == i]) for i in range(len(people))])
    row_of = {int(label): i for i, label in enumerate(people)}
    own = np.array([row_of.get(int(label), -1) for label in strangers.labels[strangers.query_rows]])
    nearest, distance = nearest_other(queries, own, centroids, np.ones(len(queries), bool))
    limit = person_thresholds(max(strangers.people, len(people)), np.bincount(person)[nearest], strangers.model,
                              scale=scale)
    return float(np.mean(~(distance <= limit)))


# --------------------------------------------------------------------------- metrics and the guard


def verification_metrics(
    distances: np.ndarray, same: np.ndarray, deployed_threshold: float
) -> dict[str, float]:
    """Verification figures of `distance <= t` on (distances, same) pairs, with the LFW protocol's metrics.

    accuracy and threshold: the best-accuracy threshold (`evaluate.best_threshold`); auc: the chance that a
    same-person pair is closer than a different-person pair; deployed_accuracy: at `deployed_threshold`, the
    threshold recognition would use (the model's calibrated verify threshold times the weights' distance scale).
    """
    threshold, accuracy = best_threshold(distances, same)
    return {
        "accuracy": accuracy,
        "auc": auc(distances, same),
        "threshold": threshold,
        "deployed_accuracy": accuracy_at(distances, same, deployed_threshold),
    }


def is_better(candidate: dict[str, float], best: dict[str, float], start: dict[str, float]) -> bool:
    """The guard: a strictly higher AUC than the best so far (or the same AUC and a strictly higher best-threshold
    accuracy), no lower accuracy than at the start at the calibrated threshold recognition uses, and no fewer
    held-out photos rejected as strangers by a gallery of the other held-out people (`strangers_rejected`) than at
    the start.

    AUC and best-threshold accuracy do not see the scale of distances; fine-tuning spreads the embeddings (with
    -m 0.5 distances about double). Saved weights carry their distance scale (how far held-out different-person
    pairs spread relative to the start, see SPREAD_EXPONENT), which rescales every calibrated threshold; the last
    conditions check the rescaled thresholds really work on the held-out people.
    """
    return ranks_better(candidate, best) and holds_thresholds(candidate, start)


def holds_thresholds(candidate: dict[str, float], start: dict[str, float]) -> bool:
    """At the rescaled thresholds: no lower accuracy on the held-out pairs, no more strangers named than at the
    start."""
    return (candidate["deployed_accuracy"] >= start["deployed_accuracy"]
            and candidate.get("strangers_rejected", 1.0) >= start.get("strangers_rejected", 1.0))


def gain_holds(before: np.ndarray, after: np.ndarray, same: np.ndarray, people: np.ndarray, seed: int = SPLIT_SEED,
               draws: int = GAIN_DRAWS, confidence: float = GAIN_CONFIDENCE) -> tuple[bool, float]:
    """(whether, share): whether the AUC of the pair distances `after` beats `before` in at least `confidence` of
    `draws` resamples of the held-out people (each pair belongs to `people`, its held-out photo's person), and the
    share of resamples where it did."""
    owners, owner = np.unique(people, return_inverse=True)
    rng = np.random.default_rng(seed)
    wins = 0
    for _ in range(draws):
        times = np.bincount(rng.integers(len(owners), size=len(owners)), minlength=len(owners))[owner]
        rows = np.repeat(np.arange(len(same)), times)
        picked = same[rows]
        if picked.all() or not picked.any():
            continue
        wins += auc(after[rows], picked) > auc(before[rows], picked)
    share = wins / max(draws, 1)
    return share >= confidence, share


def ranks_better(candidate: dict[str, float], reference: dict[str, float]) -> bool:
    return (candidate["auc"], candidate["accuracy"]) > (reference["auc"], reference["accuracy"])


def embed_rows(embedder: Embedder, chips: dict[str, np.ndarray], rows: np.ndarray,
               chunk: int = EMBED_CHUNK) -> np.ndarray:
    """Embeddings of `rows` (sorted) of the chips, read `chunk` rows at a time (memory maps stay on disk)."""
    parts = [embedder.embed({kind: np.asarray(chips[kind][rows[i : i + chunk]]) for kind in embedder.kinds})
             for i in range(0, len(rows), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)


SPREAD_EXPONENT = 0.925
"""The distance scale is (median different-person distance after / before) ** SPREAD_EXPONENT. The guard's pairs are
photos of your domain; photos unlike them (clean photos when you trained on masked ones) spread less: on held-out
LFW DevTrain people after training on masked photos, masked pairs spread 1.889x, clean-vs-masked 1.801x
(ln 1.801 / ln 1.889 = 0.925). The full ratio loosened the thresholds for those pairs: masked strangers were named
against a gallery of clean photos (rejected 100% -> 92%, bench/bench_domain.py)."""


class Validator:
    """Verification on the held-out pairs at the calibrated threshold rescaled by how far the embedding spread.

    Embeds only the photos of the pairs, of the open set (`strangers`) and of `extra_rows` (the plotted ones), a
    chunk at a time. `labels` (every photo's person) lets `gain_holds` resample the held-out people.
    """

    def __init__(self, embedder: Embedder, chips: dict[str, np.ndarray],
                 pairs: tuple[np.ndarray, np.ndarray, np.ndarray], extra_rows: np.ndarray, start_scale: float,
                 verify_threshold: float, strangers: Strangers | None = None,
                 labels: np.ndarray | None = None) -> None:
        a, b, self.same = pairs
        self.pair_people = np.asarray(labels)[a] if labels is not None else np.arange(len(a))
        """Each pair's held-out photo's person (the first of the pair): what `gain_holds` resamples."""
        self.embedder, self.chips, self.strangers = embedder, chips, strangers
        open_rows = np.r_[strangers.gallery_rows, strangers.query_rows] if strangers is not None else []
        self.rows = np.unique(np.r_[a, b, extra_rows, open_rows]).astype(np.int64)
        self.a, self.b = np.searchsorted(self.rows, a), np.searchsorted(self.rows, b)
        self.start_scale, self.verify_threshold = start_scale, verify_threshold
        self.reference_median: float | None = None

    def __call__(self) -> tuple[dict[str, float], np.ndarray]:
        """(metrics, embeddings of `self.rows`); the first call sets the reference spread (distance scale 1)."""
        embeddings = embed_rows(self.embedder, self.chips, self.rows)
        distances = self.pair_distances(embeddings)
        median = float(np.median(distances[~self.same]))
        if self.reference_median is None:
            self.reference_median = median
        scale = self.start_scale * (median / self.reference_median) ** SPREAD_EXPONENT
        threshold = self.verify_threshold * scale
        metrics = verification_metrics(distances, self.same, threshold)
        if self.strangers is not None:
            metrics["strangers_rejected"] = strangers_rejected(
                self.strangers, embeddings[self.positions(self.strangers.gallery_rows)],
                embeddings[self.positions(self.strangers.query_rows)], scale)
        return {**metrics, "distance_scale": scale, "deployed_threshold": threshold}, embeddings

    def pair_distances(self, embeddings: np.ndarray) -> np.ndarray:
        """The pairs' distances in embeddings a call returned."""
        return np.linalg.norm(embeddings[self.a] - embeddings[self.b], axis=1)

    def positions(self, rows: np.ndarray) -> np.ndarray:
        """Where `rows` (a subset of `self.rows`) are in the embeddings a call returns."""
        return np.searchsorted(self.rows, rows)


def fmt_metrics(metrics: dict[str, float]) -> str:
    """The validation figures as one log/report phrase."""
    return (f"accuracy {metrics['accuracy']:.4f} (threshold {metrics['threshold']:.3f}), AUC {metrics['auc']:.4f}, "
            f"accuracy at the rescaled threshold {metrics['deployed_threshold']:.3f} "
            f"{metrics['deployed_accuracy']:.4f}"
            + (f", strangers rejected {metrics['strangers_rejected']:.4f}" if "strangers_rejected" in metrics else ""))


def short_metrics(metrics: dict[str, float]) -> str:
    """AUC and accuracy only: the title of a plot."""
    return f"AUC {metrics['auc']:.4f}, accuracy {metrics['accuracy']:.4f} (held-out pairs)"
