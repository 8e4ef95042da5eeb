"""Enrollment into the shared gallery: a folder's people, photos and centroids synced under the concurrency
contract of the package's docstring (facenet.gallery.pg), and the removal of one person."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facenet.gallery.enroll import Vector, enroll
from facenet.gallery.index import FaceDatabase
from facenet.gallery.pg.schema import Schema
from facenet.gallery.pg.urls import GalleryError, gallery_errors
from facenet.gallery.report import EnrollmentReport

EXAMINE_BATCH = 512
"""Photos per `examine` call; each batch's results are committed, so a killed enrollment keeps them."""

Examine = Callable[[dict[str, Any]], tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]]
"""pending {sha256: relative path of one photo with those bytes} -> (results {sha256: {"reason": None or why
not usable, ...}}, vectors {sha256: unit vector (dim,)} for the usable ones)."""


class Enrollment(Schema):
    """Writing the gallery: `sync_photos` (a folder's people) and `remove_person`."""

    _synced: FaceDatabase | None

    @gallery_errors
    def sync_photos(
        self,
        people_photos: Sequence[tuple[str, Sequence[tuple[str, str]]]],
        examine: Examine,
        model_id: str,
        dim: int,
        rebuild: bool = False,
        retry: Callable[[dict[str, Any]], bool] | None = None,
        batch: int = EXAMINE_BATCH,
        build_index: bool = True,
        report: EnrollmentReport | None = None,
        far: float = np.inf,
    ) -> dict[str, Any]:
        """Make the gallery's people OF THIS FOLDER follow it: `people_photos` = [(name, [(path, sha256), ...])].

        Only photos whose sha256 has no stored result for `model_id` are passed to `examine` (plus stored
        failures for which `retry(result)` is true, e.g. "no face" from another detector). People absent from
        `people_photos` are left alone. Returns a report dict (people, photos, examined, embedded, reused,
        pruned, skipped, not_enrolled, seconds). build_index=False leaves the index to a later
        `create_index` (bulk loads). `report` receives the enrollment core's sections (people, duplicates,
        mislabeled, ...); `far` is the verify threshold the core checks photos against.
        """
        self._synced = None  # the gallery changes: an index read before no longer holds
        start = time.perf_counter()
        self._ensure_schema(model_id, dim, rebuild)
        people = sorted({name for name, _ in people_photos})
        if len(people) != len(people_photos):
            raise GalleryError(f"{self.where}: a person is listed twice in the folder")
        photos = [(name, path, sha) for name, items in people_photos for path, sha in items]
        stats: dict[str, Any] = {"gallery": self.where, "model_id": model_id, "people": len(people),
                                  "photos": len(photos), "examined": 0, "embedded": 0, "reused": 0, "pruned": 0,
                                  "skipped": [], "not_enrolled": [], "index": None}
        with self.conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE IF NOT EXISTS facenet_folder_people (name text PRIMARY KEY)")
            cur.execute("CREATE TEMP TABLE IF NOT EXISTS facenet_folder_photos (name text, path text, sha256 text)")
            cur.execute("TRUNCATE facenet_folder_people, facenet_folder_photos")
            copy_rows(cur, "facenet_folder_people (name)", ((n,) for n in people))
            copy_rows(cur, "facenet_folder_photos (name, path, sha256)", photos)
            cur.execute("ANALYZE facenet_folder_photos")
            pending = self._pending(cur, model_id, retry)
        stats["reused"] = len({sha for _, _, sha in photos}) - len(pending)
        mark = time.perf_counter()
        new_results = self._examine(pending, examine, model_id, dim, batch)
        stats["examined"] = len(new_results)
        stats["embedded"] = sum(1 for r in new_results.values() if r["reason"] is None)
        stats["examine_s"] = round(time.perf_counter() - mark, 3)
        mark = time.perf_counter()
        enrollment = report if report is not None else EnrollmentReport(data_dir="", database=self.where)
        with self.conn.transaction(), self.conn.cursor() as cur:
            stats.update(self._apply(cur, model_id, [name for name, _ in people_photos], photos, enrollment, far))
        stats["write_s"] = round(time.perf_counter() - mark, 3)
        mark = time.perf_counter()
        stats["index"] = self._maybe_index() if build_index else None
        stats["index_s"] = round(time.perf_counter() - mark, 3)
        stats["seconds"] = round(time.perf_counter() - start, 3)
        return stats

    def _pending(self, cur: Any, model_id: str, retry: Callable[[dict[str, Any]], bool] | None) -> dict[str, str]:
        """{sha256: first relative path} of the folder's photos without a (usable or final) stored result."""
        cur.execute(
            """SELECT f.sha256, min(f.path), e.result FROM facenet_folder_photos f
               LEFT JOIN facenet_embeddings e ON e.sha256 = f.sha256 AND e.model_id = %s
               WHERE e.sha256 IS NULL OR e.result->>'reason' IS NOT NULL GROUP BY f.sha256, e.result""",
            (model_id,))
        return {sha: path for sha, path, result in cur.fetchall()
                if result is None or (retry is not None and retry(result))}

    def _examine(self, pending: dict[str, str], examine: Examine, model_id: str, dim: int,
                 batch: int) -> dict[str, dict[str, Any]]:
        """Run `examine` in batches and commit each batch's results (a cache by content: not yet the gallery)."""
        results: dict[str, dict[str, Any]] = {}
        items = list(pending.items())
        for begin in range(0, len(items), max(batch, 1)):
            chunk = dict(items[begin : begin + batch])
            found, vectors = examine(chunk)
            rows = []
            for sha in chunk:
                result = dict(found.get(sha) or {"reason": "not examined"})
                vector = vectors.get(sha) if result.get("reason") is None else None
                if result.get("reason") is None:
                    vector = np.asarray(vector, np.float32).reshape(-1) if vector is not None else None
                    if vector is None or vector.shape != (dim,) or not np.all(np.isfinite(vector)):
                        raise GalleryError(f"{self.where}: examine gave no valid {dim}-d vector for "
                                           f"{chunk[sha]}")
                result = json.loads(json.dumps(result, default=plain))
                results[sha] = result
                rows.append((sha, model_id, result, vector))
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.execute("CREATE TEMP TABLE IF NOT EXISTS facenet_new_results (sha256 text, model_id text, "
                            "result jsonb, embedding vector)")
                cur.execute("TRUNCATE facenet_new_results")
                copy_rows(cur, "facenet_new_results (sha256, model_id, result, embedding)", rows,
                      types=("text", "text", "jsonb", "vector"))
                cur.execute("""INSERT INTO facenet_embeddings (sha256, model_id, result, embedding)
                               SELECT sha256, model_id, result, embedding FROM facenet_new_results
                               ON CONFLICT (sha256, model_id) DO UPDATE
                               SET result = EXCLUDED.result, embedding = EXCLUDED.embedding""")
        return results

    def _apply(self, cur: Any, model_id: str, people: list[str], photos: list[tuple[str, str, str]],
               report: EnrollmentReport, far: float) -> dict[str, Any]:
        """The one transaction that changes the gallery: lock this folder's people, prune, add, recompute."""
        cur.execute("""INSERT INTO facenet_people (name) SELECT name FROM facenet_folder_people ORDER BY name
                       ON CONFLICT (name) DO NOTHING""")
        cur.execute("""SELECT p.id FROM facenet_people p JOIN facenet_folder_people f USING (name)
                       ORDER BY p.name FOR UPDATE OF p""")
        cur.execute("""DELETE FROM facenet_photos ph USING facenet_people p, facenet_folder_people fp
                       WHERE ph.person_id = p.id AND p.name = fp.name AND NOT EXISTS (
                           SELECT 1 FROM facenet_folder_photos f
                           WHERE f.name = p.name AND f.path = ph.path AND f.sha256 = ph.sha256)
                       RETURNING ph.person_id, ph.sha256""")
        removed = cur.fetchall()
        cur.execute("""INSERT INTO facenet_photos (person_id, path, sha256)
                       SELECT p.id, f.path, f.sha256 FROM facenet_folder_photos f JOIN facenet_people p USING (name)
                       ON CONFLICT (person_id, path) DO NOTHING""")
        if removed:  # results of photos no longer anywhere are biometric data we no longer need
            cur.execute("""DELETE FROM facenet_embeddings e WHERE e.sha256 = ANY(%s) AND NOT EXISTS (
                               SELECT 1 FROM facenet_photos ph WHERE ph.sha256 = e.sha256)""",
                        (sorted({sha for _, sha in removed}),))
        # the folder's photos and what examine said about each: the report
        cur.execute("""SELECT f.name, f.path, e.result->>'reason' FROM facenet_folder_photos f
                       LEFT JOIN facenet_embeddings e ON e.sha256 = f.sha256 AND e.model_id = %s
                       WHERE e.sha256 IS NULL OR e.result->>'reason' IS NOT NULL ORDER BY f.path""", (model_id,))
        skipped = [{"path": path, "reason": reason or "no stored result (examine it again)"}
                   for _, path, reason in cur.fetchall()]
        enrolled, touched = self._update_centroids(cur, model_id, people, photos, report, far)
        not_enrolled = sorted(set(people) - set(enrolled))
        return {"pruned": len(removed), "touched": touched, "skipped": skipped, "not_enrolled": not_enrolled}

    def _stored(self, cur: Any, model_id: str, shas: list[str]) -> tuple[dict[str, dict[str, Any]], Vector]:
        """The stored result of each photo (a placeholder failure when none) and a lookup of the embedded ones."""
        cur.execute("SELECT sha256, result, embedding FROM facenet_embeddings WHERE model_id = %s AND sha256 = ANY(%s)",
                    (model_id, shas), binary=True)
        results: dict[str, dict[str, Any]] = {}
        vectors: dict[str, np.ndarray] = {}
        for sha, result, embedding in cur.fetchall():
            results[sha] = result
            if embedding is not None and result.get("reason") is None:
                vectors[sha] = np.asarray(embedding, np.float32)
        for sha in shas:
            if sha not in results or (results[sha].get("reason") is None and sha not in vectors):
                results[sha] = {"reason": "no stored result (examine it again)"}
        return results, vectors.__getitem__

    def _update_centroids(self, cur: Any, model_id: str, people: list[str], photos: list[tuple[str, str, str]],
                          report: EnrollmentReport, far: float) -> tuple[list[str], int]:
        """Centroids and photo counts of the folder's people by the enrollment core (the file gallery's rule:
        duplicates counted once, likely-mislabeled photos left out); NULL for people without a usable photo.
        Only rows that change are written. Returns the people enrolled and how many rows changed."""
        results, vector = self._stored(cur, model_id, sorted({sha for _, _, sha in photos}))
        records = [{"path": path, "person": name, "sha256": sha} for name, path, sha in photos]
        names, centroids, counts = enroll(Path(report.data_dir or "."), people, records, results, vector, report, far)
        found = dict(zip(names, zip(counts, centroids, strict=True), strict=True))
        cur.execute("SELECT name, photo_count, centroid FROM facenet_people WHERE name = ANY(%s)", (people,),
                    binary=True)
        before = {name: (count, centroid) for name, count, centroid in cur.fetchall()}
        rows = [(name, *found.get(name, (0, None))) for name in people]
        rows = [row for row in rows if changed(before.get(row[0]), row[1], row[2])]
        if not rows:
            return names, 0
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS facenet_new_centroids (name text, photo_count integer, "
                    "centroid vector)")
        cur.execute("TRUNCATE facenet_new_centroids")
        copy_rows(cur, "facenet_new_centroids (name, photo_count, centroid)",
              ((n, c, None if v is None else np.asarray(v, np.float32)) for n, c, v in rows),
              types=("text", "int4", "vector"))
        cur.execute("""UPDATE facenet_people p SET photo_count = n.photo_count, centroid = n.centroid,
                       updated_at = now() FROM facenet_new_centroids n WHERE p.name = n.name""")
        return names, len(rows)

    @gallery_errors
    def remove_person(self, name: str) -> bool:
        """Remove one person, their photos and the results no other photo uses; False if not enrolled (a shared
        gallery keeps people whose folder is gone: it cannot tell them from another site's)."""
        self._synced = None  # the index read by the last sync no longer holds
        if self.meta() is None:
            return False
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute("SELECT id FROM facenet_people WHERE name = %s FOR UPDATE", (name,))
            row = cur.fetchone()
            if row is None:
                return False
            cur.execute("DELETE FROM facenet_photos WHERE person_id = %s RETURNING sha256", (row[0],))
            shas = sorted({r[0] for r in cur.fetchall()})
            cur.execute("DELETE FROM facenet_people WHERE id = %s", (row[0],))
            cur.execute("""DELETE FROM facenet_embeddings e WHERE e.sha256 = ANY(%s) AND NOT EXISTS (
                               SELECT 1 FROM facenet_photos ph WHERE ph.sha256 = e.sha256)""", (shas,))
        return True


def changed(before: tuple[int, Any] | None, count: int, centroid: np.ndarray | None) -> bool:
    """Whether a person's stored (photo count, centroid) differs from the new one (a person just added: yes)."""
    if before is None:
        return True
    old_count, old_centroid = before
    if old_count != count or (old_centroid is None) != (centroid is None):
        return True
    return centroid is not None and not np.array_equal(np.asarray(old_centroid, np.float32),
                                                       np.asarray(centroid, np.float32))


def plain(value: Any) -> Any:
    """JSON for numpy scalars and arrays in examine's results."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def copy_rows(cur: Any, target: str, rows: Iterable[Sequence[Any]], types: Sequence[str] | None = None) -> None:
    """Bulk-load rows with COPY (binary when `types` are given; vectors as numpy arrays)."""
    if types is None:
        with cur.copy(f"COPY {target} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    with cur.copy(f"COPY {target} FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)
