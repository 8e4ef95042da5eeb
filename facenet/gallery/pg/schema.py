"""The gallery's tables (created on first enrollment, versioned in `facenet_meta`), the one embedding model they
hold, pgvector's vector type and the index on the centroids (IVFFlat; HNSW on request)."""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import numpy as np

from facenet.gallery.pg.urls import GalleryError, gallery_errors, reason

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
HNSW_MIN_PEOPLE = 10_000
"""Gallery size from which `sync` builds the index: an exact scan costs ~0.9 us per person (10 ms at 10k), an
index lookup a few ms (bench/bench_pg.py)."""
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
IVF_PROBES = 32
"""IVFFlat lists a lookup scans exactly (of sqrt(people) lists: `ivf_lists`). bench/bench_pg.py, 1M people of
dim 256 shaped like real fused embeddings, pgvector 0.6.2: recall@1 of genuine queries 0.96 at 8, 0.993 at 16,
1.000 at 32 (~20 ms per face on 2 busy cores); the build takes ~40 s where HNSW (m 16) took 27 min for 0.69."""
IVF_REGROW = 4
"""`sync` rebuilds the IVFFlat index once the gallery has this many times the people its lists were made for
(lists are k-means cells of the rows at build time; new rows join the nearest one and cells only grow)."""
INDEXES = {"ivfflat": "facenet_people_centroid_ivfflat", "hnsw": "facenet_people_centroid_hnsw"}
"""Index kind -> its name (a gallery has one: IVFFlat, built by `sync`; HNSW by `create_index("hnsw")` or made by
an earlier facenet, still used)."""


def ivf_lists(people: int) -> int:
    """IVFFlat lists for a gallery of `people`: sqrt(people) (pgvector's advice beyond 1M rows; 1000 at 1M)."""
    return max(1, round(math.sqrt(people)))


PEOPLE_INDEXES = {
    "facenet_people_updated_at": "facenet_people (updated_at)",
    "facenet_people_enrolled": "facenet_people (photo_count) WHERE centroid IS NOT NULL",
}
"""Indexes that keep a big gallery's reload from reading every row: the rows changed since a no-copy client's codes
(`refresh_codes`) and the size and median photo count (`size`, an index-only scan). A writer adds those missing
from a gallery made by an earlier facenet."""

LOCK_SCHEMA = 0x66616365  # advisory lock key: schema creation / rebuild / index creation ("face")
TABLES = ("facenet_photos", "facenet_embeddings", "facenet_people", "facenet_meta")


def register_vector(conn: Any) -> None:
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


def vector_text(vector: np.ndarray) -> str:
    return "[" + ",".join(repr(float(v)) for v in np.asarray(vector, np.float32)) + "]"


class Schema:
    """One client's connection to the gallery: its tables, model and index (what enrollment and lookup build on)."""

    conn: Any
    url: str
    where: str
    _vector_ready: bool
    _indexes_refused = False  # this role may not build PEOPLE_INDEXES (said once)

    def _table_exists(self, name: str) -> bool:
        return self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]

    def _ensure_vector_type(self) -> None:
        if not self._vector_ready:
            register_vector(self.conn)
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
            raise GalleryError(f"{self.where}: cannot enable the pgvector extension: {reason(error, self.url)}"
                               ) from None

    def _ensure_schema(self, model_id: str, dim: int, rebuild: bool) -> dict[str, Any]:
        """Create the tables if missing (or drop and recreate them for another model when `rebuild`)."""
        import psycopg

        if not isinstance(dim, int) or dim <= 0:
            raise GalleryError(f"{self.where}: bad embedding dimension {dim!r}")
        self._ensure_extension()
        try:
            with self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_SCHEMA,))
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
                    self.conn.execute("DROP TABLE IF EXISTS " + ", ".join(TABLES) + " CASCADE")
                    meta = None
                if meta is None:
                    self._create_tables(model_id, dim)
                    meta = self.meta()
                self._ensure_people_indexes()
        except psycopg.errors.InsufficientPrivilege as error:
            raise GalleryError(f"{self.where}: this role may not create the gallery tables: "
                               f"{reason(error, self.url)}") from None
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

    def _ensure_people_indexes(self) -> None:
        """PEOPLE_INDEXES, those missing built (once; the existence check takes no lock on the table). A role that
        may write rows but not own the table goes on without them (reloads then read the whole table), with one
        warning per connection."""
        import psycopg

        for name, columns in PEOPLE_INDEXES.items():
            if self._indexes_refused or self._table_exists(name):
                continue
            try:
                with self.conn.transaction():
                    self.conn.execute(f"CREATE INDEX {name} ON {columns}")
            except psycopg.errors.InsufficientPrivilege as error:
                self._indexes_refused = True
                log.warning("%s: indexes %s not built (a reload reads the whole table until the owner syncs): %s",
                            self.where, ", ".join(PEOPLE_INDEXES), reason(error, self.url))

    def _reader_meta(self, model_id: str, dim: int | None) -> dict[str, Any] | None:
        meta = self.meta()
        if meta is not None:
            self._check_model(meta, model_id, meta["dim"] if dim is None else dim)
            self._ensure_vector_type()
        return meta

    def _maybe_index(self) -> str | None:
        """Build the index once the gallery is big enough, and the IVFFlat one again when it outgrew its lists (after
        the sync committed; readers go on, with the old index during a rebuild)."""
        if self._table_exists(INDEXES["hnsw"]):
            return "hnsw"
        people = self._people_count()
        lists = self._ivf_lists()
        if lists is not None and people <= IVF_REGROW * lists * lists:
            return "ivfflat"
        if people <= HNSW_MIN_PEOPLE:
            return None
        self.create_index()
        return "ivfflat (built)" if lists is None else "ivfflat (rebuilt)"

    def _ivf_lists(self) -> int | None:
        """The lists of the gallery's IVFFlat index, None when it has none."""
        row = self.conn.execute("SELECT reloptions FROM pg_class WHERE oid = to_regclass(%s)",
                                (INDEXES["ivfflat"],)).fetchone()
        if row is None:
            return None
        options = dict(option.split("=", 1) for option in row[0] or [])
        return int(options.get("lists", 100))  # pgvector's default

    @gallery_errors
    def create_index(self, kind: str = "ivfflat", m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION,
                     lists: int | None = None, memory: str = "2GB") -> float:
        """Build (or rebuild) the index on the centroids now (inner product); returns the seconds it took.

        "ivfflat": `lists` k-means cells (default `ivf_lists` of the gallery's size), built beside the old one and
        swapped in, so readers keep an index throughout. "hnsw": m / ef_construction; `memory`
        (maintenance_work_mem) should hold the whole graph (~1 KB per person at dim 128), beyond it pgvector goes
        on much more slowly. One index at a time: building one drops the other kind.
        """
        if kind not in INDEXES:
            raise ValueError(f"index kind {kind!r}: one of {sorted(INDEXES)}")
        start = time.perf_counter()
        if kind == "hnsw":
            using = f"hnsw (centroid vector_ip_ops) WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
        else:
            lists = lists or ivf_lists(self._people_count())
            using = f"ivfflat (centroid vector_ip_ops) WITH (lists = {int(lists)})"
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_SCHEMA,))
            self.conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", (memory,))
            self.conn.execute(f"DROP INDEX IF EXISTS {INDEXES[kind]}_new")
            self.conn.execute(f"CREATE INDEX {INDEXES[kind]}_new ON facenet_people USING {using}")
        with self.conn.transaction():  # the swap: a moment's exclusive lock
            self.conn.execute("DROP INDEX IF EXISTS " + ", ".join(INDEXES.values()))
            self.conn.execute(f"ALTER INDEX {INDEXES[kind]}_new RENAME TO {INDEXES[kind]}")
        return time.perf_counter() - start

    def drop_index(self) -> None:
        self.conn.execute("DROP INDEX IF EXISTS " + ", ".join(INDEXES.values()))
