"""Online grouping of the faces seen but not known: each new sighting joins the group of the stranger it matches,
starts a new group, or bridges groups of one stranger, which then merge. Pure NumPy, no I/O, deterministic.

The rule (`assign`), with t the verify threshold (Euclidean distance between unit vectors):

- a group's distance to the new sighting is that of its nearest member (single linkage: a stranger seen in
  changing light or pose keeps one group as long as each new look is near one already seen);
- the sighting joins the nearest group when that distance is <= JOIN_FACTOR * t, else it starts a new group;
- every group within MERGE_FACTOR * t (stricter) of the sighting merges with the one it joins: the survivor is the
  group with the most sightings, ties going to the one whose first sighting comes first in `vectors` (pass the
  store's rows oldest first and it is the oldest group).

The factors were measured on LFW View 1 DevTrain people, never DevTest: `python bench/bench_unknowns.py`
(docs/unknowns.md has the figures).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

JOIN_FACTOR = 0.86
"""A sighting joins the nearest group when one of its members is within this many verify thresholds. Calibrated
on LFW View 1 DevTrain people by bench/bench_unknowns.py: purity 99.8% with 1.08 groups per stranger (3,443
sightings), 99.5% at 10,329 (every photo also seen by a cheap camera and in low light), leaving room for bigger
stores, whose purity falls (more groups, more look-alikes); at 0.9, 3.3% of the people seen once join someone
else's group (1.1% here) and purity weighted by faces falls to 98.3%."""

MERGE_FACTOR = 0.8
"""Groups with a member within this many verify thresholds of one sighting merge: stricter than joining, as a
wrong merge mixes two whole groups where a wrong join adds one face. Calibrated with JOIN_FACTOR on DevTrain
(0.86 merges 5x more often and lowers purity by faces from 99.6% to 99.0%)."""

NEIGHBOURS = 3
"""Members averaged by the "nearest" linkage (the bench's alternative)."""


@dataclass(frozen=True)
class Assignment:
    """Where a new sighting goes."""

    group: str
    """The group id the new sighting belongs to (after any merge)."""
    new: bool
    """True when this sighting started a new group."""
    merged: tuple[str, ...]
    """Ids of groups absorbed into `group` by this sighting (their members now belong to `group`), oldest first."""


Linkage = Callable[[np.ndarray, np.ndarray, int, float, np.ndarray], np.ndarray]
"""(distances of the stored sightings, their group codes, number of groups, reach, the stored vectors) -> each
group's distance to the new sighting (inf allowed for a group surely beyond `reach`)."""


def nearest_members(distances: np.ndarray, codes: np.ndarray, count: int, reach: float, vectors: np.ndarray,
                    k: int = NEIGHBOURS) -> np.ndarray:
    """Mean distance of each group's k nearest members; only groups with a member within `reach` (the others
    cannot be within it)."""
    near = np.zeros(count, bool)
    near[codes[distances <= reach]] = True
    rows = np.flatnonzero(near[codes])
    rows = rows[np.lexsort((distances[rows], codes[rows]))]  # by group, nearest first
    starts = np.flatnonzero(np.r_[True, np.diff(codes[rows]) != 0])
    rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    kept = rows[rank < k]
    linkage = np.full(count, np.inf)
    linkage[near] = (np.bincount(codes[kept], distances[kept], count) / np.bincount(codes[kept], minlength=count)
                     .clip(1))[near]
    return linkage


def single(distances: np.ndarray, codes: np.ndarray, count: int, reach: float, vectors: np.ndarray) -> np.ndarray:
    """Distance to the nearest member of each group (the default); only groups with a member within `reach`."""
    close = np.flatnonzero(distances <= reach)
    linkage = np.full(count, np.inf)
    np.minimum.at(linkage, codes[close], distances[close])
    return linkage


def average(distances: np.ndarray, codes: np.ndarray, count: int, reach: float, vectors: np.ndarray) -> np.ndarray:
    """Mean distance to every member of each group."""
    return np.bincount(codes, distances, count) / np.bincount(codes, minlength=count)


LINKAGES: dict[str, Linkage] = {"single": single, "nearest": nearest_members, "average": average}
"""Linkages by name; the bench compares them (and more) with the default, "single"."""


def group_codes(groups: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(distinct ids in order of first appearance, each row's index into them)."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(g, len(index)) for g in groups), np.int64, len(groups))
    return list(index), codes


def assign(vector: np.ndarray, vectors: np.ndarray, groups: Sequence[str], threshold: float,
           new_id: Callable[[], str], join: float = JOIN_FACTOR, merge: float = MERGE_FACTOR,
           linkage: str | Linkage = "single") -> Assignment:
    """vector: the new sighting's unit embedding (d,); vectors: (n, d) unit embeddings of the stored sightings;
    groups: their group ids (n); threshold: the pipeline's 1:1 verify threshold (Euclidean distance between unit
    vectors, e.g. 0.6464 for the default fused model: facenet.gallery.thresholds.calibration('fused')
    .verify_threshold); new_id: makes a fresh group id (called only when a group starts). `join` and `merge` are
    factors of `threshold` (a merge factor above the join factor merges only what joins); `linkage`: a name in
    LINKAGES or a Linkage."""
    vector = np.asarray(vector, np.float32).ravel()
    vectors = np.asarray(vectors, np.float32).reshape(-1, vector.size)
    if len(vectors) != len(groups):
        raise ValueError(f"{len(vectors)} stored vectors but {len(groups)} group ids")
    if not len(vectors):
        return Assignment(new_id(), True, ())
    ids, codes = group_codes(groups)
    distances = np.sqrt(np.maximum(2.0 - 2.0 * (vectors @ vector), 0.0))
    link = LINKAGES[linkage] if isinstance(linkage, str) else linkage
    linked = link(distances, codes, len(ids), join * threshold, vectors)
    nearest = int(np.argmin(linked))
    if not linked[nearest] <= join * threshold:
        return Assignment(new_id(), True, ())
    together = np.union1d([nearest], np.flatnonzero(linked <= min(merge, join) * threshold))
    survivor = int(together[np.argmax(np.bincount(codes, minlength=len(ids))[together])])
    return Assignment(ids[survivor], False, tuple(ids[g] for g in together if g != survivor))
