"""Online grouping of unknown faces (facenet/unknowns/grouping.py) on held-out people: purity, groups per stranger,
speed.

    python bench/bench_unknowns.py [--lfw_dir ../shared/faces/lfw_dev] [--seeds 5] [--no_sweep]

Every sighting is the fused embedding of an lfw_dev photo (bench/calibrate.py's cache of both branches, embedded
once with enrollment's face choice) or of its cheap-camera / low-light copy (bench/domains.py, embedded once the
same way, cached in bench/results/). Each goes through `assign` as it arrives, against every sighting stored
before it, relabelled on each merge as the store relabels them. Choices are made on DevTrain people only; DevTest
is printed for information.

(a) interleaved: every photo of the split's people arrives once, in random order (--seeds orders). Strangers are
    the people with >= 2 photos; distractors the people with 1 photo (seen once).
(b) days: "5 sightings over 3 days": each DevTrain person with >= 3 photos is seen on 3 days, one photo a day,
    5 sightings in all (2 + 2 + 1), each a different view of the day's photo (as is, cheap camera, low light);
    the other DevTrain people are distractors seen once on a random day, in a random view. Days arrive in order,
    shuffled within a day.
(c) three views: every DevTrain photo seen as is, by the cheap camera and in low light, all interleaved: 10,329
    sightings, the store size the module is meant for.
(d) speed: ms per assign against 10,000 stored sightings (lfw_dev vectors plus noise, 3 per group).
(e) sweep on DevTrain, (a) and (b): join and merge factors, and the linkages (single, the mean of the 3 nearest
    members, average, centroid, a vote of the 3 nearest sightings).

Figures: purity (share of a group's faces that are of its majority person; mean over groups, and weighted by
faces), groups per stranger (groups holding a stranger's faces / strangers), the share of strangers in exactly one
group, the share of distractors wrongly joined (their group holds someone else's faces), merges per run.
Results also go to bench/results/unknown_groups.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibrate import LFW_DEV, RESULTS, ROOT, branch_embeddings, fused, people_of  # noqa: E402

from facenet.config import FUSION_SFACE_WEIGHT  # noqa: E402
from facenet.gallery.thresholds import calibration  # noqa: E402
from facenet.models.vectors import normalize  # noqa: E402
from facenet.unknowns.grouping import JOIN_FACTOR, MERGE_FACTOR, NEIGHBOURS, assign  # noqa: E402

THRESHOLD = calibration("fused").verify_threshold
VIEWS = ("camera", "lowlight")
"""Degraded copies of a photo (bench/domains.py) that scenario (b) sees besides the photo itself."""
JOINS = (0.8, 0.84, 0.86, 0.88, 0.9, 0.92, 0.95, 1.0)
MERGES = (0.7, 0.75, 0.8, 0.84, 0.86)
STORE = 10_000


def run(vectors: np.ndarray, **options) -> tuple[list[str], int]:
    """Group the sightings in arrival order as the store would: (each sighting's final group, merges)."""
    counter = itertools.count()
    groups: list[str] = []
    merges = 0
    for k, vector in enumerate(vectors):
        result = assign(vector, vectors[:k], groups, THRESHOLD, lambda: f"g{next(counter)}", **options)
        if result.merged:
            merges += len(result.merged)
            absorbed = set(result.merged)
            groups = [result.group if g in absorbed else g for g in groups]
        groups.append(result.group)
    return groups, merges


def figures(truth: np.ndarray, groups: list[str], strangers: set[str], merges: int) -> dict:
    """Purity, groups per stranger, strangers in one group, distractors wrongly joined."""
    members: dict[str, list[str]] = defaultdict(list)
    seen_in: dict[str, set[str]] = defaultdict(set)
    for person, group in zip(truth, groups, strict=True):
        members[group].append(person)
        seen_in[person].add(group)
    majority = {g: Counter(people).most_common(1)[0][1] for g, people in members.items()}
    distractors = [p for p in seen_in if p not in strangers]
    joined = [any(q != p for q in members[next(iter(seen_in[p]))]) for p in distractors]
    return {
        "purity": float(np.mean([majority[g] / len(people) for g, people in members.items()])),
        "purity_faces": sum(majority.values()) / len(truth),
        "groups_per_stranger": float(np.mean([len(seen_in[p]) for p in strangers])),
        "strangers_in_one_group": float(np.mean([len(seen_in[p]) == 1 for p in strangers])),
        "distractors_joined": float(np.mean(joined)) if joined else None,
        "groups": len(members),
        "merges": merges,
    }


def mean_over_seeds(results: list[dict]) -> dict:
    return {key: None if results[0][key] is None else float(np.mean([r[key] for r in results])) for key in results[0]}


def interleaved(vectors: np.ndarray, names: np.ndarray, seeds: int, **options) -> dict:
    """(a): every photo once, random order per seed; strangers = people with >= 2 photos."""
    strangers = {p for p, n in Counter(names).items() if n >= 2}
    results = []
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(names))
        groups, merges = run(vectors[order], **options)
        results.append(figures(names[order], groups, strangers, merges))
    return mean_over_seeds(results) | {"sightings": len(names), "strangers": len(strangers), "seeds": seeds}


def view_vectors(lfw_dir: Path, weights_dir: Path, paths: list[str]) -> dict[str, np.ndarray]:
    """Fused vectors of the VIEWS copies of `paths` (enrollment's face choice), embedded once and cached."""
    from domains import make_domain

    from facenet.pipeline import FacePipeline

    pipeline = FacePipeline("yunet", "fused", weights_dir)
    cache = RESULTS / f"unknown_views_{pipeline.embedder.fingerprint}.npz"
    if cache.exists():
        with np.load(cache) as saved:
            if set(paths) <= set(saved["paths"].tolist()):
                index = {p: i for i, p in enumerate(saved["paths"].tolist())}
                return {view: normalize(saved[view][[index[p] for p in paths]]) for view in VIEWS}
    saved = {"paths": np.array(paths)}
    for view in VIEWS:
        root = make_domain(view, lfw_dir)
        found = pipeline.embed_photos([root / p for p in paths], "largest", last_resort=True, desc=view)
        saved[view] = np.stack([found[root / p].vector for p in paths])
    np.savez(cache, **saved)
    return {view: normalize(saved[view]) for view in VIEWS}


def days_sightings(names: np.ndarray, views: list[np.ndarray], seed: int) -> tuple[np.ndarray, np.ndarray, set[str]]:
    """(b)'s sightings in arrival order: (vectors, people, strangers); views[v][i] is view v of photo i."""
    rng = np.random.default_rng(seed)
    photos: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        photos[str(name)].append(i)
    days: list[list[tuple[int, int, str]]] = [[], [], []]
    for person, own in sorted(photos.items()):
        if len(own) >= 3:
            for day, (photo, count) in enumerate(zip(rng.choice(own, 3, replace=False), (2, 2, 1), strict=True)):
                days[day] += [(photo, view, person) for view in rng.choice(len(views), count, replace=False)]
        else:
            days[rng.integers(3)].append((rng.choice(own), rng.integers(len(views)), person))
    arrivals = [day[i] for day in days for i in rng.permutation(len(day))]
    strangers = {p for p, own in photos.items() if len(own) >= 3}
    return (np.stack([views[view][photo] for photo, view, _ in arrivals]), np.array([p for *_, p in arrivals]),
            strangers)


def days(names: np.ndarray, views: list[np.ndarray], seeds: int, **options) -> dict:
    """(b): 5 sightings over 3 days of each person with >= 3 photos, the others seen once."""
    results = []
    for seed in range(seeds):
        sightings, truth, strangers = days_sightings(names, views, seed)
        groups, merges = run(sightings, **options)
        results.append(figures(truth, groups, strangers, merges))
    return mean_over_seeds(results) | {"sightings": len(truth), "strangers": len(strangers), "seeds": seeds}


def speed(vectors: np.ndarray, store: int = STORE, queries: int = 300) -> dict:
    """ms per assign against `store` sightings (lfw_dev vectors plus noise, 3 sightings per group)."""
    rng = np.random.default_rng(0)
    picks = rng.integers(len(vectors), size=store + queries)
    noisy = normalize(vectors[picks] + rng.normal(0, 0.02, (len(picks), vectors.shape[1])).astype(np.float32))
    stored, probes = noisy[:store], noisy[store:]
    groups = [f"group-{i // 3:06d}" for i in range(store)]
    times = []
    for probe in probes:
        start = time.perf_counter()
        assign(probe, stored, groups, THRESHOLD, lambda: "new")
        times.append((time.perf_counter() - start) * 1000)
    print(f"\n(d) {store} stored sightings ({store // 3} groups): {np.mean(times):.2f} ms per assign "
          f"(median {np.median(times):.2f}, p99 {np.percentile(times, 99):.2f})")
    return {"stored": store, "ms_mean": float(np.mean(times)), "ms_median": float(np.median(times)),
            "ms_p99": float(np.percentile(times, 99))}


def centroid(distances: np.ndarray, codes: np.ndarray, count: int, reach: float, vectors: np.ndarray) -> np.ndarray:
    """Distance to the centroid of each group with a member within `reach` (a grouping.Linkage)."""
    linkage = np.full(count, np.inf)
    for group in np.unique(codes[distances <= reach]):
        members = codes == group
        cosine = np.sum(1 - distances[members] ** 2 / 2) / max(float(np.linalg.norm(vectors[members].sum(0))), 1e-12)
        linkage[group] = np.sqrt(max(2 - 2 * cosine, 0.0))
    return linkage


def vote(distances: np.ndarray, codes: np.ndarray, count: int, reach: float, vectors: np.ndarray,
         k: int = NEIGHBOURS) -> np.ndarray:
    """Only the group holding most of the k nearest sightings within `reach` (ties: the nearest), at its nearest
    member's distance (a grouping.Linkage; never merges)."""
    linkage = np.full(count, np.inf)
    close = np.flatnonzero(distances <= reach)
    nearest = close[np.argsort(distances[close], kind="stable")[:k]]
    if len(nearest):
        votes = np.bincount(codes[nearest], minlength=count)[codes[nearest]]
        winner = nearest[np.argmax(votes)]
        linkage[codes[winner]] = distances[winner]
    return linkage


LINKAGE_NAMES = {"single": "single", "nearest": "mean of 3 nearest", "average": "average", "centroid": "centroid",
                 "vote": "vote of 3 nearest"}
COLUMNS = ("purity", "purity_faces", "groups_per_stranger", "strangers_in_one_group", "distractors_joined",
           "groups", "merges")


def header(first: str) -> None:
    print(f"  {first:34} {'purity':>7} {'by face':>7} {'grp/str':>7} {'in one':>7} {'distr.j':>7} {'groups':>6} "
          f"{'merges':>6}")


def row(label: str, result: dict) -> None:
    percent = [f"{result[k]:7.2%}" for k in ("purity", "purity_faces")]
    share = [f"{result[k]:7.2%}" if result[k] is not None else f"{'n/a':>7}"
             for k in ("strangers_in_one_group", "distractors_joined")]
    print(f"  {label:34} {' '.join(percent)} {result['groups_per_stranger']:7.3f} {' '.join(share)} "
          f"{result['groups']:6.0f} {result['merges']:6.1f}")


def sweep(vectors: np.ndarray, names: np.ndarray, views: list[np.ndarray], seeds: int) -> dict:
    """(e): factors and linkages on DevTrain, scenarios (a) and (b)."""
    print(f"\n(e) sweep on DevTrain, {seeds} seeds (chosen: single linkage, join {JOIN_FACTOR}, merge {MERGE_FACTOR})")
    header("scenario linkage join merge")
    configs = [("single", j, min(MERGE_FACTOR, j)) for j in JOINS]
    configs += [("single", JOIN_FACTOR, m) for m in MERGES if m != MERGE_FACTOR]
    configs += [(name, j, min(MERGE_FACTOR, j)) for name in LINKAGE_NAMES if name != "single" for j in (0.86, 0.9)]
    results = {}
    for linkage, join, merge in configs:
        link = {"centroid": centroid, "vote": vote}.get(linkage, linkage)
        options = {"join": join, "merge": merge, "linkage": link}
        for scenario, result in (("a", interleaved(vectors, names, seeds, **options)),
                                 ("b", days(names, views, seeds, **options))):
            label = f"({scenario}) {LINKAGE_NAMES[linkage]} {join:.2f} {merge:.2f}"
            results[label] = result
            row(label, result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw_dir", type=Path, default=LFW_DEV)
    parser.add_argument("--weights_dir", type=Path, default=ROOT / "weights")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--no_sweep", action="store_true")
    args = parser.parse_args()
    data = branch_embeddings(args.lfw_dir, "yunet", args.weights_dir)
    vectors = fused(data, FUSION_SFACE_WEIGHT)
    people = {name: people_of(args.lfw_dir / f"pairs{name}.txt", args.lfw_dir) for name in ("DevTrain", "DevTest")}
    split = {name: np.array([i for i, n in enumerate(data["names"]) if n in who]) for name, who in people.items()}
    train, names = split["DevTrain"], data["names"][split["DevTrain"]]
    copies = view_vectors(args.lfw_dir, args.weights_dir, [str(p) for p in data["paths"][train]])
    views = [vectors[train]] + [copies[v] for v in VIEWS]
    results: dict = {"threshold": THRESHOLD, "linkage": "single", "join_factor": JOIN_FACTOR,
                     "merge_factor": MERGE_FACTOR}
    print(f"verify threshold {THRESHOLD} (fused): single linkage, join {JOIN_FACTOR}, merge {MERGE_FACTOR}; "
          f"{args.seeds} seeds")
    header("scenario")
    for name, rows in split.items():
        results[f"a_{name}"] = interleaved(vectors[rows], data["names"][rows], args.seeds)
        row(f"(a) {name}, interleaved", results[f"a_{name}"])
    results["b_days"] = days(names, views, args.seeds)
    row("(b) DevTrain, 5 sightings / 3 days", results["b_days"])
    results["c_three_views"] = interleaved(np.concatenate(views), np.concatenate([names] * 3), 1)
    row("(c) DevTrain, three views", results["c_three_views"])
    results["d_speed"] = speed(vectors)
    if not args.no_sweep:
        results["e_sweep"] = sweep(vectors[train], names, views, max(2, args.seeds // 2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "unknown_groups.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    from facenet.progress import show_progress

    show_progress(True)  # the library is silent unless asked
    main()
