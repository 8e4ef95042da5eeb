"""The 1:N lookup over enrolled people's centroids: nearest centroid on the unit sphere, each person's threshold
from the gallery's size and their photo count (`thresholds`), UNKNOWN beyond it. What every backend's `load` gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from facenet.config import UNKNOWN
from facenet.gallery.search import ClusterIndex, ExactIndex
from facenet.gallery.searcher import SearchedNames, Searcher
from facenet.gallery.thresholds import FARTHEST, GALLERY_FAR, match_score, person_thresholds
from facenet.models.vectors import unit_distance

NEGATIVE_MARGIN = 0.1
"""A face is not named X when it is nearer to one of X's negatives ("not X" marks) than to X's centroid plus this
share of X's threshold: the centroid, a mean of several photos, sits nearer to any face than one marked photo does.
bench/bench_not_person.py (LFW DevTrain look-alikes): at the default threshold 0.9% of a marked look-alike's other
photos stay named X without it, 0% with it; X's own photos: 100% named either way (20% starts to cost X's own)."""

SEARCH_INDEX_MIN = 50_000
"""From this many people on (up to CLUSTER_INDEX_MIN), lookup uses the exact int8-shortlist index (gallery.search)
instead of one plain matrix product (bench/bench_search.py: at 100 k people 0.9 ms vs 8 ms for one face)."""

CLUSTER_INDEX_MIN = 150_000
"""From this many people on, lookup is approximate (gallery.search.ClusterIndex: recall@1 >= 0.998 for genuine faces,
exact float32 similarities of the held centroids) and the centroids are held in float16, half the memory (1 M people
at 256-d: 488 MB instead of 977 MB; a distance moves by < 1e-3, see docs/benchmarks.md), because beyond it the exact
index cannot name a 10-face frame in < 20 ms at dim 256:
`python bench/bench_search.py --exact 150000 200000 300000 --dim --like_lfw fused --no_flat --probes 32` gave
10 faces in 14 ms at 150 k, 17 ms at 200 k, 53 ms at 300 k (ClusterIndex 1.1-1.4 ms);
163-168 ms at 1 M (ClusterIndex 3.2 ms). docs/benchmarks.md has the table."""


@dataclass(frozen=True)
class Lookup:
    """The gallery's answer for N faces, as parallel columns: `names` (the enrolled name, or UNKNOWN when rejected),
    `distances` to the nearest centroid and 0-100 `scores` ((N,) float64). Not a face of its own: iterating gives
    (name, distance, score) per face in plain Python values, what a `Recognition` takes."""

    names: list[str]
    distances: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[tuple[str, float, float]]:
        return zip(self.names, self.distances.tolist(), self.scores.tolist(), strict=True)


class FaceDatabase:
    """Enrolled people's centroids and the nearest-centroid lookup with a gallery-size-aware threshold.

    `centroids` is (N, dim) float32, float16 from CLUSTER_INDEX_MIN people on (`everyone()` gives float32).

    `threshold` is the default for a person with the gallery's median number of photos; each person's own
    default (`thresholds[i]`, from their photo count) is what `identify` applies unless overridden. Both are
    multiplied by `distance_scale`, the spread of fine-tuned weights relative to the calibrated model. `model`
    (one of MODELS) picks the calibrated constants; `model_id` (`<model>:<weights fingerprint>`) names the
    embedding that made the centroids.

    Made by `FaceDatabase.searching(searcher, ...)` instead, it holds no centroids: `identify` and
    `nearest_people` ask the `searcher` (same names, distances, per-person thresholds and scores), `names` is a
    `SearchedNames`, `centroids`, `photo_counts` and `thresholds` are empty, and `everyone()` fetches the full copy.
    """

    def __init__(
        self,
        names: list[str],
        centroids: np.ndarray,
        model_id: str,
        photo_counts: list[int] | np.ndarray | None = None,
        *,
        model: str,
        target_far: float = GALLERY_FAR,
        distance_scale: float = 1.0,
        dim: int | None = None,
    ) -> None:
        self.names = list(names)
        centroids = np.asarray(centroids, dtype=np.float32)
        self.dim = int(dim or (centroids.shape[-1] if centroids.ndim == 2 and centroids.shape[-1] else 128))
        self.centroids = np.ascontiguousarray(centroids).reshape(-1, self.dim)
        if len(self.centroids) >= CLUSTER_INDEX_MIN:
            self.centroids = self.centroids.astype(np.float16)
        self.model = model
        self._index = None
        if len(self.names) != len(self.centroids):
            raise ValueError(f"{len(self.names)} names for {len(self.centroids)} centroids")
        counts = np.ones(len(self.names), int) if photo_counts is None else np.asarray(photo_counts, int)
        self.photo_counts = counts
        self.model_id = model_id
        self.target_far = target_far
        self.distance_scale = distance_scale
        self.thresholds = self._own_thresholds(counts)
        self.threshold = self._typical_threshold(int(np.median(counts)) if len(counts) else 1)
        self.searcher: Searcher | None = None
        self.negatives: dict[str, np.ndarray] = {}
        """{name: (k, dim) unit vectors of faces marked "not <name>"}: a face nearer to one of them than to that
        person's centroid (NEGATIVE_MARGIN) is not named that person (facenet.unknowns; set by the gallery's
        `load`)."""

    @classmethod
    def searching(cls, searcher: Searcher, model_id: str, *, model: str, target_far: float = GALLERY_FAR,
                  distance_scale: float = 1.0, dim: int) -> FaceDatabase:
        """A database whose lookups run in `searcher` (no copy of the centroids here): the thresholds of a
        gallery of `searcher.people` people, each person's from the photo count the searcher returns."""
        database = cls([], np.zeros((0, dim), np.float32), model_id, model=model, target_far=target_far,
                       distance_scale=distance_scale, dim=dim)
        database.searcher, database.names = searcher, SearchedNames(searcher)  # type: ignore[assignment]
        database.threshold = database._typical_threshold(searcher.typical_photos)
        return database

    def __len__(self) -> int:
        return len(self.names)

    def enrolled(self, names: Iterable[str]) -> set[str]:
        """Those of `names` that are enrolled (without fetching every name from a searcher)."""
        if self.searcher is not None:
            return self.searcher.enrolled(names)
        return set(names) & set(self.names)

    def everyone(self) -> tuple[list[str], np.ndarray]:
        """(names, centroids (N, dim)) of everyone enrolled: for a searching database, fetched now (the full
        copy it otherwise avoids)."""
        if self.searcher is not None:
            return self.searcher.everyone()
        return list(self.names), self.centroids.astype(np.float32, copy=False)

    def _own_thresholds(self, counts: np.ndarray) -> np.ndarray:
        """Each person's default threshold from their photo count, in a gallery of len(self) people (`thresholds`
        of a full copy; a searching database's for the counts its searcher returns)."""
        # padding ("" for fewer people than asked) counts no photo: person_thresholds counts it as one
        return person_thresholds(len(self), counts, self.model, self.target_far, self.distance_scale)

    def _typical_threshold(self, photos: int) -> float:
        """`threshold`: the default of a person with the gallery's median photo count."""
        return float(self._own_thresholds(np.array([photos]))[0])

    def _searched(self, x: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(name, similarity, own threshold) of each row's nearest person, asked of the searcher."""
        names, similarities, counts = self.searcher.nearest(x, 1)  # type: ignore[union-attr]
        return [row[0] for row in names], similarities[:, 0].astype(np.float64), self._own_thresholds(counts[:, 0])

    def _nearest(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index, similarity) of each row's nearest centroid: one matrix product, or for a big gallery the index."""
        if len(self) >= SEARCH_INDEX_MIN:
            indices, similarities = self._search_index().search(x, 1)
            return indices[:, 0], similarities[:, 0].astype(np.float64)
        similarity = x @ self.centroids.T
        best = similarity.argmax(axis=1)
        return best, similarity[np.arange(len(x)), best].astype(np.float64)

    def _search_index(self) -> ExactIndex | ClusterIndex:
        """The big gallery's index, built on first use: exact (int8 shortlist) up to CLUSTER_INDEX_MIN people, then
        approximate (k-means cells, exact re-rank), so a frame of faces is named in < 20 ms at 1 M people."""
        if self._index is None:
            big = len(self) >= CLUSTER_INDEX_MIN
            self._index = ClusterIndex(self.centroids) if big else ExactIndex(self.centroids)
        return self._index

    def identify(self, embeddings: np.ndarray, threshold: float | None = None) -> Lookup:
        """(N, dim) unit vectors (dim 128; 256 for fused) -> the `Lookup` of each row: the nearest centroid, or
        UNKNOWN beyond the threshold.

        One matrix product for all faces: d^2 = 2 - 2 x.c on the unit sphere. `threshold` replaces every
        person's default. With nobody enrolled every face is UNKNOWN at distance FARTHEST (2.0).
        """
        x = np.asarray(embeddings, dtype=np.float32).reshape(-1, self.dim)
        if len(self) == 0:
            limit = self.threshold if threshold is None else threshold
            distance = np.full(len(x), FARTHEST, np.float64)
            return Lookup([UNKNOWN] * len(x), distance, np.asarray(match_score(distance, limit), np.float64))
        if self.searcher is not None:
            found, nearest, own = self._searched(x)
        else:
            best, nearest = self._nearest(x)
            found, own = [self.names[b] for b in best], self.thresholds[best]
        distance = unit_distance(nearest)
        limit = own if threshold is None else np.full(len(x), float(threshold))
        names = [n if d <= t else UNKNOWN for n, d, t in zip(found, distance, limit, strict=True)]
        if self.negatives:
            names = [self._unless_negative(name, row, d, t)
                     for name, row, d, t in zip(names, x, distance, limit, strict=True)]
        return Lookup(names, distance, np.asarray(match_score(distance, limit), np.float64))

    def nearest_people(self, embeddings: np.ndarray, count: int, threshold: float | None = None
                       ) -> list[list[tuple[str, float, float]]]:
        """The `count` enrolled people nearest to each row, nearest first, as (name, distance, 0-100 score) with
        each person's own threshold (or `threshold` for all): the candidates a face could be, named or not."""
        x = np.asarray(embeddings, dtype=np.float32).reshape(-1, self.dim)
        if len(self) == 0 or count < 1:
            return [[] for _ in range(len(x))]
        k = min(int(count), len(self))
        if self.searcher is not None:
            names, similarity, counts = self.searcher.nearest(x, k)
            own = self._own_thresholds(counts)
        else:
            if len(self) >= SEARCH_INDEX_MIN:  # sorting every person costs ~130 ms per face at 1 M: ask the index
                nearest, similarity = self._search_index().search(x, k)
            else:
                product = x @ self.centroids.T
                nearest = np.argsort(-product, axis=1, kind="stable")[:, :k]
                similarity = np.take_along_axis(product, nearest, axis=1)
            names = [[self.names[j] if j >= 0 else "" for j in row] for row in nearest]
            own = self.thresholds[nearest]
        distance = unit_distance(similarity)
        limit = own if threshold is None else np.full(distance.shape, float(threshold))
        scores = np.asarray(match_score(distance, limit), np.float64).reshape(distance.shape)
        return [[(name, float(d), float(c)) for name, d, c in zip(row, drow, crow, strict=True) if name]
                for row, drow, crow in zip(names, distance, scores, strict=True)]

    def _unless_negative(self, name: str, vector: np.ndarray, distance: float, limit: float) -> str:
        """UNKNOWN when the face is nearer to one of the faces marked "not <name>" than to name's centroid (plus
        NEGATIVE_MARGIN of the threshold `limit`)."""
        marked = self.negatives.get(name)
        if marked is None or len(marked) == 0:
            return name
        nearest = float(unit_distance((marked @ vector).max()))
        return UNKNOWN if nearest < distance + NEGATIVE_MARGIN * limit else name
