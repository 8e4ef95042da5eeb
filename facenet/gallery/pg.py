"""The enrollment gallery in PostgreSQL + pgvector: shared by many clients, enrolled concurrently, searched in SQL.

Tables (created on first enrollment, in the connection's current schema; schema version in `facenet_meta`):

    facenet_meta        one row: schema_version, model_id, dim, created_at
    facenet_people      id, name (unique), photo_count, centroid vector(dim) (NULL: no usable photo), updated_at
    facenet_photos      (person_id, path) -> sha256: the photos of each person's folder, by content hash
    facenet_embeddings  (sha256, model_id) -> result jsonb (what `examine` said) and embedding vector(dim)

One gallery holds ONE embedding model: a gallery made by another model id or dimension is refused with a
`GalleryError` (mixing models would compare incomparable vectors; the message says how many people a rebuild would
drop), or dropped and rebuilt only by an explicit `sync(..., rebuild=True)` (`--rebuild_gallery`).

`sync(data_dir, pipeline)` follows the `Gallery` protocol: the same enrollment core as the file gallery
(facenet.gallery.enroll) decides people, centroids and the report, so one folder gives the same gallery in both.
Photo hashes are cached by size + mtime in a local `photo_hashes.json` (the `cache_dir` given, e.g. --database_dir).

Concurrency contract of `sync_photos` (what makes two clients enrolling at once lose nothing):
  * a client only ever writes the people of ITS folder: their photos missing from the folder are pruned, people it
    does not have are never touched (remove a whole person with `remove_person`);
  * photos are examined (detected + embedded, the slow part) outside any lock; the results are stored in small
    committed batches keyed by content hash, so a killed enrollment keeps that work but not a half-changed gallery;
  * the gallery itself (people, photos, centroids) changes in ONE transaction per sync, which locks the folder's
    people rows (`SELECT ... FOR UPDATE`, in name order, so no deadlock): two syncs of the same person are
    serialized, syncs of different people run side by side, and readers see the previous state until commit;
  * centroids (the enrollment core's rule) of the folder's people are recomputed inside that transaction.
Readers (`load`, `load_centroids`, `nearest`) never create, prune or write anything.

Lookup: `load` for an exact in-memory search (small galleries, or gallery.search.ExactIndex), `nearest` in SQL by
inner product (`<#>`, centroids are unit vectors) through an HNSW index that `sync` creates once the gallery has
more than HNSW_MIN_PEOPLE people (below that an exact scan is as fast). Measured on 2 busy cores (bench/bench_pg.py,
random unit vectors): at 100k people an exact SQL scan takes 91 ms per face, HNSW 4-9 ms with recall@1 1.0 for
genuine queries at ef_search 100 (index built in 79 s); at 1M the exact scan takes 364 ms, the index 27 min to
build and recall@1 falls to 0.69 at ef_search 100 (m=16), while `load` takes 4.8 s and ExactIndex then answers
exactly in ~7 ms: beyond a few 100k people, prefer `load` + ExactIndex in the recognizing process.
"""

from __future__ import annotations

# psycopg and pgvector are imported where they are used (optional: the file gallery and every other mode need
# neither, and `import facenet` must not pay for them).
import contextlib
import functools
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facenet import redact
from facenet.files import atomic_write
from facenet.gallery.enroll import Vector, enroll, examine_photos, hash_photos, read_folder, reusable
from facenet.gallery.index import FaceDatabase
from facenet.gallery.report import EnrollmentReport, SharedSync
from facenet.gallery.thresholds import verify_threshold

if TYPE_CHECKING:
    from facenet.pipeline import FacePipeline

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
HNSW_MIN_PEOPLE = 10_000
"""Gallery size from which `sync` builds the HNSW index: an exact scan costs ~0.9 us per person (10 ms at 10k),
an HNSW lookup a few ms whatever the size (bench/bench_pg.py)."""
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 100
"""Candidates the HNSW search keeps (pgvector's default is 40); recall@1 measured by bench/bench_pg.py."""
EXAMINE_BATCH = 512
"""Photos per `examine` call; each batch's results are committed, so a killed enrollment keeps them."""
CONNECT_TIMEOUT = 5
"""Seconds to wait for the server before giving up (unless the URL says otherwise)."""

_LOCK_SCHEMA = 0x66616365  # advisory lock key: schema creation / rebuild / index creation ("face")
_TABLES = ("facenet_photos", "facenet_embeddings", "facenet_people", "facenet_meta")

Examine = Callable[[dict[str, Any]], tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]]
"""pending {sha256: relative path of one photo with those bytes} -> (results {sha256: {"reason": None or why
not usable, ...}}, vectors {sha256: unit vector (dim,)} for the usable ones)."""


class GalleryError(Exception):
    """A one-line, password-free reason why the gallery cannot be used."""


# --------------------------------------------------------------------------- connection


def mask_url(url: str) -> str:
    """The URL (or key=value conninfo) with the password removed, for messages and logs."""
    parts = redact.split_url(url)
    if parts is not None:  # a URL: never trusted to parse (a password may hold "@", "/", "?", "#", ":")
        scheme, user, _, rest = parts
        where = re.split(r"[?#]", rest, maxsplit=1)[0]
        return hide_secrets(f"{scheme}://{user + '@' if user else ''}{where}", url)
    try:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - an unparsable conninfo shows nothing of itself
        return "<database url>"
    user = info.get("user") or ""
    host = info.get("host") or "localhost"
    port = f":{info['port']}" if info.get("port") else ""
    db = info.get("dbname") or ""
    return hide_secrets(f"postgresql://{user + '@' if user else ''}{host}{port}/{db}", url)


def _parsed_password(url: str) -> list[str]:
    """The password psycopg parses from `url` (a conninfo too), beside what facenet.redact reads without parsing."""
    with contextlib.suppress(Exception):
        from psycopg.conninfo import conninfo_to_dict

        return [str(conninfo_to_dict(url).get("password") or "")]
    return []


def hide_secrets(text: str, url: str) -> str:
    """`text` with every spelling of `url`'s password replaced by ***: for any message that may quote the URL.

    Read without trusting the URL to parse (facenet.redact: the userinfo up to the last "@", `password=` keywords
    and query parameters, raw, percent-decoded and in pieces), plus what psycopg parses.
    """
    return redact.hide_secrets(text, url, _parsed_password(url))


def _reason(error: BaseException, url: str) -> str:
    """The first meaningful line of a driver error, without the password."""
    text = " ".join(hide_secrets(str(error), url).split())
    for prefix in ("connection failed: ", "FATAL: "):
        text = text.replace(prefix, "")
    return text[:300]


def _url_sets(parameter: str, url: str) -> bool:
    """Whether the URL's parameters (not its text: a database may be named connect_timeout_test) set `parameter`."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        return parameter in conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - an unparsable URL: connect says why
        return False


def _gallery_errors(method: Callable) -> Callable:
    """Turn a lost connection or tables dropped underneath (a rebuild by another client) into a GalleryError."""

    @functools.wraps(method)
    def wrapper(self: PgGallery, *args: Any, **kwargs: Any) -> Any:
        import psycopg

        try:
            return method(self, *args, **kwargs)
        except (psycopg.OperationalError, psycopg.errors.UndefinedTable) as error:
            raise GalleryError(f"{self.where}: {_reason(error, self.url)}") from None

    return wrapper


def _register_vector(conn: Any) -> None:
    """pgvector's adapters, with a loader that gives float32 numpy arrays directly (fast for big loads)."""
    from pgvector.psycopg import register_vector
    from psycopg.adapt import Loader
    from psycopg.types import TypeInfo

    register_vector(conn)
    info = TypeInfo.fetch(conn, "vector")

    class BinaryLoader(Loader):
        format = 1  # psycopg.pq.Format.BINARY

        def load(self, data: Any) -> np.ndarray:
            # pgvector binary: int16 dim, int16 unused, dim big-endian float32
            return np.frombuffer(data, ">f4", offset=4).astype(np.float32)

    class TextLoader(Loader):
        def load(self, data: Any) -> np.ndarray:
            return np.array(json.loads(bytes(data)), np.float32)

    conn.adapters.register_loader(info.oid, BinaryLoader)
    conn.adapters.register_loader(info.oid, TextLoader)


def _vector_text(vector: np.ndarray) -> str:
    return "[" + ",".join(repr(float(v)) for v in np.asarray(vector, np.float32)) + "]"


class PgGallery:
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
        self.url, self.cache_dir, self.rebuild = url, cache_dir, rebuild
        self.where = mask_url(url)
        kwargs = {} if _url_sets("connect_timeout", url) else {"connect_timeout": connect_timeout}
        try:
            self.conn = psycopg.connect(url, autocommit=True, **kwargs)
        except psycopg.Error as error:
            raise GalleryError(f"{self.where}: cannot connect: {_reason(error, url)}") from None
        self._vector_ready = False
        self._synced: FaceDatabase | None = None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> PgGallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------- the Gallery protocol

    def sync(self, data_dir: str | Path, pipeline: FacePipeline) -> EnrollmentReport:
        """Enroll the people of `data_dir` (only THIS folder's people are added, updated or pruned; others' are never
        touched) with the file gallery's enrollment core; the report of what it did (`shared`: this sync's
        PostgreSQL facts)."""
        data_dir = Path(data_dir)
        report = EnrollmentReport(data_dir=str(data_dir), database=self.where, fingerprint=pipeline.model_id)
        people = read_folder(data_dir, report)
        photos = hash_photos(data_dir, people, _read_hashes(self.cache_dir, data_dir), report)
        _write_hashes(self.cache_dir, data_dir, photos)

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
        report.threshold = round(database.threshold, 4)
        report.shared = SharedSync(**stats, gallery_people=len(database))
        return report

    def load(self, pipeline: FacePipeline) -> FaceDatabase:
        """The whole shared gallery as the lookup index for `pipeline` (read only: nothing is created or pruned).
        Right after `sync` it is the index that sync read (a big gallery is not read twice); else read now."""
        synced, self._synced = self._synced, None
        if synced is not None and synced.model_id == pipeline.model_id:
            return synced
        return self._read(pipeline)

    def _read(self, pipeline: FacePipeline) -> FaceDatabase:
        embedder = pipeline.embedder
        names, centroids, counts = self.load_centroids(pipeline.model_id, embedder.dim)
        return FaceDatabase(names, centroids, embedder.model_id, counts, distance_scale=embedder.distance_scale,
                            model=embedder.name, dim=embedder.dim)

    # ----------------------------------------------------------------------- schema

    def _table_exists(self, name: str) -> bool:
        return self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]

    def _ensure_vector_type(self) -> None:
        if not self._vector_ready:
            _register_vector(self.conn)
            self._vector_ready = True

    def meta(self) -> dict[str, Any] | None:
        """{"schema_version", "model_id", "dim", "created_at"} of the gallery, None when there is none yet."""
        if not self._table_exists("facenet_meta"):
            return None
        row = self.conn.execute("SELECT schema_version, model_id, dim, created_at FROM facenet_meta").fetchone()
        if row is None:
            return None
        version = row[0]
        if version != SCHEMA_VERSION:
            newer = isinstance(version, int) and version > SCHEMA_VERSION
            raise GalleryError(f"{self.where}: gallery schema version {version} is "
                               f"{'newer than' if newer else 'unknown to'} this facenet (it reads version "
                               f"{SCHEMA_VERSION}){'; upgrade facenet' if newer else ''}")
        return {"schema_version": version, "model_id": row[1], "dim": row[2], "created_at": row[3]}

    def _check_model(self, meta: dict[str, Any], model_id: str, dim: int) -> None:
        if meta["model_id"] != model_id or meta["dim"] != dim:
            raise GalleryError(
                f"{self.where}: the gallery was made by model {meta['model_id']!r} (dim {meta['dim']}), not "
                f"{model_id!r} (dim {dim}); use that model, or enroll again with this one (--enroll --rebuild_gallery "
                "drops everyone in it)")

    def _ensure_extension(self) -> None:
        import psycopg

        if self.conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
            return
        try:
            self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.InsufficientPrivilege:
            raise GalleryError(f"{self.where}: the database lacks the pgvector extension and this role may not "
                               "create it; ask an administrator to run: CREATE EXTENSION vector") from None
        except psycopg.Error as error:
            raise GalleryError(f"{self.where}: cannot enable the pgvector extension: {_reason(error, self.url)}"
                               ) from None

    def _ensure_schema(self, model_id: str, dim: int, rebuild: bool) -> dict[str, Any]:
        """Create the tables if missing (or drop and recreate them for another model when `rebuild`)."""
        import psycopg

        if not isinstance(dim, int) or dim <= 0:
            raise GalleryError(f"{self.where}: bad embedding dimension {dim!r}")
        self._ensure_extension()
        try:
            with self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_SCHEMA,))
                meta = self.meta()
                if meta is not None and (meta["model_id"] != model_id or meta["dim"] != dim):
                    people = self._people_count()
                    if not rebuild:
                        raise GalleryError(
                            f"{self.where}: the gallery was made by model {meta['model_id']!r} (dim {meta['dim']}) "
                            f"and holds {people} people (every site's); enrolling with {model_id!r} (dim {dim}) "
                            f"would drop all {people} of them: enroll with that model, or pass --rebuild_gallery "
                            "to drop them and rebuild it")
                    log.warning("%s: gallery of model %r (dim %d) and its %d people dropped to enroll %r (dim %d)",
                                self.where, meta["model_id"], meta["dim"], people, model_id, dim)
                    self.conn.execute("DROP TABLE IF EXISTS " + ", ".join(_TABLES) + " CASCADE")
                    meta = None
                if meta is None:
                    self._create_tables(model_id, dim)
                    meta = self.meta()
        except psycopg.errors.InsufficientPrivilege as error:
            raise GalleryError(f"{self.where}: this role may not create the gallery tables: "
                               f"{_reason(error, self.url)}") from None
        self._ensure_vector_type()
        assert meta is not None
        return meta

    def _people_count(self) -> int:
        """Everyone in the gallery, enrolled or not: what dropping it would lose."""
        return self.conn.execute("SELECT count(*) FROM facenet_people").fetchone()[0]

    def _create_tables(self, model_id: str, dim: int) -> None:
        for statement in (
            """CREATE TABLE IF NOT EXISTS facenet_meta (
                   singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                   schema_version integer NOT NULL, model_id text NOT NULL, dim integer NOT NULL,
                   created_at timestamptz NOT NULL DEFAULT now())""",
            f"""CREATE TABLE IF NOT EXISTS facenet_people (
                   id bigserial PRIMARY KEY, name text NOT NULL UNIQUE,
                   photo_count integer NOT NULL DEFAULT 0, centroid vector({dim}),
                   updated_at timestamptz NOT NULL DEFAULT now())""",
            f"""CREATE TABLE IF NOT EXISTS facenet_embeddings (
                   sha256 text NOT NULL, model_id text NOT NULL, result jsonb NOT NULL, embedding vector({dim}),
                   PRIMARY KEY (sha256, model_id))""",
            """CREATE TABLE IF NOT EXISTS facenet_photos (
                   person_id bigint NOT NULL REFERENCES facenet_people (id) ON DELETE CASCADE,
                   path text NOT NULL, sha256 text NOT NULL, PRIMARY KEY (person_id, path))""",
            "CREATE INDEX IF NOT EXISTS facenet_photos_sha256 ON facenet_photos (sha256)",
        ):
            self.conn.execute(statement)
        self.conn.execute("INSERT INTO facenet_meta (schema_version, model_id, dim) VALUES (%s, %s, %s)",
                          (SCHEMA_VERSION, model_id, dim))

    def _reader_meta(self, model_id: str, dim: int | None) -> dict[str, Any] | None:
        meta = self.meta()
        if meta is not None:
            self._check_model(meta, model_id, meta["dim"] if dim is None else dim)
            self._ensure_vector_type()
        return meta

    # ----------------------------------------------------------------------- enrollment

    @_gallery_errors
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
        pruned, skipped, not_enrolled, seconds). build_index=False leaves the HNSW index to a later
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
            _copy(cur, "facenet_folder_people (name)", ((n,) for n in people))
            _copy(cur, "facenet_folder_photos (name, path, sha256)", photos)
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
                result = json.loads(json.dumps(result, default=_plain))
                results[sha] = result
                rows.append((sha, model_id, result, vector))
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.execute("CREATE TEMP TABLE IF NOT EXISTS facenet_new_results (sha256 text, model_id text, "
                            "result jsonb, embedding vector)")
                cur.execute("TRUNCATE facenet_new_results")
                _copy(cur, "facenet_new_results (sha256, model_id, result, embedding)", rows,
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
        rows = [row for row in rows if _changed(before.get(row[0]), row[1], row[2])]
        if not rows:
            return names, 0
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS facenet_new_centroids (name text, photo_count integer, "
                    "centroid vector)")
        cur.execute("TRUNCATE facenet_new_centroids")
        _copy(cur, "facenet_new_centroids (name, photo_count, centroid)",
              ((n, c, None if v is None else np.asarray(v, np.float32)) for n, c, v in rows),
              types=("text", "int4", "vector"))
        cur.execute("""UPDATE facenet_people p SET photo_count = n.photo_count, centroid = n.centroid,
                       updated_at = now() FROM facenet_new_centroids n WHERE p.name = n.name""")
        return names, len(rows)

    def _maybe_index(self) -> str | None:
        """Build the HNSW index once the gallery is big enough (after the sync committed; readers go on)."""
        exists = self._table_exists("facenet_people_centroid_hnsw")
        if exists:
            return "hnsw"
        people = self.conn.execute("SELECT count(*) FROM facenet_people WHERE centroid IS NOT NULL").fetchone()[0]
        if people <= HNSW_MIN_PEOPLE:
            return None
        self.create_index()
        return "hnsw (built)"

    @_gallery_errors
    def create_index(self, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION, memory: str = "2GB"
                     ) -> float:
        """Build the HNSW index on the centroids now (inner product); returns the seconds it took.

        `memory` (maintenance_work_mem) should hold the whole graph (~1 KB per person at dim 128): beyond it
        pgvector goes on much more slowly.
        """
        start = time.perf_counter()
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_SCHEMA,))
            self.conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", (memory,))
            self.conn.execute(f"""CREATE INDEX IF NOT EXISTS facenet_people_centroid_hnsw ON facenet_people
                                  USING hnsw (centroid vector_ip_ops) WITH (m = {int(m)},
                                  ef_construction = {int(ef_construction)})""")
        return time.perf_counter() - start

    def drop_index(self) -> None:
        self.conn.execute("DROP INDEX IF EXISTS facenet_people_centroid_hnsw")

    @_gallery_errors
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

    # ----------------------------------------------------------------------- lookup (read only)

    @_gallery_errors
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

    @_gallery_errors
    def nearest(
        self, queries: np.ndarray, model_id: str, k: int = 1, exact: bool | None = None,
        ef_search: int = HNSW_EF_SEARCH,
    ) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
        """k nearest centroids of each query by inner product, in SQL: (names [Q][k], similarities (Q, k),
        photo counts (Q, k)); rows are padded with "" / -inf / 0 when fewer people are enrolled.

        exact=None uses the HNSW index when there is one, True forces an exact scan, False requires the index.
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
        if exact is False and not self._table_exists("facenet_people_centroid_hnsw"):
            raise GalleryError(f"{self.where}: no HNSW index (it is built once the gallery has more than "
                               f"{HNSW_MIN_PEOPLE} people, or by create_index)")
        with self.conn.transaction(), self.conn.cursor(binary=True) as cur:
            if exact:
                cur.execute("SET LOCAL enable_indexscan = off")
            else:
                cur.execute(f"SET LOCAL hnsw.ef_search = {max(int(ef_search), k)}")
            cur.execute("""SELECT q.i, n.name, n.photo_count, n.sim FROM unnest(%s::vector[]) WITH ORDINALITY
                           AS q(v, i) CROSS JOIN LATERAL (
                               SELECT name, photo_count, -(centroid <#> q.v) AS sim FROM facenet_people
                               WHERE centroid IS NOT NULL ORDER BY centroid <#> q.v LIMIT %s) n
                           ORDER BY q.i, n.sim DESC""", ([_vector_text(q) for q in queries], k))
            slot = np.zeros(len(queries), int)
            for i, name, count, sim in cur.fetchall():
                row = i - 1
                names[row][slot[row]], sims[row, slot[row]], counts[row, slot[row]] = name, sim, count
                slot[row] += 1
        return names, sims, counts

    @_gallery_errors
    def stats(self) -> dict[str, Any]:
        """People enrolled, photos, stored results and whether the HNSW index exists (for reports)."""
        if self.meta() is None:
            return {"people": 0, "photos": 0, "results": 0, "hnsw": False}
        people, photos, results = self.conn.execute(
            """SELECT (SELECT count(*) FROM facenet_people WHERE centroid IS NOT NULL),
                      (SELECT count(*) FROM facenet_photos), (SELECT count(*) FROM facenet_embeddings)""").fetchone()
        return {"people": people, "photos": photos, "results": results,
                "hnsw": self._table_exists("facenet_people_centroid_hnsw")}


def _changed(before: tuple[int, Any] | None, count: int, centroid: np.ndarray | None) -> bool:
    """Whether a person's stored (photo count, centroid) differs from the new one (a person just added: yes)."""
    if before is None:
        return True
    old_count, old_centroid = before
    if old_count != count or (old_centroid is None) != (centroid is None):
        return True
    return centroid is not None and not np.array_equal(np.asarray(old_centroid, np.float32),
                                                       np.asarray(centroid, np.float32))


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and arrays in examine's results."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _copy(cur: Any, target: str, rows: Iterable[Sequence[Any]], types: Sequence[str] | None = None) -> None:
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


HASH_CACHE = "photo_hashes.json"
"""Where a PostgreSQL sync keeps the photo hashes of its data folder (in the local cache folder it is given)."""


def _read_hashes(cache_dir: str | Path | None, data_dir: Path) -> dict[str, Any]:
    """{relative path: photo record} hashed by the last sync of this very folder; empty when none or unreadable."""
    if cache_dir is None:
        return {}
    try:
        cached = json.loads((Path(cache_dir) / HASH_CACHE).read_text(encoding="utf-8"))
        if cached.get("data_dir") != str(data_dir.resolve()):
            return {}
        return {p["path"]: p for p in cached["photos"] if {"path", "size", "mtime_ns", "sha256"} <= p.keys()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _write_hashes(cache_dir: str | Path | None, data_dir: Path, photos: list[dict[str, Any]]) -> None:
    """Save the photo hashes for the next sync (atomically); a failure only costs hashing again."""
    if cache_dir is None:
        return
    text = json.dumps({"data_dir": str(data_dir.resolve()), "photos": photos}, ensure_ascii=False)
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        atomic_write(Path(cache_dir) / HASH_CACHE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as error:
        log.warning("%s: could not cache the photo hashes (%s)", Path(cache_dir) / HASH_CACHE, error)

