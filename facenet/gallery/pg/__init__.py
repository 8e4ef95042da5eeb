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

Lookup: `load` gives a FaceDatabase: below NO_COPY_MIN_PEOPLE people every centroid is read for an exact
in-memory search (gallery.search.ExactIndex for big ones); from it on the database keeps no copy: `PgSearcher`
(one connection per thread) keeps compact codes, shortlists locally and re-ranks exactly with the centroids it
fetches by key (`rerank`): same names, distances, per-person thresholds,
scores and negatives. `nearest` searches by inner product (`<#>`, centroids are unit vectors) through an IVFFlat
index that `sync` creates once the gallery has more than HNSW_MIN_PEOPLE people (below that an exact scan is as
fast) with sqrt(people) lists, rebuilds when the gallery grew IVF_REGROW-fold, and scans IVF_PROBES lists of: at 1M
people of dim 256 (bench/bench_pg.py, pgvector 0.6.2) it builds in well under a minute with recall@1 ~1.0 for
genuine queries, where HNSW (m 16) took 27 min to build for 0.69. pgvector 0.6.2 has no halfvec or binary
quantisation (0.7); IVFFlat stores full vectors, so what it finds is exact within the lists it scans.

The package, one module per job: `urls` (secrets in URLs: masked URLs, password-free errors, GalleryError), `schema`
(tables, model check, pgvector type, the index), `sync` (enrollment), `queries` (lookup), `searcher` (PgSearcher:
lookups in SQL for a FaceDatabase), `hashes` (the local photo hash cache) and `gallery` (PgGallery, the `Gallery`
protocol over all of them).
"""


from __future__ import annotations

# psycopg and pgvector are imported where they are used (optional: the file gallery and every other mode need
# neither, and `import facenet` must not pay for them).
from facenet.gallery.pg.gallery import CONNECT_TIMEOUT, NO_COPY_MIN_PEOPLE, PgGallery
from facenet.gallery.pg.hashes import HASH_CACHE
from facenet.gallery.pg.queries import HNSW_EF_SEARCH
from facenet.gallery.pg.schema import (
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    HNSW_MIN_PEOPLE,
    INDEXES,
    IVF_PROBES,
    IVF_REGROW,
    SCHEMA_VERSION,
    ivf_lists,
    vector_text,
)
from facenet.gallery.pg.searcher import PgSearcher
from facenet.gallery.pg.sync import EXAMINE_BATCH, Examine
from facenet.gallery.pg.urls import GalleryError, hide_secrets, mask_url

_vector_text = vector_text  # its name before the split (tests/test_pg_gallery.py)

__all__ = ["CONNECT_TIMEOUT", "EXAMINE_BATCH", "HASH_CACHE", "HNSW_EF_CONSTRUCTION", "HNSW_EF_SEARCH", "HNSW_M",
           "HNSW_MIN_PEOPLE", "INDEXES", "IVF_PROBES", "IVF_REGROW", "NO_COPY_MIN_PEOPLE", "SCHEMA_VERSION", "Examine",
           "GalleryError", "PgGallery", "PgSearcher", "hide_secrets", "ivf_lists", "mask_url", "vector_text"]
