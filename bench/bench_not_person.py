"""Not this person (issue 24): does marking one photo of a look-alike "not X" stop his other photos being named X,
and are X's own photos still named X?

    python bench/bench_not_person.py [--lfw_dir ../shared/faces/lfw_dev] [--draws 10] [--detector yunet]

Open-set setup on the cached LFW View 1 embeddings of bench/calibrate.py (fused model, both branches of every
lfw_dev photo, enrollment's face choice), one split at a time: DevTrain (where look-alikes are searched and where any
choice was made) and DevTest (reported separately, nothing chosen on it). In a split, every person with >= 4 photos
is enrolled with 3 of them (draw 0: the first 3, as bench_identify.py; draws 1..: 3 at random, seeded) and the rest
are his queries; every other person with >= 2 photos is a stranger (less the ARTEFACTS: stranger photos that show an
enrolled person). At the gallery's DEFAULT threshold, and as a stress test with many more look-alikes at the gallery
thresholds x1.1 and x1.2 (FaceDatabase's distance_scale; at x1.2 about 90% of strangers are named: extreme), a
look-alike is a stranger at least one of whose photos is named (some enrolled X). For each look-alike alone, his
first wrongly named photo is marked "not X" (FaceDatabase.negatives = {X: that face}) and we count, before -> after:
his OTHER photos named X, and X's own queries named X. Then with every look-alike's mark applied together: the share
of all enrolled queries named right, and the share of strangers' photos (the marked ones left out) named nobody.

The current rule (the library: named X unless nearer to one of X's negatives than to X's centroid) is measured
through FaceDatabase.identify itself (and checked against the same rule computed here). Variants are computed here
from the same distances, the library unchanged: a margin (unless nearer to a negative than to the centroid + 10% or
20% of X's threshold), X's nearest enrolled photo instead of his centroid, and the 1:1 verify threshold as a fixed
radius around each negative. Figures per (split, threshold, rule) are pooled over the draws; "(distinct)" counts the
different (stranger, X) look-alikes among them. Under each threshold, the gap a margin could use: how far (relative
to X's threshold) his other photos and X's own photos are from the mark beyond X's centroid. Results also go to
bench/results/not_person.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibrate import LFW_DEV, RESULTS, ROOT, branch_embeddings, fused, people_of  # noqa: E402

from facenet.config import FUSION_SFACE_WEIGHT, UNKNOWN  # noqa: E402
from facenet.gallery.index import FaceDatabase  # noqa: E402
from facenet.gallery.thresholds import calibration  # noqa: E402
from facenet.models.vectors import normalize  # noqa: E402

MODEL = "fused"
ENROLLED = 3
"""Photos enrolled per person; people with more photos are enrolled, the rest of their photos are queries."""
SCALES = (1.0, 1.1, 1.2)
"""Multiples of the gallery's default thresholds: 1.0 is the default, the others a stress test."""
VERIFY = calibration(MODEL).verify_threshold

Rule = Callable[[float, float, float, float], bool]
"""(c, n, o, t) = (distance to X's centroid, to X's nearest negative, to X's nearest enrolled photo, X's threshold)
-> not named X."""
RULES: dict[str, Rule] = {
    "current: nearer a negative than the centroid + 10% of X's threshold": lambda c, n, o, t: n < c + 0.1 * t,
    "... than the centroid alone (no margin)": lambda c, n, o, t: n < c,
    "... than the centroid + 20% of X's threshold": lambda c, n, o, t: n < c + 0.2 * t,
    "nearer a negative than X's nearest photo": lambda c, n, o, t: n < o,
    f"within the 1:1 threshold ({VERIFY:.3f}) of a negative": lambda c, n, o, t: n < VERIFY,
}
CURRENT = next(iter(RULES))
KEPT = "current, LFW artefacts kept (see ARTEFACTS)"
"""The current rule once more with the ARTEFACTS left in the stranger pool."""
ARTEFACTS = {
    "Joseph_Blatter/Joseph_Blatter_0001.jpg": "Sepp Blatter (enrolled in DevTrain) under another LFW name",
    "Joseph_Blatter/Joseph_Blatter_0002.jpg": "Sepp Blatter (enrolled in DevTrain) under another LFW name",
    "Doug_Duncan/Doug_Duncan_0001.jpg": "its largest face, the one enrollment's choice embeds, is Charles Moose "
    "(enrolled in DevTrain), standing in front of Doug Duncan",
}
"""DevTrain stranger photos that show an enrolled person: marking them "not X" marks X himself, so they are left out
of the stranger pool (the KEPT row puts them back). Found by looking at every look-alike at the default threshold."""


@dataclass
class Split:
    """One draw of the open-set setup: enrolled people (names, centroids, enrolled photo vectors, queries) and
    strangers (name -> photo rows)."""

    names: list[str]
    centroids: np.ndarray
    own: dict[str, np.ndarray]
    queries: dict[str, list[int]]
    strangers: dict[str, list[int]]


def make_split(data: dict, embeddings: np.ndarray, people: set[str], draw: int, artefacts: bool = False) -> Split:
    """Everyone of `people` with > ENROLLED photos enrolled with ENROLLED of them (draw 0: the first ones; else a
    seeded random choice), the rest queried; everyone else with >= 2 photos a stranger (ARTEFACTS left out unless
    `artefacts`)."""
    rows: dict[str, list[int]] = {}
    for i, (name, path) in enumerate(zip(data["names"], data["paths"], strict=True)):
        if name in people and (artefacts or str(path) not in ARTEFACTS):
            rows.setdefault(str(name), []).append(i)
    rng = np.random.default_rng(draw)
    names, centroids, own, queries, strangers = [], [], {}, {}, {}
    for name, photos in sorted(rows.items()):
        if len(photos) > ENROLLED:
            order = list(photos) if draw == 0 else [int(i) for i in rng.permutation(photos)]
            names.append(name)
            own[name] = embeddings[order[:ENROLLED]]
            centroids.append(normalize(own[name].mean(axis=0)))
            queries[name] = sorted(order[ENROLLED:])
        elif len(photos) >= 2:
            strangers[name] = photos
    return Split(names, np.stack(centroids), own, queries, strangers)


def names_under(rule: str, database: FaceDatabase, split: Split, vectors: np.ndarray,
                negatives: dict[str, np.ndarray]) -> list[str]:
    """What `database` names each vector once `negatives` are marked, under `rule` (the current one: the library's
    own FaceDatabase.identify; the others: its plain lookup, then the variant rule)."""
    database.negatives = {}
    before = database.identify(vectors)
    decide = RULES[rule]
    limits = dict(zip(database.names, database.thresholds.tolist(), strict=True))
    names = []
    for name, vector, distance in zip(before.names, vectors, before.distances, strict=True):
        marked = negatives.get(name)
        if marked is not None:
            negative = float(np.sqrt(max(0.0, 2.0 - 2.0 * float((marked @ vector).max()))))
            own = float(np.sqrt(max(0.0, 2.0 - 2.0 * float((split.own[name] @ vector).max()))))
            if decide(float(distance), negative, own, limits[name]):
                name = UNKNOWN
        names.append(name)
    if rule == CURRENT:
        database.negatives = negatives
        library = database.identify(vectors).names
        database.negatives = {}
        assert library == names, "the current rule as computed here differs from FaceDatabase.identify"
        return library
    return names


def lookalikes(database: FaceDatabase, split: Split, embeddings: np.ndarray) -> list[tuple[str, int, str]]:
    """(stranger, row of his first photo named someone, that name X) of every stranger the gallery names."""
    found = []
    for stranger, photos in sorted(split.strangers.items()):
        named = [(row, got) for row, got in zip(photos, database.identify(embeddings[photos]).names, strict=True)
                 if got != UNKNOWN]
        if named:
            found.append((stranger, *named[0]))
    return found


def measure(database: FaceDatabase, split: Split, embeddings: np.ndarray, rule: str) -> tuple[dict, set]:
    """Counts for one draw, one threshold, one rule: per look-alike (his mark alone) and global (all marks); and
    the (stranger, X) pairs."""
    counts = dict.fromkeys(("lookalikes", "others", "others_x_before", "others_x_after", "fixable", "fixed",
                            "own", "own_x_before", "own_x_after"), 0)
    cases = lookalikes(database, split, embeddings)
    marks: dict[str, list[int]] = {}
    for stranger, marked, x in cases:
        marks.setdefault(x, []).append(marked)
        negatives = {x: embeddings[[marked]]}
        others = [row for row in split.strangers[stranger] if row != marked]
        before = names_under(rule, database, split, embeddings[others], {})
        after = names_under(rule, database, split, embeddings[others], negatives)
        own_before = names_under(rule, database, split, embeddings[split.queries[x]], {})
        own_after = names_under(rule, database, split, embeddings[split.queries[x]], negatives)
        counts["lookalikes"] += 1
        counts["others"] += len(others)
        counts["others_x_before"] += before.count(x)
        counts["others_x_after"] += after.count(x)
        counts["fixable"] += before.count(x) > 0
        counts["fixed"] += before.count(x) > 0 and after.count(x) == 0
        counts["own"] += len(own_before)
        counts["own_x_before"] += own_before.count(x)
        counts["own_x_after"] += own_after.count(x)
    negatives = {x: embeddings[rows] for x, rows in marks.items()}
    truth = [name for name in split.names for _ in split.queries[name]]
    queries = embeddings[[row for name in split.names for row in split.queries[name]]]
    marked = {row for rows in marks.values() for row in rows}
    strangers = embeddings[[row for photos in split.strangers.values() for row in photos if row not in marked]]
    for when, marking in (("before", {}), ("after", negatives)):
        counts[f"queries_right_{when}"] = sum(
            got == t for got, t in zip(names_under(rule, database, split, queries, marking), truth, strict=True))
        counts[f"strangers_rejected_{when}"] = names_under(rule, database, split, strangers, marking).count(UNKNOWN)
    counts["queries"], counts["strangers"] = len(truth), len(strangers)
    return counts, {(stranger, x) for stranger, _, x in cases}


def gaps(database: FaceDatabase, split: Split, embeddings: np.ndarray) -> tuple[list[float], list[float]]:
    """(distance to the marked face - distance to X's centroid) / X's threshold, each look-alike's mark alone: for
    his other photos named X, and for X's own queries named X. A margin m (not X when the first is < m) unnames all
    the first below m and none of the second above it."""
    others, own = [], []
    for stranger, marked, x in lookalikes(database, split, embeddings):
        index = database.names.index(x)
        centroid, limit = database.centroids[index], float(database.thresholds[index])
        rows = [row for row in split.strangers[stranger] if row != marked]
        for out, photos in ((others, rows), (own, split.queries[x])):
            named = [row for row, got in zip(photos, database.identify(embeddings[photos]).names, strict=True)
                     if got == x]
            for row in named:
                face = embeddings[row]
                out.append(float(np.linalg.norm(face - embeddings[marked]) - np.linalg.norm(face - centroid)) / limit)
    return others, own


def share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def figures(counts: dict, pairs: set) -> dict:
    """Shares from counts pooled over draws."""
    c = counts
    return {
        "lookalikes": c["lookalikes"],
        "distinct_lookalikes": len(pairs),
        "his_other_photos": c["others"],
        "his_others_named_x": [share(c["others_x_before"], c["others"]), share(c["others_x_after"], c["others"])],
        "lookalikes_with_others_named_x": c["fixable"],
        "of_those_none_named_x_after": share(c["fixed"], c["fixable"]),
        "x_own_queries": c["own"],
        "x_own_named_x": [share(c["own_x_before"], c["own"]), share(c["own_x_after"], c["own"])],
        "all_queries_named_right": [share(c["queries_right_before"], c["queries"]),
                                    share(c["queries_right_after"], c["queries"])],
        "strangers_rejected": [share(c["strangers_rejected_before"], c["strangers"]),
                               share(c["strangers_rejected_after"], c["strangers"])],
        "counts": counts,
    }


def pct(value: float | None) -> str:
    return "  -  " if value is None else f"{value:5.1%}"


def run(data: dict, embeddings: np.ndarray, people: set[str], draws: int, label: str) -> dict:
    """Every threshold scale x rule for one split, pooled over `draws` draws; prints the table."""
    splits = [make_split(data, embeddings, people, draw) for draw in range(draws)]
    kept = [make_split(data, embeddings, people, draw, artefacts=True) for draw in range(draws)]
    first = splits[0]
    print(f"\n{label}: {len(first.names)} people enrolled x {ENROLLED} photos, "
          f"{sum(map(len, first.queries.values()))} queries; {len(first.strangers)} strangers with "
          f"{sum(map(len, first.strangers.values()))} photos; {draws} draws pooled")
    print(f"  {'thr':>10} {'rule':46} {'look-alikes':>11} {'his others named X':>19} {'fixed':>6} "
          f"{'X own named X':>15} {'all named right':>15} {'strangers rejected':>18}")
    print(f"  {'':10} {'':46} {'(distinct)':>11} {'before -> after':>19} {'':>6} {'before -> after':>15} "
          f"{'before -> after':>15} {'before -> after':>18}")
    result = {}
    for scale in SCALES:
        databases = [FaceDatabase(s.names, s.centroids, "bench", [ENROLLED] * len(s.names), model=MODEL,
                                  distance_scale=scale) for s in splits]
        result[f"x{scale:g}"] = {"threshold": databases[0].threshold, "rules": {}, "lookalikes_draw_0": [
            {"stranger": stranger, "marked": str(data["paths"][row]), "named": x, "distance": float(distance)}
            for stranger, row, x in lookalikes(databases[0], first, embeddings)
            for distance in databases[0].identify(embeddings[[row]]).distances]}
        others, own = [], []
        for database, split in zip(databases, splits, strict=True):
            o, w = gaps(database, split, embeddings)
            others += o
            own += w
        result[f"x{scale:g}"]["gap"] = {"lookalike_others_max": max(others, default=None),
                                        "x_own_min": min(own, default=None), "x_own_below": {
                                            f"{m:g}": share(sum(g < m for g in own), len(own)) for m in (0.1, 0.2)}}
        artefacts = any(len(k.strangers) != len(s.strangers) for k, s in zip(kept, splits, strict=True))
        for label in (*RULES, KEPT) if artefacts else RULES:
            rule, pool = (CURRENT, kept) if label == KEPT else (label, splits)
            pooled: dict[str, int] = {}
            pairs: set[tuple[str, str]] = set()
            for database, split in zip(databases, pool, strict=True):
                counts, found = measure(database, split, embeddings, rule)
                pairs |= found
                for key, value in counts.items():
                    pooled[key] = pooled.get(key, 0) + int(value)
            f = figures(pooled, pairs)
            result[f"x{scale:g}"]["rules"][label] = f
            shown = f"{databases[0].threshold:.3f}" + ("" if scale == 1.0 else f" x{scale:g}")
            cases = f"{f['lookalikes']} ({len(pairs)})"
            print(f"  {shown:>10} {label:46} {cases:>11} "
                  f"{pct(f['his_others_named_x'][0]):>8} -> {pct(f['his_others_named_x'][1])} "
                  f"{pct(f['of_those_none_named_x_after']):>6} "
                  f"{pct(f['x_own_named_x'][0])} -> {pct(f['x_own_named_x'][1])} "
                  f"{pct(f['all_queries_named_right'][0])} -> {pct(f['all_queries_named_right'][1])} "
                  f"{pct(f['strangers_rejected'][0]):>9} -> {pct(f['strangers_rejected'][1])}")
        gap = result[f"x{scale:g}"]["gap"]
        print(f"  {'':10} (to the mark - to the centroid) / X's threshold: his others named X <= "
              f"{gap['lookalike_others_max']:.3f} ({len(others)}); X's own named X >= {gap['x_own_min']:.3f} "
              f"({len(own)}; {pct(gap['x_own_below']['0.1'])} below 0.1, {pct(gap['x_own_below']['0.2'])} below 0.2)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw_dir", type=Path, default=LFW_DEV)
    parser.add_argument("--weights_dir", type=Path, default=ROOT / "weights")
    parser.add_argument("--detector", default="yunet")
    parser.add_argument("--draws", type=int, default=10, help="galleries per split (draw 0: the first photos)")
    args = parser.parse_args()
    data = branch_embeddings(args.lfw_dir, args.detector, args.weights_dir)
    embeddings = fused(data, FUSION_SFACE_WEIGHT)
    print("his others named X: the look-alike's other photos (not the marked one) named X, his mark alone; fixed: of "
          "look-alikes with any such photo, the share with none after; X own: X's queries named X; all named right, "
          "strangers rejected: every query / stranger photo but the marked ones, all marks together")
    results = {"model": MODEL, "enrolled_photos": ENROLLED, "draws": args.draws, "verify_threshold": VERIFY}
    for split in ("DevTrain", "DevTest"):
        people = people_of(args.lfw_dir / f"pairs{split}.txt", args.lfw_dir)
        results[split] = run(data, embeddings, people, args.draws, split)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "not_person.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
