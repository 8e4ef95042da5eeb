"""`PgSearcher`: the `Searcher` (facenet.gallery.searcher) of a PostgreSQL gallery, so a big shared gallery's
clients keep no copy of its centroids: every lookup is one `nearest` in SQL (through the gallery's index), names
are asked for when needed. Thread-safe: each thread gets its own connection, opened on its first lookup."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from facenet.gallery.pg.gallery import PgGallery


def _close_all(galleries: list[PgGallery]) -> None:
    for gallery in galleries:
        gallery.close()


class PgSearcher:
    """The lookups of one model's gallery at `url`, run in SQL; `people` and `typical_photos` as at opening."""

    def __init__(self, opener: PgGallery, model_id: str, dim: int) -> None:
        """`opener`: the open gallery that made it (its URL and settings open each thread's own connection)."""
        self.url, self.connect_timeout, self.model_id, self.dim = opener.url, opener.connect_timeout, model_id, dim
        self.people, self.typical_photos = opener.size(model_id, dim)
        self._local = threading.local()
        self._opened: list[PgGallery] = []
        self._lock = threading.Lock()
        weakref.finalize(self, _close_all, self._opened)

    def _gallery(self) -> PgGallery:
        gallery = getattr(self._local, "gallery", None)
        if gallery is None or gallery.conn.closed:
            from facenet.gallery.pg.gallery import PgGallery

            gallery = self._local.gallery = PgGallery(self.url, self.connect_timeout)
            with self._lock:
                self._opened.append(gallery)
        return gallery

    def nearest(self, x: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
        return self._gallery().nearest(x, self.model_id, k)

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
