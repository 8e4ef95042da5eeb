"""`PgSearcher`: the `Searcher` (facenet.gallery.searcher) of a PostgreSQL gallery, so a big shared gallery's
clients keep no copy of its centroids: from CODES_MIN_PEOPLE on it keeps their compact codes, shortlists each face
locally and re-ranks the shortlist exactly with the centroids it fetches by key (`rerank`: one round trip); below,
every lookup is one `nearest` in SQL. A new searcher of a gallery whose newest searcher is still open (a reload
after a sync) copies its codes and reads only the rows changed since. Names are asked for when needed.
Thread-safe: each thread gets its own connection, opened on its first lookup."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from facenet.gallery.search import CLUSTER_MIN_TRAIN, CLUSTER_REBUILD_GROWTH, ClusterShortlist

CODES_MIN_PEOPLE = CLUSTER_MIN_TRAIN
"""From this many people on, a searcher keeps compact codes of every centroid (gallery.search.ClusterShortlist,
40 bytes a person: 40 MB at 1 M) to shortlist locally, and asks the database only for the shortlisted
people's centroids, re-ranked exactly; below it every lookup is one `nearest` in SQL."""

RERANK_SHORTLIST = 8
"""People per face whose centroids a searcher with codes fetches and re-ranks (k when more are asked for): each row
is a 1 KB centroid read, sent and parsed on every lookup (16 rows instead of 8 cost a 3-face lookup at 1 M ~0.35 ms
more). How deep in the codes' order the exact nearest person lies (bench/bench_search.py's shortlist-depth line, 1 M
people like real fused embeddings, 1,000 genuine faces): among the first 4 for 99.8-100%, the same share as among
the first 64 (the others' cells were not probed). (In memory a candidate costs one dot product:
gallery.search.ClusterIndex re-ranks CLUSTER_SHORTLIST.)"""


class _Connection(Protocol):
    """What PgSearcher asks of a gallery connection (a facenet.gallery.pg.PgGallery; named by its methods so this
    module does not import the gallery that imports it)."""

    url: str
    connect_timeout: int
    conn: Any

    def meta(self) -> dict[str, Any] | None: ...
    def size(self, model_id: str, dim: int) -> tuple[int, int]: ...
    def shortlist_codes(self, model_id: str, dim: int, people: int) -> tuple[ClusterShortlist, int, Any]: ...
    def refresh_codes(self, codes: ClusterShortlist, after: int, since: Any, limit: int
                      ) -> tuple[ClusterShortlist, int, Any, int] | None: ...
    def rerank(self, queries: np.ndarray, ids: np.ndarray, after: int, model_id: str, k: int
               ) -> tuple[list[list[str]], np.ndarray, np.ndarray]: ...
    def nearest(self, queries: np.ndarray, model_id: str, k: int) -> tuple[list[list[str]], np.ndarray, np.ndarray]: ...
    def names(self, model_id: str) -> list[str]: ...
    def enrolled(self, names: Iterable[str], model_id: str) -> set[str]: ...
    def load_centroids(self, model_id: str, dim: int | None) -> tuple[list[str], np.ndarray, np.ndarray]: ...
    def close(self) -> None: ...


CARRY_MAX_CHANGED = 4
"""A new searcher carries the newest one's codes on while at most 1 in this many people changed since (beyond,
reading everyone again costs about as much as the changed rows' codes)."""


@dataclass(eq=False)
class _Codes:
    """A searcher's codes and how current they are (highest id, database time of the read), the gallery size their
    cells were trained for and the rows read to make them: what the next searcher of the same gallery starts from."""

    shortlist: ClusterShortlist
    last_id: int
    read_at: Any
    rows_read: int
    trained_for: int


_LATEST: weakref.WeakValueDictionary[tuple, _Codes] = weakref.WeakValueDictionary()
"""The newest codes of each gallery (URL, model, dim, creation time) that a searcher still holds."""
_LATEST_LOCK = threading.Lock()


def _gallery_codes(opener: _Connection, model_id: str, dim: int, people: int) -> _Codes:
    """The gallery's codes: a copy of the newest searcher's brought up to date (`refresh_codes`: a reload after a
    sync reads the changed rows, not a million), while the gallery has not outgrown their cells
    (CLUSTER_REBUILD_GROWTH) nor been rebuilt; else every centroid read anew."""
    meta = opener.meta() or {}
    key = (opener.url, model_id, dim, meta.get("created_at"))
    with _LATEST_LOCK:
        before = _LATEST.get(key)
    codes = None
    if before is not None and people <= CLUSTER_REBUILD_GROWTH * before.trained_for:
        refreshed = opener.refresh_codes(before.shortlist, before.last_id, before.read_at,
                                         people // CARRY_MAX_CHANGED)
        if refreshed is not None:
            codes = _Codes(*refreshed, trained_for=before.trained_for)
    if codes is None:
        shortlist, last, read_at = opener.shortlist_codes(model_id, dim, people)
        codes = _Codes(shortlist, last, read_at, len(shortlist), trained_for=people)
    with _LATEST_LOCK:
        _LATEST[key] = codes
    return codes


def _close_all(galleries: list[_Connection]) -> None:
    for gallery in galleries:
        gallery.close()


class PgSearcher:
    """The lookups of one model's gallery at `url`, run in SQL; `people` and `typical_photos` as at opening."""

    def __init__(self, opener: _Connection, model_id: str, dim: int, size: tuple[int, int] | None = None) -> None:
        """`opener`: the open gallery that made it (another of its kind, to the same URL with the same settings,
        is each thread's own connection); `size`: its (people, median photo count) when the opener just read it
        (the query reads the whole table)."""
        self.model_id, self.dim = model_id, dim
        kind, url, timeout = type(opener), opener.url, opener.connect_timeout  # not the opener: it may be closed
        self._connect: Callable[[], _Connection] = lambda: kind(url, timeout)
        self.people, self.typical_photos = size if size is not None else opener.size(model_id, dim)
        self._codes: ClusterShortlist | None = None
        self._last_id = 0
        self._kept: _Codes | None = None  # held so the next searcher of this gallery can carry the codes on
        if self.people >= CODES_MIN_PEOPLE:
            self._kept = _gallery_codes(opener, model_id, dim, self.people)
            self._codes, self._last_id = self._kept.shortlist, self._kept.last_id
        self._local = threading.local()
        self._opened: list[_Connection] = []
        self._lock = threading.Lock()
        weakref.finalize(self, _close_all, self._opened)

    def _gallery(self) -> _Connection:
        gallery = getattr(self._local, "gallery", None)
        if gallery is None or gallery.conn.closed:
            gallery = self._local.gallery = self._connect()
            with self._lock:
                self._opened.append(gallery)
        return gallery

    @property
    def codes_rows_read(self) -> int:
        """Rows read to make its codes: every enrolled person, or those changed since the codes it carried on."""
        return self._kept.rows_read if self._kept is not None else 0

    @property
    def codes_nbytes(self) -> int:
        """Memory of the compact codes it keeps (0 below CODES_MIN_PEOPLE)."""
        return self._codes.nbytes if self._codes is not None else 0

    def nearest(self, x: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
        if self._codes is None:
            return self._gallery().nearest(x, self.model_id, k)
        ids = self._codes.shortlist(x, max(RERANK_SHORTLIST, k))
        return self._gallery().rerank(x, ids, self._last_id, self.model_id, k)

    def names(self) -> list[str]:
        return self._gallery().names(self.model_id)

    def enrolled(self, names: Iterable[str]) -> set[str]:
        return self._gallery().enrolled(names, self.model_id)

    def everyone(self) -> tuple[list[str], np.ndarray]:
        names, centroids, _ = self._gallery().load_centroids(self.model_id, self.dim)
        return names, centroids

    def close(self) -> None:
        """Close every thread's connection (a later lookup opens a new one)."""
        with self._lock:
            _close_all(self._opened)
            self._opened.clear()
