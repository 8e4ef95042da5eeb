"""Open set as the gallery grows (issue 26): named right / wrong name / Unknown and strangers rejected from 100 to
50,000 people enrolled, at the default (gallery-size-aware) threshold and under levers computed here only.

    python bench/bench_gallery_size.py --lfw_dir ../shared/faces/lfw_dev [--draws 5] [--people devtrain]
                                       [--lfw_labels raw] [--detector yunet]

Data: bench/calibrate.py's cached fused embeddings of every lfw_dev photo (LFW View 1 DevTrain and DevTest people
POOLED: separately there would be only 35 / 15 people with >= 6 photos; --people devtrain: DevTrain only), LFW's
people filed under two names merged (LFW_SAME_PERSON; --lfw_labels raw keeps them apart). Per draw (seeded):
  - core people: everyone with >= 6 photos (51 people), 5 photos enrolled (draw 0: the first 5, others: 5 at random),
    the rest queried (68 queries per draw);
  - strangers: 400 other people, one photo each, never enrolled;
  - real distractors: every remaining person (2,639), one photo each, enrolled in a random order; gallery size S =
    51 core + the first S - 51 distractors (S = 100, 300, 1,000, 2,690 = all real people);
  - secondary queries: the other photos of the enrolled distractors that have several (people enrolled with ONE photo).
SYNTHETIC identities (only beyond 2,690 people, and at 1,000 / 2,690 alone as a check against the real ones), one
vector each (one-photo identities, nobody's query), made from the real distractors only (never a core person or a
stranger): "gauss" = draws of a Gaussian fitted to the distractors' vectors (covariance x SHRINK = 0.9, set so the
synthetic identities' nearest-other-identity distances match the real distractors': printed "check"), normalised;
"mix" (5,000 only) = normalize(a e_i + (1 - a) e_j) of two real distractors, a ~ U(0.3, 0.7): a pessimistic bound
(near-duplicates of real people, nearer to strangers than real people are). Limits: a Gaussian has no look-alike
clusters (lighter lower tail of stranger distances than real people: optimistic for strangers); "analogies"
normalize(e_i + e_j - e_k) were tried and rejected (strangers' nearest 0.75 vs 0.62 among real people: off the
face distribution).

Levers (thresholds in unit-sphere distance; k = photos of the person, P = people in the gallery):
  default      the library: FaceDatabase.identify (thresholds.gallery_threshold(P, k))
  a. no size   the 1-person threshold gallery_threshold(1, k) for everyone, whatever P
  b. cap F     the size rule with the per-comparison false-accept share floored at F: impostor_quantile(max(f(P), F), k)
  c. own x A   per-person: A x the largest leave-one-out distance of the person's own enrolled photos to the centroid of
               their others, clipped between the default and the 1-person threshold (one-photo people: the default)
  d. margin M  named only if nearest <= the 1-person threshold AND second-nearest person - nearest >= M
  b+d          both: named only if nearest <= the cap-1e-4 threshold AND second-nearest - nearest >= M
  f. default + M  the library's rule AND second-nearest person - nearest >= M
  e. k-NN      nearest enrolled PHOTO instead of centroid, thresholds of one photo: size rule over all enrolled photos
               (e. k-NN size), or the 1-photo 1-person threshold (e. k-NN no size)
Nothing is tuned: every lever is shown at a small fixed grid. Results: bench/results/gallery_size.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibrate import LFW_DEV, RESULTS, branch_embeddings, fused, people_of  # noqa: E402

from facenet.config import FUSION_SFACE_WEIGHT, UNKNOWN  # noqa: E402
from facenet.gallery.index import FaceDatabase  # noqa: E402
from facenet.gallery.thresholds import comparison_far, gallery_threshold, impostor_quantile  # noqa: E402
from facenet.models.vectors import normalize  # noqa: E402

MODEL = "fused"
SHRINK = 0.9
"""Covariance scale of the Gaussian synthetic identities (chosen on distractors only, never on strangers)."""
ENROLLED = 5
STRANGERS = 400
REAL_SIZES = (100, 300, 1000)
SYNTH_SIZES = (5000, 10000, 20000, 50000)
MIX_SIZES = (5000,)
CHECK_SIZES = (1000,)
"""Sizes also run with synthetic distractors only (besides all-real), to compare synthetic with real."""
CAPS = (1e-3, 1e-4)
OWN = (1.0, 1.25)
MARGINS = (0.02, 0.04, 0.06)
LFW_SAME_PERSON = {
    "Sung_Hong_Choi": "Choi_Sung-hong",  # one man, his name in two orders
    "Nan_Wang": "Wang_Nan",  # the table-tennis player, her name in two orders (checked by eye)
    "Hasan_Wirayuda": "Hassan_Wirajuda",  # Indonesia's foreign minister, two spellings
    "Sepp_Blatter": "Joseph_Blatter",  # Sepp is Joseph Blatter
    "Andrew_Caldecott": "Andrew_Gilligan",  # Andrew_Caldecott_0001 is the same photo as Andrew_Gilligan_0001
}
"""LFW's label errors among lfw_dev people: one person filed under two names. Merged into one identity unless
--lfw_labels raw, so that a "stranger" is never enrolled under his other name. Found among the strangers a run named
(names only; nothing here depends on a threshold) and checked on the photos."""
SIZE_MARGINS = (0.01, 0.02, 0.03)
"""Margins tried on top of the library's own rule (lever f)."""


def chunked_top(queries: np.ndarray, gallery: np.ndarray, owner: np.ndarray | None = None, step: int = 256):
    """(nearest index, nearest distance, second-nearest distance to ANOTHER owner) of each query over gallery rows."""
    best, d1, d2 = [], [], []
    for start in range(0, len(queries), step):
        sim = queries[start : start + step] @ gallery.T
        rows = np.arange(len(sim))
        b = sim.argmax(axis=1)
        top = sim[rows, b].astype(np.float64)
        if owner is None:
            sim[rows, b] = -np.inf
        else:
            sim[owner[None, :] == owner[b][:, None]] = -np.inf
        best.append(b)
        d1.append(np.sqrt(np.clip(2 - 2 * top, 0, 4)))
        d2.append(np.sqrt(np.clip(2 - 2 * sim.max(axis=1).astype(np.float64), 0, 4)))
    return np.concatenate(best), np.concatenate(d1), np.concatenate(d2)


def synthetic(vectors: np.ndarray, count: int, rng: np.random.Generator, kind: str = "gauss") -> np.ndarray:
    """`count` synthetic one-photo identities from the real distractors' vectors (never a core person or stranger).

    gauss: draws of a Gaussian fitted to them (mean, SHRINK x covariance), normalised; SHRINK makes the synthetic
    identities' nearest-neighbour distances among themselves match the real distractors' (printed: "check").
    mix: normalize(a e_i + (1 - a) e_j), a ~ U(0.3, 0.7), of two real distractors: a face between two real people,
    nearer to everyone (a pessimistic bound: harder for strangers than real people are).
    """
    if kind == "gauss":
        mean, cov = vectors.mean(axis=0), np.cov(vectors.T.astype(np.float64))
        return normalize(rng.multivariate_normal(mean, SHRINK * cov, size=count)).astype(np.float32)
    i, j = rng.integers(0, len(vectors), count), rng.integers(0, len(vectors), count)
    a = rng.uniform(0.3, 0.7, count)[:, None]
    return normalize(a * vectors[i] + (1 - a) * vectors[j]).astype(np.float32)


def loo_radius(photos: np.ndarray) -> float:
    """Largest distance of one enrolled photo to the normalised centroid of the person's other enrolled photos."""
    if len(photos) < 2:
        return np.nan
    total = photos.sum(axis=0)
    return max(float(np.linalg.norm(p - normalize(total - p))) for p in photos)


class Tally:
    """Pooled counts of one (size, lever) cell over the draws."""

    def __init__(self) -> None:
        self.right = self.wrong = self.unknown = self.queries = 0
        self.rejected = self.strangers = 0
        self.one_right = self.one_queries = 0
        self.miss_unknown: list[float] = []
        self.miss_wrong: list[float] = []
        self.stranger_named: list[float] = []

    def add(self, named: np.ndarray, truth: np.ndarray, d1: np.ndarray, core: np.ndarray, one: np.ndarray,
            stranger: np.ndarray) -> None:
        unknown = named == -1
        right = named == truth
        self.queries += int(core.sum())
        self.right += int(right[core].sum())
        self.unknown += int(unknown[core].sum())
        self.wrong += int((~right & ~unknown)[core].sum())
        self.miss_unknown += d1[core & unknown].tolist()
        self.miss_wrong += d1[core & ~right & ~unknown].tolist()
        self.one_queries += int(one.sum())
        self.one_right += int(right[one].sum())
        self.strangers += int(stranger.sum())
        self.rejected += int(unknown[stranger].sum())
        self.stranger_named += d1[stranger & ~unknown].tolist()

    def summary(self) -> dict:
        def pct(v):
            return ([round(float(x), 3) for x in np.percentile(v, (5, 50, 95))] if v else [])
        return {"named": self.right / self.queries, "wrong": self.wrong / self.queries,
                "unknown": self.unknown / self.queries, "queries": self.queries,
                "rejected": self.rejected / self.strangers, "strangers": self.strangers,
                "named_one_photo": self.one_right / max(self.one_queries, 1), "one_photo_queries": self.one_queries,
                "unknown_miss_d_p5_50_95": pct(self.miss_unknown), "wrong_miss_d_p5_50_95": pct(self.miss_wrong),
                "unknown_misses": len(self.miss_unknown), "wrong_misses": len(self.miss_wrong)}


def run(data: dict, draws: int) -> dict:
    emb = data["embeddings"].astype(np.float32)
    people: dict[str, list[int]] = {}
    for i, name in enumerate(data["names"]):
        people.setdefault(str(name), []).append(i)
    core_names = sorted(n for n, rows in people.items() if len(rows) > ENROLLED)
    others = sorted(n for n, rows in people.items() if len(rows) <= ENROLLED)
    n_real = len(core_names) + len(others) - STRANGERS
    sizes = [(s, "real") for s in REAL_SIZES] + [(n_real, "real")]
    sizes += [(s, "synthetic") for s in CHECK_SIZES] + [(n_real, "synthetic")]
    sizes += [(s, "real+synthetic") for s in SYNTH_SIZES] + [(s, "real+mix") for s in MIX_SIZES]
    check: dict[str, list[float]] = {}
    print(f"{len(people)} lfw_dev people ({len(emb)} photos), DevTrain+DevTest pooled: {len(core_names)} core people "
          f"(>= {ENROLLED + 1} photos, {ENROLLED} enrolled), {STRANGERS} strangers, {len(others) - STRANGERS} real "
          f"distractors (1 photo each); {draws} draws")
    tallies: dict[tuple, dict[str, Tally]] = {}
    stranger_d1: dict[tuple, list[float]] = {}
    for draw in range(draws):
        rng = np.random.default_rng(draw)
        order = {n: (people[n] if draw == 0 else [int(i) for i in rng.permutation(people[n])]) for n in core_names}
        pool = list(rng.permutation(others))
        strangers, distractors = sorted(pool[:STRANGERS]), pool[STRANGERS:]
        core_photos = [emb[order[n][:ENROLLED]] for n in core_names]
        core_centroids = normalize(np.stack([p.mean(axis=0) for p in core_photos]))
        core_radius = np.array([loo_radius(p) for p in core_photos])
        q_vec = [emb[r] for n in core_names for r in order[n][ENROLLED:]]
        q_truth = [i for i, n in enumerate(core_names) for _ in order[n][ENROLLED:]]
        q_kind = ["core"] * len(q_vec)
        slot = {n: j for j, n in enumerate(distractors)}
        for n in distractors:  # secondary: the other photos of one-photo people (truth filled per gallery)
            for r in people[n][1:]:
                q_vec.append(emb[r])
                q_truth.append(-2 - slot[n])
                q_kind.append("one")
        for n in strangers:
            q_vec.append(emb[people[n][0]])
            q_truth.append(-1)
            q_kind.append("stranger")
        queries = np.stack(q_vec).astype(np.float32)
        q_truth, q_kind = np.array(q_truth), np.array(q_kind)
        real_vectors = np.stack([emb[people[n][0]] for n in distractors]).astype(np.float32)
        synth = synthetic(real_vectors, max(SYNTH_SIZES), np.random.default_rng(1000 + draw))
        mixes = synthetic(real_vectors, max(MIX_SIZES), np.random.default_rng(2000 + draw), "mix")
        if draw == 0:
            for label, vecs in (("real distractors", real_vectors), ("gauss synthetic", synth[: len(real_vectors)]),
                                ("mix synthetic", mixes[: len(real_vectors)])):
                _, _, nn = chunked_top(vecs[:1000], vecs[: len(real_vectors)])
                check[label] = [round(float(x), 3) for x in np.percentile(nn, (1, 5, 50))]
                print(f"  check, nearest other identity among {len(real_vectors)} {label}: p1/p5/p50 "
                      f"{check[label]}")
        for size, kind in sizes:
            extra = size - len(core_names)
            if kind == "real":
                dvec, dreal = real_vectors[:extra], extra
            elif kind == "synthetic":
                dvec, dreal = synth[:extra], 0
            elif kind == "real+mix":
                dvec, dreal = np.concatenate([real_vectors, mixes[: extra - len(real_vectors)]]), len(real_vectors)
            else:
                dvec, dreal = np.concatenate([real_vectors, synth[: extra - len(real_vectors)]]), len(real_vectors)
            P = len(core_names) + len(dvec)
            counts = np.r_[np.full(len(core_names), ENROLLED), np.ones(len(dvec), int)]
            centroids = np.concatenate([core_centroids, dvec]).astype(np.float32)
            # truth: core index, -1 stranger, distractor queries -> their gallery row when enrolled, else dropped
            truth = q_truth.copy()
            one = q_kind == "one"
            didx = -2 - q_truth[one]
            truth[one] = np.where(didx < dreal, len(core_names) + didx, -3)
            core, stranger = q_kind == "core", q_kind == "stranger"
            one = one & (truth >= 0)
            database = FaceDatabase([str(i) for i in range(P)], centroids, "bench", counts, model=MODEL)
            lookup = database.identify(queries)
            default_named = np.array([-1 if n == UNKNOWN else int(n) for n in lookup.names])
            best, d1, d2 = chunked_top(queries, centroids)
            assert np.allclose(d1, lookup.distances, atol=1e-4)
            # k-NN: every enrolled photo, owner = gallery row
            photos = np.concatenate([np.concatenate(core_photos), dvec]).astype(np.float32)
            owner = np.r_[np.repeat(np.arange(len(core_names)), ENROLLED), len(core_names) + np.arange(len(dvec))]
            kbest, kd1, _ = chunked_top(queries, photos, owner)
            kowner = owner[kbest]

            default_t = np.array([gallery_threshold(P, int(k), MODEL) for k in counts])
            one_t = np.array([gallery_threshold(1, int(k), MODEL) for k in counts])
            def name(ok, who=best):
                return (np.where(ok, who, -1))
            rules = {"default (library)": default_named}
            own_check = name(d1 <= default_t[best])
            assert (own_check == default_named).all()
            rules["a. no size rule"] = name(d1 <= one_t[best])
            for cap in CAPS:
                capped = np.array([impostor_quantile(max(comparison_far(P), cap), int(k), MODEL) for k in counts])
                rules[f"b. cap {cap:g}"] = name(d1 <= capped[best])
            radius = np.r_[core_radius, np.full(len(dvec), np.nan)]
            for a in OWN:
                own = np.where(np.isnan(radius), default_t, np.clip(a * radius, default_t, one_t))
                rules[f"c. own x{a:g}"] = name(d1 <= own[best])
            for m in MARGINS:
                rules[f"d. margin {m:g}"] = name((d1 <= one_t[best]) & (d2 - d1 >= m))
            capped = np.array([impostor_quantile(max(comparison_far(P), 1e-4), int(k), MODEL) for k in counts])
            for m in MARGINS[1:]:
                rules[f"b+d. cap 1e-4, m {m:g}"] = name((d1 <= capped[best]) & (d2 - d1 >= m))
            for m in SIZE_MARGINS:
                rules[f"f. default + m {m:g}"] = name((d1 <= default_t[best]) & (d2 - d1 >= m))
            rules["e. k-NN size"] = name(kd1 <= gallery_threshold(len(photos), 1, MODEL), kowner)
            rules["e. k-NN no size"] = name(kd1 <= gallery_threshold(1, 1, MODEL), kowner)
            key = (size, kind)
            cell = tallies.setdefault(key, {r: Tally() for r in rules})
            for r, named in rules.items():
                dist = kd1 if r.startswith("e.") else d1
                cell[r].add(named, truth, dist, core, one, stranger)
            stranger_d1.setdefault(key, []).extend(d1[stranger].tolist())
        print(f"  draw {draw} done", file=sys.stderr)
    results = {}
    for (size, kind), cell in tallies.items():
        sd = np.array(stranger_d1[(size, kind)])
        results[f"{size} {kind}"] = {
            "people": size, "distractors": kind,
            "default_threshold_k5": gallery_threshold(size, ENROLLED, MODEL),
            "default_threshold_k1": gallery_threshold(size, 1, MODEL),
            "stranger_nearest_d_p1_5_50": [round(float(x), 3) for x in np.percentile(sd, (1, 5, 50))],
            "levers": {r: t.summary() for r, t in cell.items()}}
    results["check_nearest_identity_p1_5_50"] = check
    return results


def show(results: dict) -> None:
    for key, row in results.items():
        if key.startswith("check"):
            continue
        print(f"\n{key}: default threshold {row['default_threshold_k5']:.3f} (5 photos) / "
              f"{row['default_threshold_k1']:.3f} (1 photo); strangers' nearest distance p1/p5/p50 "
              f"{row['stranger_nearest_d_p1_5_50']}")
        first = next(iter(row["levers"].values()))
        print(f"  {'lever':20} {'named':>7} {'wrong':>6} {'Unknown':>7} {'1-photo':>7} {'rejected':>8}  "
              f"Unknown-miss d p5/50/95 | wrong-miss d  ({first['queries']} queries, "
              f"{first['one_photo_queries']} 1-photo queries, {first['strangers']} strangers)")
        for lever, s in row["levers"].items():
            print(f"  {lever:20} {s['named']:7.2%} {s['wrong']:6.2%} {s['unknown']:7.2%} {s['named_one_photo']:7.2%} "
                  f"{s['rejected']:8.2%}  {s['unknown_miss_d_p5_50_95']!s:22} | {s['wrong_miss_d_p5_50_95']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw_dir", type=Path, default=LFW_DEV)
    parser.add_argument("--weights_dir", type=Path, default=Path(__file__).resolve().parents[1] / "weights")
    parser.add_argument("--detector", default="yunet")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--lfw_labels", choices=("corrected", "raw"), default="corrected",
                        help="raw: keep LFW's names as they are (LFW_SAME_PERSON counted as different people)")
    parser.add_argument("--people", choices=("all", "devtrain"), default="all",
                        help="devtrain: only LFW View 1 DevTrain people (for choosing a constant)")
    args = parser.parse_args()
    data = branch_embeddings(args.lfw_dir, args.detector, args.weights_dir)
    data["embeddings"] = fused(data, FUSION_SFACE_WEIGHT)
    if args.lfw_labels == "corrected":
        data["names"] = np.array([LFW_SAME_PERSON.get(str(n), str(n)) for n in data["names"]])
    if args.people == "devtrain":
        keep = np.isin(data["names"], sorted(people_of(args.lfw_dir / "pairsDevTrain.txt", args.lfw_dir)))
        data = {key: value[keep] for key, value in data.items()}
    results = run(data, args.draws)
    show(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "".join(f"_{v}" for v in (args.people, args.lfw_labels) if v not in ("all", "corrected"))
    out = RESULTS / f"gallery_size{suffix}.json"
    out.write_text(json.dumps({"model": MODEL, "draws": args.draws, "people": args.people,
                                "lfw_labels": args.lfw_labels, "sizes": results},
                                                          indent=1))


if __name__ == "__main__":
    main()
