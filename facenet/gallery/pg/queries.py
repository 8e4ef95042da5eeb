"""Lookup in the shared gallery (read only: nothing is created, pruned or written): every centroid for an
in-memory search, the k nearest in SQL (exact or through the IVFFlat / HNSW index), its size, names and who of some
names is enrolled (what PgSearcher asks)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import numpy as np

from facenet.gallery.pg.schema import HNSW_MIN_PEOPLE, INDEXES, IVF_PROBES, SCHEMA_VERSION, Schema, vector_text
from facenet.gallery.pg.urls import GalleryError, gallery_errors
from facenet.gallery.search import ClusterShortlist, exact_rerank

CODES_CHUNK = 65_536
"""Centroids read per round trip while a client makes its codes (64 MB at dim 256: never the whole gallery)."""

FRESH_LIMIT = 100_000
"""People enrolled after a client made its codes that `rerank` searches exactly beside the shortlist (a client
reloads long before: the service and the commands load again after every sync of their own)."""

CODES_OVERLAP = timedelta(hours=1)
"""`refresh_codes` reads again the rows changed this long before the codes' last read: a sync's transaction stamps
its rows when it begins and they show when it commits (a sync of 1 M people took ~3.5 min). So a reload within an
hour of a big enrollment reads it again (or everyone, past CARRY_MAX_CHANGED)."""

SIZE_SQL = """SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY photo_count) FROM facenet_people
              WHERE centroid IS NOT NULL"""
"""People enrolled and their median photo count (`size`): an index-only scan of facenet_people_enrolled."""

CHANGED_SQL = "SELECT id, centroid FROM facenet_people WHERE id > %s OR updated_at >= %s LIMIT %s"
"""Rows enrolled after an id or changed since a time (`refresh_codes`): the primary key and facenet_people_updated_at
(PEOPLE_INDEXES), so a reload reads the rows changed, not the table."""

HNSW_EF_SEARCH = 100
"""Candidates the HNSW search keeps (pgvector's default is 40); recall@1 measured by bench/bench_pg.py."""


def _add_rows(codes: ClusterShortlist, rows: list) -> None:
    """Encode (id, centroid) rows into `codes`, named by person id."""
    if rows:
        codes.add(np.stack([row[1] for row in rows]), np.array([row[0] for row in rows], np.int64))


class Lookup(Schema):
    """Reading the gallery: `load_centroids`, `nearest`, `stats`."""

    @gallery_errors
    def load_centroids(self, model_id: str, dim: int | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(names, centroids (N, dim) float32, photo counts) of everyone enrolled, by name; empty when no gallery.

        For the exact in-memory lookup (gallery.index.FaceDatabase / gallery.search.ExactIndex).
        """
        meta = self._reader_meta(model_id, dim)
        width = meta["dim"] if meta is not None else (dim or 0)
        if meta is None:
            return [], np.zeros((0, width), np.float32), np.zeros(0, int)
        with self.conn.cursor(binary=True) as cur:
            cur.execute("""SELECT name, photo_count, centroid FROM facenet_people WHERE centroid IS NOT NULL
                           ORDER BY name""")
            rows = cur.fetchall()
        names = [r[0] for r in rows]
        counts = np.array([r[1] for r in rows], int)
        centroids = np.stack([r[2] for r in rows]).astype(np.float32) if rows else np.zeros((0, width), np.float32)
        return names, centroids, counts

    @gallery_errors
    def size(self, model_id: str, dim: int | None = None) -> tuple[int, int]:
        """(people enrolled, int of their median photo count (1 when none)): what the thresholds are made of."""
        if self._reader_meta(model_id, dim) is None:
            return 0, 1
        people, median = self.conn.execute(SIZE_SQL).fetchone()
        return int(people), int(median) if people else 1

    @gallery_errors
    def names(self, model_id: str) -> list[str]:
        """Every enrolled name, sorted (as `load_centroids` gives them)."""
        if self._reader_meta(model_id, None) is None:
            return []
        rows = self.conn.execute("SELECT name FROM facenet_people WHERE centroid IS NOT NULL ORDER BY name")
        return [row[0] for row in rows]

    @gallery_errors
    def enrolled(self, names: Iterable[str], model_id: str) -> set[str]:
        """Those of `names` that are enrolled (one query)."""
        wanted = list(names)
        if not wanted or self._reader_meta(model_id, None) is None:
            return set()
        rows = self.conn.execute("SELECT name FROM facenet_people WHERE centroid IS NOT NULL AND name = ANY(%s)",
                                 (wanted,))
        return {row[0] for row in rows}

    @gallery_errors
    def nearest(
        self, queries: np.ndarray, model_id: str, k: int = 1, exact: bool | None = None,
        ef_search: int = HNSW_EF_SEARCH, probes: int = IVF_PROBES,
    ) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
        """k nearest centroids of each query by inner product, in SQL: (names [Q][k], similarities (Q, k),
        photo counts (Q, k)); rows are padded with "" / -inf / 0 when fewer people are enrolled.

        exact=None uses the gallery's index (IVFFlat, or HNSW in older galleries) when there is one, True forces an
        exact scan, False requires the index. `ef_search` (HNSW) and `probes` (IVFFlat: lists scanned exactly) trade
        speed for recall.
        """
        meta = self._reader_meta(model_id, None)
        queries = np.asarray(queries, np.float32)
        if queries.ndim == 1:
            queries = queries[None]
        names = [[""] * k for _ in range(len(queries))]
        sims = np.full((len(queries), k), -np.inf, np.float32)
        counts = np.zeros((len(queries), k), int)
        if meta is None or len(queries) == 0 or k <= 0:
            return names, sims, counts
        if queries.shape[1] != meta["dim"]:
            raise GalleryError(f"{self.where}: queries of dimension {queries.shape[1]} for a {meta['dim']}-d "
                               "gallery")
        if exact is False and not any(self._table_exists(index) for index in INDEXES.values()):
            raise GalleryError(f"{self.where}: no HNSW index nor IVFFlat index (one is built once the gallery has "
                               f"more than {HNSW_MIN_PEOPLE} people, or by create_index)")
        with self.conn.transaction(), self.conn.cursor(binary=True) as cur:
            if exact:
                cur.execute("SET LOCAL enable_indexscan = off")
            else:
                cur.execute(f"SET LOCAL hnsw.ef_search = {max(int(ef_search), k)}")
                cur.execute(f"SET LOCAL ivfflat.probes = {max(int(probes), 1)}")
            cur.execute("""SELECT q.i, n.name, n.photo_count, n.sim FROM unnest(%s::vector[]) WITH ORDINALITY
                           AS q(v, i) CROSS JOIN LATERAL (
                               SELECT name, photo_count, -(centroid <#> q.v) AS sim FROM facenet_people
                               WHERE centroid IS NOT NULL ORDER BY centroid <#> q.v LIMIT %s) n
                           ORDER BY q.i, n.sim DESC""", ([vector_text(q) for q in queries], k))
            slot = np.zeros(len(queries), int)
            for i, name, count, sim in cur.fetchall():
                row = i - 1
                names[row][slot[row]], sims[row, slot[row]], counts[row, slot[row]] = name, sim, count
                slot[row] += 1
        return names, sims, counts

    @gallery_errors
    def shortlist_codes(self, model_id: str, dim: int, people: int) -> tuple[ClusterShortlist, int, Any]:
        """Every centroid read once, CODES_CHUNK at a time, into compact codes named by person id (none of the
        vectors kept), the highest id read (people enrolled later are searched exactly by `rerank`) and the
        database time of the read (`refresh_codes` brings the codes up to date from there)."""
        self._reader_meta(model_id, dim)
        share = min(100.0, 100.0 * 80 * np.sqrt(max(people, 1)) / max(people, 1))  # ~64 per cell, with spare
        with self.conn.cursor(binary=True) as cur:
            cur.execute("""SELECT centroid FROM facenet_people TABLESAMPLE BERNOULLI (%s)
                           WHERE centroid IS NOT NULL""", (share,))
            sample = [row[0] for row in cur.fetchall()]
        codes = ClusterShortlist(dim, np.stack(sample) if sample else np.zeros((0, dim), np.float32), people)
        last = 0
        with self.conn.transaction():
            now = self.conn.execute("SELECT now()").fetchone()[0]
            with self.conn.cursor(name="facenet_codes", binary=True) as cur:
                cur.execute("SELECT id, centroid FROM facenet_people WHERE centroid IS NOT NULL ORDER BY id")
                while rows := cur.fetchmany(CODES_CHUNK):
                    _add_rows(codes, rows)
                    last = int(rows[-1][0])
        return codes, last, now

    @gallery_errors
    def refresh_codes(self, codes: ClusterShortlist, after: int, since: Any, limit: int
                      ) -> tuple[ClusterShortlist, int, Any, int] | None:
        """A copy of `codes` (made when the highest id was `after`, at database time `since`) brought up to now:
        people enrolled since are added, people whose centroid changed since (or was cleared) are encoded again (or
        dropped); None, nothing copied, when more than `limit` rows changed. `codes` stay as they were (their
        searcher goes on answering). Reads only those rows (CHANGED_SQL). Returns (the copy, highest id now,
        database time of this read, rows read). People removed since keep their codes (re-ranking skips them).
        """
        with self.conn.transaction(), self.conn.cursor(binary=True) as cur:
            now = cur.execute("SELECT now()").fetchone()[0]
            cur.execute(CHANGED_SQL, (after, since - CODES_OVERLAP, limit + 1))
            rows = cur.fetchall()
        if len(rows) > limit:
            return None
        fresh = codes.copy()
        fresh.remove(np.array([row[0] for row in rows if row[0] <= after], np.int64))
        _add_rows(fresh, [row for row in rows if row[1] is not None])
        return fresh, max([after] + [row[0] for row in rows]), now, len(rows)

    @gallery_errors
    def rerank(self, queries: np.ndarray, ids: np.ndarray, after: int, model_id: str, k: int
               ) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
        """`nearest`, from a shortlist: the k nearest of each query among its shortlisted person `ids` (Q, s) and
        everyone enrolled after id `after`, by exact float32 inner product with their centroids as stored now
        (people gone since are skipped). Padded like `nearest`. One round trip: the rows come only while the
        gallery is still this model's (else the model check says why)."""
        queries = np.asarray(queries, np.float32).reshape(len(ids), -1)
        names = [[""] * k for _ in range(len(queries))]
        sims = np.full((len(queries), k), -np.inf, np.float32)
        counts = np.zeros((len(queries), k), int)
        if len(queries) == 0 or k <= 0:
            return names, sims, counts
        self._ensure_vector_type()
        with self.conn.cursor(binary=True) as cur:
            # the shortlist and the newcomers in one primary-key lookup (a UNION of two cost ~0.2 ms more a photo);
            # "id = ANY(..) OR id > .." scans the whole table, and so does "id > .." without ORDER BY id LIMIT when
            # the planner has no statistics yet (a freshly filled table)
            cur.execute("""SELECT id, name, photo_count, centroid FROM facenet_people
                           WHERE id = ANY(%s::bigint[] || ARRAY(SELECT id FROM facenet_people WHERE id > %s
                                                                AND centroid IS NOT NULL ORDER BY id LIMIT %s))
                             AND centroid IS NOT NULL
                             AND EXISTS (SELECT FROM facenet_meta WHERE schema_version = %s AND model_id = %s
                                                                    AND dim = %s)""",
                        (np.unique(ids[ids >= 0]).tolist(), after, FRESH_LIMIT, SCHEMA_VERSION, model_id,
                         queries.shape[1]))
            rows = cur.fetchall()
        if not rows:
            self._reader_meta(model_id, queries.shape[1])  # another model's gallery now: GalleryError
            return names, sims, counts
        row_of = {row[0]: i for i, row in enumerate(rows)}
        fresh = [i for i, row in enumerate(rows) if row[0] > after]
        candidates = np.array([[row_of.get(i, -1) for i in shortlisted] + fresh for shortlisted in ids.tolist()],
                              np.int64).reshape(len(queries), -1)
        vectors = np.stack([row[3] for row in rows]).astype(np.float32)
        best, similarity = exact_rerank(vectors, queries, candidates, k)
        for q, j in zip(*np.nonzero(best >= 0), strict=True):
            row = rows[best[q, j]]
            names[q][j], sims[q, j], counts[q, j] = row[1], similarity[q, j], row[2]
        return names, sims, counts

    @gallery_errors
    def stats(self) -> dict[str, Any]:
        """People enrolled, photos, stored results and whether the HNSW / IVFFlat index exists (for reports)."""
        if self.meta() is None:
            return {"people": 0, "photos": 0, "results": 0, "hnsw": False, "ivfflat": False}
        people, photos, results = self.conn.execute(
            """SELECT (SELECT count(*) FROM facenet_people WHERE centroid IS NOT NULL),
                      (SELECT count(*) FROM facenet_photos), (SELECT count(*) FROM facenet_embeddings)""").fetchone()
        return {"people": people, "photos": photos, "results": results,
                **{kind: self._table_exists(index) for kind, index in INDEXES.items()}}
