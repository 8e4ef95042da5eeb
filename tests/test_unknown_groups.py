"""Online grouping of unknown faces (facenet/unknowns/grouping.py): real photos of one person end in one group and
two people in two; a bridging sighting merges groups into a deterministic survivor; ids never depend on chance."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from facenet.unknowns.grouping import JOIN_FACTOR, MERGE_FACTOR, Assignment, assign

PEOPLE = Path(__file__).parent / "data" / "people"
THRESHOLD = 0.5
"""The verify threshold of the synthetic tests (any value: the factors are relative to it)."""


def counter(prefix: str = "g"):
    """A new_id that counts: g0, g1, ..."""
    numbers = itertools.count()
    return lambda: f"{prefix}{next(numbers)}"


def at(distance: float, lift: float = 0.0, dim: int = 8) -> np.ndarray:
    """A unit vector at Euclidean `distance` from e0 along e1, nudged by `lift` along e2 (to make members differ)."""
    angle = 2 * np.arcsin(distance / 2)
    vector = np.zeros(dim, np.float32)
    vector[:3] = np.cos(angle), np.sin(angle), lift
    return vector / np.linalg.norm(vector)


def group_all(vectors, threshold: float, new_id=None) -> tuple[list[str], list[Assignment]]:
    """Assign the vectors in order as the store does (relabelling the absorbed groups): (final groups, answers)."""
    new_id, vectors = new_id or counter(), np.asarray(vectors)
    groups: list[str] = []
    answers = []
    for k, vector in enumerate(vectors):
        answer = assign(vector, vectors[:k], groups, threshold, new_id)
        groups = [answer.group if g in answer.merged else g for g in groups] + [answer.group]
        answers.append(answer)
    return groups, answers


# --------------------------------------------------------------------------- real photos


@pytest.fixture(scope="module")
def strangers(pipeline) -> tuple[np.ndarray, list[str], float]:
    """Photos of three people from tests/data (HOG + dlib), interleaved in a fixed shuffled order:
    (vectors, people, the pipeline's verify threshold)."""
    from facenet.gallery.thresholds import verify_threshold

    photos = [p for name in ("George_Clooney", "Barbra_Streisand", "Adel_Al-Jubeir")
              for p in sorted((PEOPLE / name).glob("*.jpg"))]
    photos = [photos[i] for i in np.random.default_rng(3).permutation(len(photos))]
    found = pipeline.embed_photos(photos, desc=None)
    kept = [p for p in photos if found[p].vector is not None]
    assert len(kept) >= 12  # HOG finds a face in all but at most two
    return np.stack([found[p].vector for p in kept]), [p.parent.name for p in kept], verify_threshold(pipeline)


def test_real_photos_of_one_person_form_one_group_and_two_people_two(strangers):
    vectors, people, threshold = strangers
    groups, answers = group_all(vectors, threshold)
    by_person = {name: {g for g, p in zip(groups, people, strict=True) if p == name} for name in set(people)}
    assert all(len(found) == 1 for found in by_person.values()), by_person  # each person one group
    assert len(set(groups)) == 3  # and no two people share one
    assert sum(a.new for a in answers) == 3
    assert answers[0].new and not answers[0].merged


def test_a_person_seen_later_joins_their_group_not_someone_elses(strangers):
    vectors, people, threshold = strangers
    groups, _ = group_all(vectors[:-1], threshold)
    answer = assign(vectors[-1], vectors[:-1], groups, threshold, counter("new"))
    expected = {g for g, p in zip(groups, people[:-1], strict=True) if p == people[-1]}
    assert not answer.new and {answer.group} == expected


# --------------------------------------------------------------------------- synthetic: joins, merges, ids


def test_empty_store_starts_a_group_and_new_id_is_called_only_for_new_groups():
    calls = []

    def new_id() -> str:
        calls.append(1)
        return f"id{len(calls)}"

    assert assign(at(0.0), np.empty((0, 8)), [], THRESHOLD, new_id) == Assignment("id1", True, ())
    near = assign(at(0.5 * THRESHOLD), at(0.0)[None], ["id1"], THRESHOLD, new_id)
    assert near == Assignment("id1", False, ()) and len(calls) == 1
    far = assign(at(1.2 * THRESHOLD), at(0.0)[None], ["id1"], THRESHOLD, new_id)
    assert far == Assignment("id2", True, ()) and len(calls) == 2


def test_join_factor_is_the_boundary():
    stored = at(0.0)[None]
    inside = assign(at((JOIN_FACTOR - 0.01) * THRESHOLD), stored, ["a"], THRESHOLD, counter())
    outside = assign(at((JOIN_FACTOR + 0.01) * THRESHOLD), stored, ["a"], THRESHOLD, counter())
    assert (inside.group, inside.new) == ("a", False)
    assert outside.new and outside.group == "g0"
    assert MERGE_FACTOR < JOIN_FACTOR  # merging is stricter than joining


def test_nearest_group_wins_when_two_are_within_reach_but_not_close_enough_to_merge():
    join, merge = JOIN_FACTOR * THRESHOLD, MERGE_FACTOR * THRESHOLD
    probe = at((join + merge) / 2)  # within joining reach of a (at e0), not within merging reach
    b = at((join + merge) / 2 + 0.6 * merge)  # on, beyond the probe: nearer to it
    assert merge < np.linalg.norm(probe - at(0.0)) < join and np.linalg.norm(probe - b) < merge
    assert np.linalg.norm(b - at(0.0)) > join  # a and b are two groups
    assert assign(probe, np.stack([at(0.0), b]), ["a", "b"], THRESHOLD, counter()) == Assignment("b", False, ())


def test_a_bridging_sighting_merges_two_groups_into_the_larger():
    gap = 1.6 * MERGE_FACTOR * THRESHOLD  # the groups are too far apart to join each other
    a = [at(0.0, lift) for lift in (0.0, 0.01)]
    b = [at(gap, lift) for lift in (0.0, 0.01, 0.02)]
    vectors = a + b
    groups, answers = group_all(vectors, THRESHOLD)
    assert groups == ["g0", "g0", "g1", "g1", "g1"] and not any(x.merged for x in answers)
    bridge = at(gap / 2)  # within the merge reach of both
    answer = assign(bridge, np.stack(vectors), groups, THRESHOLD, counter("new"))
    assert answer == Assignment("g1", False, ("g0",))  # b has more sightings: it survives, a is absorbed


def test_merge_survivor_on_a_tie_is_the_group_seen_first_and_absorbed_ids_come_oldest_first():
    gap = 1.6 * MERGE_FACTOR * THRESHOLD
    stored = np.stack([at(gap), at(0.0), at(gap / 2, 0.9)])  # the third row: a far-off group of its own
    merged = assign(at(gap / 2), stored, ["late", "early", "far"], THRESHOLD, counter())
    assert merged == Assignment("late", False, ("early",))  # equal sizes: "late" has the first row
    three = np.stack([at(0.0), at(gap), at(0.0, 0.001), at(gap / 2, 0.05)])
    answer = assign(at(gap / 2, 0.02), three, ["x", "y", "x", "z"], THRESHOLD, counter())
    assert answer == Assignment("x", False, ("y", "z"))


def test_ids_are_deterministic_and_follow_arrival_not_chance():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16))
    vectors = [c + 0.05 * rng.normal(size=16) for c in centres for _ in range(4)]
    vectors = np.stack([v / np.linalg.norm(v) for v in vectors]).astype(np.float32)
    order = rng.permutation(len(vectors))
    first, _ = group_all(vectors[order], THRESHOLD)
    again, _ = group_all(vectors[order].copy(), THRESHOLD)
    assert first == again
    truth = (order // 4).tolist()
    assert len(set(first)) == 6 and all(len({g for g, t in zip(first, truth, strict=True) if t == c}) == 1
                                        for c in range(6))


def test_mismatched_groups_are_refused():
    with pytest.raises(ValueError, match="2 stored vectors but 1 group ids"):
        assign(at(0.0), np.stack([at(0.0), at(0.1)]), ["a"], THRESHOLD, counter())


def test_one_assign_against_ten_thousand_sightings_is_fast():
    rng = np.random.default_rng(1)
    stored = rng.normal(size=(10_000, 256)).astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    groups = [f"group-{i // 3}" for i in range(len(stored))]
    probe = stored[5] + 0.01 * rng.normal(size=256).astype(np.float32)
    assign(probe / np.linalg.norm(probe), stored, groups, 0.6464, counter())  # warm-up
    start = time.perf_counter()
    for _ in range(10):
        answer = assign(probe / np.linalg.norm(probe), stored, groups, 0.6464, counter())
    assert answer.group == "group-1"
    assert (time.perf_counter() - start) / 10 < 0.05  # ~2 ms here; generous for a loaded machine
