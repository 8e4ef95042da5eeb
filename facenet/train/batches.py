"""P x K batches: P identities with K photos each per batch, so every batch has positives and negatives to mine."""

from __future__ import annotations

import numpy as np

from facenet.config import MIN_BATCH, PHOTOS_PER_PERSON
from facenet.train.chips import TrainingError


def pk_batches(
    labels: np.ndarray, batch_size: int, k: int = PHOTOS_PER_PERSON, rng: np.random.Generator | None = None
) -> np.ndarray:
    """One epoch of P x K batches: an (n_batches, B) array of indices into `labels`.

    Every photo of a person with 2+ photos appears about once, in groups of K of the same person (at most
    one group per person per batch, so each batch has positives for P identities; never fewer than 2).
    People with one photo fill a proportional share of each batch as negatives; leftover slots get extra
    groups or single photos of people not yet in the batch. B = min(batch_size, photos): every batch has
    the same size (one trace of the step) and no photo twice.
    """
    return _PKSampler(np.asarray(labels), batch_size, k, rng or np.random.default_rng()).epoch()


class _PKSampler:
    """The state of one epoch's batching: people with 2+ photos (anchors), single photos, sizes and the rng."""

    def __init__(self, labels: np.ndarray, batch_size: int, k: int, rng: np.random.Generator) -> None:
        by_person = {int(p): np.flatnonzero(labels == p) for p in np.unique(labels)}
        self.anchors = {p: idx for p, idx in by_person.items() if len(idx) >= 2}
        self.anchor_ids = np.array(list(self.anchors), np.int64)
        self.singles = [int(idx[0]) for idx in by_person.values() if len(idx) == 1]
        if len(self.anchors) < 2:
            raise TrainingError("training needs at least 2 people with 2 or more photos each")
        self.size = min(batch_size, len(labels))
        if self.size < MIN_BATCH:
            raise TrainingError(f"batch size {batch_size} is too small: at least {MIN_BATCH} (2 people x 2 photos)")
        self.labels, self.rng = labels, rng
        self.k = max(2, min(k, self.size // 2))
        self.single_quota = min(len(self.singles), round(self.size * len(self.singles) / len(labels)),
                                max(0, self.size - 2 * self.k))
        self.single_queue: list[int] = []

    def epoch(self) -> np.ndarray:
        pending = self._groups()
        self.single_queue = self._shuffled_singles()
        batches = []
        while pending:
            batch, people, pending = self._pack(pending)
            self._complete(batch, people)
            batches.append(batch)
        return np.array(batches, dtype=np.int64)

    def _groups(self) -> list[tuple[int, np.ndarray]]:
        """Each anchor's photos in shuffled groups of K (a lone leftover photo gets a partner), shuffled."""
        groups = []
        for person, idx in self.anchors.items():
            idx = self.rng.permutation(idx)
            for start in range(0, len(idx), self.k):
                chunk = idx[start : start + self.k]
                if len(chunk) < 2:
                    chunk = np.r_[chunk, self.rng.choice(idx[:start])]
                groups.append((person, chunk))
        return [groups[i] for i in self.rng.permutation(len(groups))]

    def _shuffled_singles(self) -> list[int]:
        return [self.singles[i] for i in self.rng.permutation(len(self.singles))]

    def _pack(self, pending: list[tuple[int, np.ndarray]]) -> tuple[list[int], set[int], list[tuple[int, np.ndarray]]]:
        """A new batch of pending groups (one per person, leaving room for the singles); the groups left over."""
        batch: list[int] = []
        people: set[int] = set()
        rest = []
        for n, (person, chunk) in enumerate(pending):
            if self.size - self.single_quota - len(batch) < 2:  # no group fits any more
                rest.extend(pending[n:])
                break
            if person not in people and len(batch) + len(chunk) <= self.size - self.single_quota:
                batch.extend(chunk.tolist())
                people.add(person)
            else:
                rest.append((person, chunk))
        return batch, people, rest

    def _complete(self, batch: list[int], people: set[int]) -> None:
        """Fill the batch up to its size: 2+ identities, the singles' share, fresh groups, then any photos."""
        while len(people) < 2 and self._fresh_group(batch, people):
            pass
        for _ in range(self.single_quota):
            if not self.single_queue:
                self.single_queue = self._shuffled_singles()
            candidate = self.single_queue.pop()
            if candidate not in batch:
                batch.append(candidate)
        while self._fresh_group(batch, people):
            pass
        if len(batch) < self.size:
            free = np.setdiff1d(np.arange(len(self.labels)), batch)
            outside = free[~np.isin(self.labels[free], list(people))]
            pool = outside if len(outside) >= self.size - len(batch) else free
            batch.extend(self.rng.choice(pool, self.size - len(batch), replace=False).tolist())

    def _fresh_group(self, batch: list[int], people: set[int]) -> bool:
        """Add k (or fewer) random photos of a random 2+-photo person not yet in the batch."""
        room = self.size - len(batch)
        if room < 2:
            return False
        others = self.anchor_ids[~np.isin(self.anchor_ids, list(people))]
        if not len(others):
            return False
        person = int(others[self.rng.integers(len(others))])
        take = min(self.k, room, len(self.anchors[person]))
        batch.extend(self.rng.choice(self.anchors[person], take, replace=False).tolist())
        people.add(person)
        return True
