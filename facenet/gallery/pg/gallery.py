"""`PgGallery`: one client's connection to a PostgreSQL gallery, the `Gallery` protocol (sync, load) over its
enrollment (facenet.gallery.pg.sync) and lookup (facenet.gallery.pg.queries)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facenet.gallery.enroll import examine_photos, hash_photos, read_folder, reusable
from facenet.gallery.index import FaceDatabase
from facenet.gallery.pg.hashes import read_hashes, write_hashes
from facenet.gallery.pg.queries import Lookup
from facenet.gallery.pg.searcher import PgSearcher
from facenet.gallery.pg.sync import Enrollment
from facenet.gallery.pg.urls import GalleryError, mask_url, reason, url_sets
from facenet.gallery.report import EnrollmentReport, SharedSync
from facenet.gallery.thresholds import verify_threshold
from facenet.unknowns.pg_store import PgUnknowns

if TYPE_CHECKING:
    from facenet.pipeline import FacePipeline
    from facenet.unknowns.store import Retention

CONNECT_TIMEOUT = 5
"""Seconds to wait for the server before giving up (unless the URL says otherwise)."""
NO_COPY_MIN_PEOPLE = 100_000
"""From this many people on, `load` (and `sync`) give a FaceDatabase that searches in SQL (PgSearcher: no copy of
the centroids in the client, ~100 MB at 100k people of the 256-d default model, ~1 GB at 1M) instead of reading
every centroid (bench/bench_pg.py: a few ms per face through the gallery's index either way)."""


class PgGallery(Enrollment, Lookup):
    """One client's connection to a PostgreSQL gallery. Not shared between threads: open one per thread."""

    def __init__(self, url: str, connect_timeout: int = CONNECT_TIMEOUT, cache_dir: str | Path | None = None,
                 rebuild: bool = False) -> None:
        """Connect (GalleryError when that fails). `cache_dir` keeps the photo hashes between syncs (None: every
        photo is hashed again); `rebuild` lets `sync` drop a gallery made by another model (else GalleryError)."""
        try:
            import psycopg
        except ImportError as error:  # pragma: no cover - requirements.txt has it
            raise GalleryError("PostgreSQL galleries need psycopg and pgvector: pip install 'psycopg[binary]' "
                               "pgvector") from error
        self.url, self.cache_dir, self.rebuild, self.connect_timeout = url, cache_dir, rebuild, connect_timeout
        self.where = mask_url(url)
        kwargs = {} if url_sets("connect_timeout", url) else {"connect_timeout": connect_timeout}
        try:
            self.conn = psycopg.connect(url, autocommit=True, **kwargs)
        except psycopg.Error as error:
            raise GalleryError(f"{self.where}: cannot connect: {reason(error, url)}") from None
        self._vector_ready = False
        self._synced: FaceDatabase | None = None

    def close(self) -> None:
        self.conn.close()

    def unknowns(self, retention: Retention | None = None) -> PgUnknowns:
        """The store of unknown faces kept in this gallery's database (shared by every site)."""
        return PgUnknowns(self.conn, self.where, self.url, retention)

    def __enter__(self) -> PgGallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sync(self, data_dir: str | Path, pipeline: FacePipeline) -> EnrollmentReport:
        """Enroll the people of `data_dir` (only THIS folder's people are added, updated or pruned; others' are never
        touched) with the file gallery's enrollment core; the report of what it did (`shared`: this sync's
        PostgreSQL facts)."""
        data_dir = Path(data_dir)
        report = EnrollmentReport(data_dir=str(data_dir), database=self.where, fingerprint=pipeline.model_id)
        people = read_folder(data_dir, report)
        photos = hash_photos(data_dir, people, read_hashes(self.cache_dir, data_dir), report)
        write_hashes(self.cache_dir, data_dir, photos)

        def examine(pending: dict[str, str]) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
            return examine_photos({sha: data_dir / rel for sha, rel in pending.items()}, pipeline)

        folder: dict[str, list[tuple[str, str]]] = {name: [] for name, _ in people}
        for photo in photos:
            folder[photo["person"]].append((photo["path"], photo["sha256"]))
        stats = self.sync_photos(list(folder.items()), examine, pipeline.model_id, pipeline.embedder.dim,
                                 rebuild=self.rebuild, report=report, far=verify_threshold(pipeline),
                                 retry=lambda result: not reusable(result, pipeline.detector.kind))
        report.examined, report.embedded = stats["examined"], stats["embedded"]
        report.reused, report.pruned, report.saved = stats["reused"], stats["pruned"], True
        database = self._synced = self._read(pipeline)
        report.set_thresholds(database)
        report.shared = SharedSync(**stats, gallery_people=len(database))
        return report

    def load(self, pipeline: FacePipeline) -> FaceDatabase:
        """The shared gallery as the lookup index for `pipeline` (read only: nothing is created or pruned): every
        centroid in memory, or from NO_COPY_MIN_PEOPLE people on a database that keeps none (PgSearcher).
        Right after `sync` it is the index that sync read (a big gallery is not read twice); else read now."""
        synced, self._synced = self._synced, None
        database = synced if synced is not None and synced.model_id == pipeline.model_id else self._read(pipeline)
        database.negatives = self.unknowns().negatives(pipeline.model_id)
        return database

    def _read(self, pipeline: FacePipeline) -> FaceDatabase:
        embedder = pipeline.embedder
        size = self.size(embedder.model_id, embedder.dim)
        if size[0] >= NO_COPY_MIN_PEOPLE:
            return FaceDatabase.searching(PgSearcher(self, embedder.model_id, embedder.dim, size), embedder.model_id,
                                          distance_scale=embedder.distance_scale, model=embedder.name,
                                          dim=embedder.dim)
        names, centroids, counts = self.load_centroids(pipeline.model_id, embedder.dim)
        return FaceDatabase(names, centroids, embedder.model_id, counts, distance_scale=embedder.distance_scale,
                            model=embedder.name, dim=embedder.dim)
