"""The lookup a FaceDatabase can delegate to instead of holding the centroids (`FaceDatabase.searching`): the
`Searcher` protocol (facenet.gallery.pg.PgSearcher searches in SQL) and the lazy `names` such a database has."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np


class Searcher(Protocol):
    """A lookup that runs where the centroids are (facenet.gallery.pg.PgSearcher: in SQL), so that a FaceDatabase
    made by `FaceDatabase.searching` keeps no copy of them; it answers with names and photo counts, not rows."""

    people: int
    """How many people were enrolled when it was opened (the gallery size of the thresholds)."""
    typical_photos: int
    """The median photo count then (int of NumPy's median, as the in-memory threshold uses)."""

    def nearest(self, x: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
        """(names [N][k], similarities (N, k), photo counts (N, k)) of each row's k nearest centroids, nearest
        first; padded with "" / -inf / 0 when fewer people are enrolled."""
        ...

    def names(self) -> list[str]:
        """Every enrolled name, sorted (fetched whole: only for listings)."""
        ...

    def enrolled(self, names: Iterable[str]) -> set[str]:
        """Those of `names` that are enrolled (one round trip, nothing else fetched)."""
        ...

    def everyone(self) -> tuple[list[str], np.ndarray]:
        """(names, centroids) of everyone: the full copy, for the few callers that need it explicitly."""
        ...


class SearchedNames(Sequence[str]):
    """`FaceDatabase.names` of a searching database: its length and `in` ask the searcher; indexing or iterating
    fetches every name once (a listing)."""

    def __init__(self, searcher: Searcher) -> None:
        self._searcher = searcher
        self._names: list[str] | None = None

    def __len__(self) -> int:
        return self._searcher.people

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._searcher.enrolled([name]))

    def __getitem__(self, index):  # type: ignore[override] - int or slice, as list's
        if self._names is None:
            self._names = self._searcher.names()
        return self._names[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self[:])
