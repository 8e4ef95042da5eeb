"""Nearest-neighbour search over enrolled vectors (centroids) by inner product, fast enough for millions of people.

`ExactIndex` returns exactly the top k of a plain float32 brute force (ties aside) but reads 4x less memory per
query: a scan of int8 codes (faiss, SIMD, all cores) keeps a shortlist, the shortlist is re-ranked in float32,
and a rigorous bound on the int8 error proves that nothing outside the shortlist can beat the k-th re-ranked
score; a query whose proof fails (near-ties) gets a longer shortlist, up to the whole gallery. Many queries at
once (>= BLAS_QUERIES) and small galleries (< SMALL_GALLERY) go through blocked float32 matrix products instead,
which are exact by construction and faster there. Without faiss everything takes that float32 path.

`ClusterIndex` is approximate, for galleries where a frame of faces must be named faster than a scan of everyone
allows (10 faces among 1 M people in < 20 ms): k-means cells (faiss IVF) with 4-bit PQ fast-scan codes shortlist
candidates from the few cells nearest to each query, and the shortlist is re-ranked in float32 from the caller's
vectors. It builds in seconds (~10 s at 1 M), takes additions, and adds ~40 bytes per vector.
It re-ranks in float32, so the similarities it returns are exact, only the recall is approximate; a miss returns
someone less similar than the true nearest, so an approximate lookup can leave a face unknown but never match it
closer. (An HNSW graph searches as fast but builds in 13 min at 1 M on 2 cores: bench/bench_search.py --approx.)

Both take any `dim` (128 for one model, 256 for a fused one) and any vector norms; for unit vectors the inner
product is the cosine similarity, and the Euclidean distance is sqrt(2 - 2 s).
"""

from __future__ import annotations

import os
import time

import numpy as np

try:  # faiss-cpu is a wheel; without it ExactIndex falls back to exact float32 products
    import faiss
except ImportError:  # pragma: no cover - exercised only where faiss is missing
    faiss = None

SHORTLIST = 32
"""First shortlist length of the int8 scan per query (grown x8 while the exactness proof fails)."""

SMALL_GALLERY = 30_000
"""Below this many vectors a float32 product is as fast as the int8 scan (measured by bench/bench_search.py)."""

BLAS_QUERIES = 64
"""From this many queries at once, blocked float32 products beat one int8 scan per query (measured)."""

BLOCK_ELEMENTS = 1 << 23
"""Scores per block of the float32 path (queries x rows): 32 MB, bounds the memory of a search."""

CLUSTER_PROBES = 32
"""Cells a ClusterIndex scans per query, of ~sqrt(N): recall@1 of genuine queries 0.999-1.000 at 1 M people, dims 128
and 256, random or LFW-like (16 cells: 0.979-0.994; bench/bench_search.py, docs/benchmarks.md)."""

CLUSTER_SHORTLIST = 64
"""Candidates per query that a ClusterIndex re-ranks in float32 (its 4-bit codes only approximate the order)."""

CLUSTER_PQ_CODES = 64
"""4-bit product-quantizer codes per vector of a ClusterIndex (the most that divide dim, at most this many): 32
bytes a vector (with its 8-byte id, 40 MB at 1 M people). Measured at 1 M (bench/bench_search.py, LFW-like): 64
codes keep recall@1 of genuine faces 0.999-1.000 at dims 128 and 256; for the fused 256-d vector they halve the
memory and the scan of 128 codes (10 faces 3.2 -> 1.8 ms) at the same recall; 32 codes at dim 128 drop it to 0.82."""

CLUSTER_SEARCH_THREADS = 1
"""Cores a ClusterIndex search uses: a 10-face frame costs ~2 ms on one, while an OpenMP team on 2 cores shared with
other work waits for its slowest member (4 ms stalls per call measured here); a server's other core stays free."""

CLUSTER_MIN_TRAIN = 4096
"""A ClusterIndex with fewer vectors searches them by brute force: k-means and PQ need data to train on."""

CLUSTER_REBUILD_GROWTH = 4
"""A ClusterIndex retrains (cells ~sqrt(N)) once additions have grown it this many times over its last training."""

_EPS32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff of float32


def _as_matrix(values: np.ndarray, dim: int) -> np.ndarray:
    """C-contiguous float32 (n, dim); no copy when already so."""
    return _checked_shape(np.ascontiguousarray(values, dtype=np.float32), dim, np.shape(values))


def _as_rows(values: np.ndarray, dim: int) -> np.ndarray:
    """C-contiguous (n, dim) rows to re-rank from: float16 kept as it is (a compact gallery's centroids, see
    FaceDatabase), anything else as `_as_matrix`; no copy when already so."""
    if np.asarray(values).dtype == np.float16:
        rows = np.ascontiguousarray(values)
        return rows.reshape(-1, dim) if rows.size == 0 else _checked_shape(rows, dim, np.shape(values))
    return _as_matrix(values, dim)


def _checked_shape(matrix: np.ndarray, dim: int, shape: tuple) -> np.ndarray:
    if matrix.ndim == 1 and matrix.size == dim:
        matrix = matrix.reshape(1, dim)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise ValueError(f"expected vectors of dimension {dim}, got shape {shape}")
    return matrix


def _empty_result(queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((queries, k), -1, np.int64), np.full((queries, k), -np.inf, np.float32)


def _pad(indices: np.ndarray, similarities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Widen (Q, k') results to k columns with -1 / -inf (k > number of vectors)."""
    if indices.shape[1] == k:
        return indices, similarities
    out_i, out_s = _empty_result(len(indices), k)
    out_i[:, : indices.shape[1]] = indices
    out_s[:, : indices.shape[1]] = similarities
    return out_i, out_s


def _order(indices: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best (score descending, then index ascending) of candidate `indices` with `scores`."""
    rows = np.arange(len(scores))[:, None]
    if scores.shape[1] > k:
        keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        indices, scores = indices[rows, keep], scores[rows, keep]
    order = np.lexsort((indices, -scores), axis=1)
    return indices[rows, order], scores[rows, order]


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Reference top k by float32 inner product, in blocks of rows (memory bounded, exact by construction)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1] if vectors.ndim == 2 else np.shape(queries)[-1]
    queries = _as_matrix(queries, dim)
    if len(vectors) == 0 or len(queries) == 0 or k <= 0:
        return _empty_result(len(queries), max(k, 0))
    kk = min(k, len(vectors))
    block = max(BLOCK_ELEMENTS // len(queries), 4 * kk, 1024)
    best_i: np.ndarray | None = None
    best_s: np.ndarray | None = None
    for start in range(0, len(vectors), block):
        scores = queries @ vectors[start : start + block].T
        if kk == 1:
            top = scores.argmax(axis=1)[:, None]
            cand_i, cand_s = top + start, np.take_along_axis(scores, top, axis=1)
        else:
            cand = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if scores.shape[1] > kk else (
                np.broadcast_to(np.arange(scores.shape[1]), scores.shape))
            cand_i, cand_s = cand + start, np.take_along_axis(scores, cand, axis=1)
        if best_i is None:
            best_i, best_s = cand_i, cand_s
        else:
            best_i, best_s = np.concatenate([best_i, cand_i], axis=1), np.concatenate([best_s, cand_s], axis=1)
        best_i, best_s = _order(best_i, best_s, kk)
    assert best_i is not None and best_s is not None
    return _pad(best_i.astype(np.int64), best_s.astype(np.float32), k)


class ExactIndex:
    """Exact top-k inner-product search; see the module docstring for how and why.

    `vectors` (n, dim) is kept by reference when already C-contiguous float32 (the caller's centroid matrix),
    so the index itself adds the int8 codes only: n * dim bytes (128 MB at 1 M x 128).
    """

    def __init__(self, vectors: np.ndarray, dim: int | None = None, threads: int | None = None) -> None:
        array = np.asarray(vectors)
        self.dim = int(dim if dim is not None else (array.shape[1] if array.ndim == 2 else 0))
        self.vectors = _as_matrix(array.reshape(-1, self.dim) if array.size == 0 else array, self.dim)
        self.threads = threads
        self._faiss = None
        # integer dot products stay exact in faiss's float32 up to 2**24: 127 * 127 * dim < 2**24 for dim <= 1040
        if faiss is not None and len(self.vectors) >= SMALL_GALLERY and 127 * 127 * self.dim < 2**24:
            self._build_int8()

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def nbytes(self) -> int:
        """Memory the index adds to the vectors it was given (the int8 codes)."""
        return len(self.vectors) * self.dim if self._faiss is not None else 0

    @property
    def method(self) -> str:
        return "int8 scan + float32 re-rank" if self._faiss is not None else "float32 blocked product"

    def _build_int8(self, chunk: int = 65_536) -> None:
        """Quantize with one global scale (int8 codes in [-127, 127]) and record the error bounds."""
        vectors = self.vectors
        peak = float(np.abs(vectors).max()) if vectors.size else 0.0
        self._scale = peak / 127.0 if peak > 0 else 1.0
        self._max_norm = 0.0
        self._max_error = 0.0
        # one shard per core, searched by parallel threads: a single query uses every core
        shards = max(1, min(self.threads or default_threads(), len(vectors) // 4096 or 1))
        bounds = np.linspace(0, len(vectors), shards + 1).astype(int)
        self._parts = []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            part = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_8bit_direct_signed,
                                              faiss.METRIC_INNER_PRODUCT)
            for start in range(lo, hi, chunk):
                block = vectors[start : min(start + chunk, hi)].astype(np.float64)
                codes = np.rint(block / self._scale)
                self._max_norm = max(self._max_norm, float(np.sqrt((block * block).sum(axis=1)).max()))
                residual = block - codes * self._scale
                self._max_error = max(self._max_error, float(np.sqrt((residual * residual).sum(axis=1)).max()))
                part.add(codes.astype(np.float32))
            self._parts.append(part)  # IndexShards does not own its shards: keep them alive here
        index = faiss.IndexShards(self.dim, True, True)  # threaded, ids continue from shard to shard
        for part in self._parts:
            index.add_shard(part)
        self._faiss = index
        self._check_int8()

    def _check_int8(self) -> None:
        """The proof needs faiss to return exact integer dot products of integer queries with the codes."""
        rng = np.random.default_rng(0)
        probe = rng.integers(-127, 128, (2, self.dim)).astype(np.float32)
        scores, ids = self._faiss.search(probe, 4)
        codes = np.rint(self.vectors[ids.ravel()].astype(np.float64) / self._scale).reshape(2, 4, self.dim)
        expected = np.einsum("qkd,qd->qk", codes, probe.astype(np.float64))
        if not np.array_equal(scores.astype(np.float64), expected):  # pragma: no cover - a faiss change
            self._faiss = None

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(Q, dim) queries -> (indices (Q, k) int64, similarities (Q, k) float32), best first.

        Equal to `brute_force` up to ties; k beyond the number of vectors is padded with -1 / -inf.
        """
        queries = _as_matrix(queries, self.dim)
        if len(self) == 0 or len(queries) == 0 or k <= 0:
            return _empty_result(len(queries), max(k, 0))
        if self._faiss is None or len(queries) >= BLAS_QUERIES:
            return brute_force(self.vectors, queries, k)
        if self.threads is not None:
            faiss.omp_set_num_threads(self.threads)
        kk = min(k, len(self))
        indices = np.empty((len(queries), kk), np.int64)
        similarities = np.empty((len(queries), kk), np.float32)
        pending = np.arange(len(queries))
        shortlist = min(len(self), max(SHORTLIST, 4 * kk))
        while len(pending):
            if shortlist * 4 > len(self):  # near-ties everywhere: a float32 scan is cheaper than a huge shortlist
                indices[pending], similarities[pending] = brute_force(self.vectors, queries[pending], kk)
                break
            proven = self._search_int8(queries[pending], kk, shortlist, indices, similarities, pending)
            pending = pending[~proven]
            shortlist *= 8
        return _pad(indices, similarities, k)

    def _search_int8(
        self, queries: np.ndarray, k: int, shortlist: int, indices: np.ndarray, similarities: np.ndarray,
        rows: np.ndarray,
    ) -> np.ndarray:
        """Shortlist by int8 scores, re-rank in float32, write rows whose result is proven; return which were.

        With q = s_q q8 + eq and c = s_c c8 + ec (codes q8, c8; residuals eq, ec), the true score q.c differs
        from the int8 estimate a = s_q s_c (q8.c8) by at most |eq| |c| + s_q |q8| |ec| (Cauchy-Schwarz), and a
        float32 dot product from the true one by at most d u/(1 - d u) |q| |c|. So when the shortlist's last
        estimate plus these bounds is below the k-th re-ranked score, no vector left out can reach the top k.
        """
        q = queries.astype(np.float64)
        q_scale = np.abs(q).max(axis=1) / 127.0
        q_scale[q_scale == 0] = 1.0
        q_codes = np.rint(q / q_scale[:, None])
        q_error = np.linalg.norm(q - q_codes * q_scale[:, None], axis=1)
        rounding = self.dim * _EPS32 / (1 - self.dim * _EPS32)
        bound = (q_error * self._max_norm + q_scale * np.linalg.norm(q_codes, axis=1) * self._max_error
                 + 2 * rounding * np.linalg.norm(q, axis=1) * self._max_norm + 1e-12)
        scores, ids = self._faiss.search(q_codes.astype(np.float32), shortlist)
        estimate_last = scores[:, -1].astype(np.float64) * q_scale * self._scale
        exact = np.matmul(self.vectors[ids], queries[:, :, None])[:, :, 0]
        top_i, top_s = _order(ids, exact, k)
        proven = estimate_last + bound < top_s[:, -1]
        indices[rows[proven]] = top_i[proven]
        similarities[rows[proven]] = top_s[proven]
        return proven


def exact_rerank(vectors: np.ndarray, queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of candidate row `ids` (Q, s) of `vectors` (float32, or float16 rows taken as they are) by exact
    float32 inner product, best first (ties: lower row first); -1 = no candidate, padded with -1 / -inf."""
    found = ids >= 0
    rows = vectors[np.where(found, ids, 0)].astype(np.float32, copy=False)
    exact = np.matmul(rows, queries[:, :, None])[:, :, 0]
    exact[~found] = -np.inf
    top_i, top_s = _order(np.where(found, ids, -1), exact, min(k, ids.shape[1]))
    return _pad(top_i.astype(np.int64), top_s.astype(np.float32), k)


def _cluster_codes(dim: int, people: int, sample: np.ndarray) -> faiss.Index:
    """An empty IVF + 4-bit PQ fast-scan index for `people` vectors (~sqrt(people) cells), trained on `sample` (at
    most 64 rows per cell of it: k-means and PQ converge on ~40-64 points per cell, and the build stays seconds)."""
    lists = max(1, int(round(np.sqrt(people))))
    if len(sample) > 64 * lists:
        sample = sample[np.sort(np.random.default_rng(0).choice(len(sample), 64 * lists, replace=False))]
    codes = max(m for m in range(1, min(dim, CLUSTER_PQ_CODES) + 1) if dim % m == 0)
    index = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(dim), dim, lists, codes, 4, faiss.METRIC_INNER_PRODUCT)
    index.by_residual = False  # one lookup table per query, not per cell: faster, and re-ranking fixes order
    index.cp.niter = 10
    index.cp.min_points_per_centroid = 1  # a sample of ~64 per cell is enough: no warning, no resampling
    index.pq.cp.niter = 10  # codebooks only shortlist (re-ranked): 10 k-means rounds, not 25
    index.train(_as_matrix(sample, dim))
    return index


def _shortlist(index: faiss.Index, queries: np.ndarray, size: int, probes: int) -> np.ndarray:
    """(Q, size) ids of the best codes in the `probes` cells nearest each query (-1 pad), on CLUSTER_SEARCH_THREADS."""
    params = faiss.SearchParametersIVF()
    params.nprobe = min(probes, index.nlist)
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(CLUSTER_SEARCH_THREADS)  # this thread's setting only; restored below
    try:
        return index.search(queries, size, params=params)[1]
    finally:
        faiss.omp_set_num_threads(before)


class ClusterShortlist:
    """ClusterIndex's codes without its vectors: which rows each query should look at, in a gallery whose vectors
    live elsewhere (a PostgreSQL gallery's clients, facenet.gallery.pg.PgSearcher, which re-rank the shortlist
    exactly with the rows they fetch). Rows are named by the caller's ids; ~40 bytes per row."""

    def __init__(self, dim: int, sample: np.ndarray, people: int, probes: int = CLUSTER_PROBES) -> None:
        """`sample`: vectors like the ones to come (trains ~sqrt(people) cells); `people`: how many will be added."""
        if faiss is None:
            raise ImportError("ClusterShortlist needs faiss: pip install faiss-cpu")
        self.dim, self.probes = dim, probes
        self._faiss = _cluster_codes(dim, people, sample)

    def __len__(self) -> int:
        return int(self._faiss.ntotal)

    @property
    def lists(self) -> int:
        """Number of k-means cells."""
        return int(self._faiss.nlist)

    @property
    def nbytes(self) -> int:
        """Codes and ids, cell centres and PQ codebooks."""
        codes = int(self._faiss.invlists.compute_ntotal()) * (self._faiss.code_size + 8)
        return codes + 4 * self.dim * (self.lists + 16 * self._faiss.pq.M)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self._faiss.add_with_ids(_as_matrix(vectors, self.dim), np.ascontiguousarray(ids, np.int64))

    def remove(self, ids: np.ndarray) -> None:
        """Drop the codes of these ids (absent ones are ignored)."""
        if len(ids):
            self._faiss.remove_ids(faiss.IDSelectorArray(np.ascontiguousarray(ids, np.int64)))

    def copy(self) -> ClusterShortlist:
        """An independent copy (the same cells and codebooks): changed while this one goes on answering."""
        twin = object.__new__(ClusterShortlist)
        twin.dim, twin.probes, twin._faiss = self.dim, self.probes, faiss.clone_index(self._faiss)
        return twin

    def shortlist(self, queries: np.ndarray, size: int = CLUSTER_SHORTLIST, probes: int | None = None) -> np.ndarray:
        """(Q, size) caller ids nearest each query by their codes (-1 where fewer), to be re-ranked exactly;
        `probes` cells per query (default: the shortlist's own)."""
        return _shortlist(self._faiss, _as_matrix(queries, self.dim), size, probes or self.probes)


class ClusterIndex:
    """Approximate top-k for big galleries: faiss IVF (k-means cells, ~sqrt(N) of them) over 4-bit PQ fast-scan
    codes picks CLUSTER_SHORTLIST candidates from the `probes` cells nearest to each query; they are re-ranked in
    float32 against `vectors`, so the similarities returned are exact (only recall is approximate).

    `vectors` is kept by reference when C-contiguous float32 or float16 (the caller's centroids; float16 rows are
    re-ranked as they are, in float32 arithmetic), so the index adds only its codes, ids and cell centres (~40
    bytes per vector). `threads` (default: all cores) builds; a search uses CLUSTER_SEARCH_THREADS. `add` appends
    (the first one copies the vectors into an owned, growing buffer of their type); below CLUSTER_MIN_TRAIN vectors
    it searches by brute force, and it retrains once it has grown CLUSTER_REBUILD_GROWTH-fold, so a gallery enrolled
    one person at a time stays balanced.
    """

    def __init__(self, vectors: np.ndarray, dim: int | None = None, probes: int = CLUSTER_PROBES,
                 threads: int | None = None) -> None:
        if faiss is None:
            raise ImportError("ClusterIndex needs faiss: pip install faiss-cpu")
        array = np.asarray(vectors)
        self.dim = int(dim if dim is not None else (array.shape[1] if array.ndim == 2 else 0))
        self.vectors = _as_rows(array.reshape(-1, self.dim) if array.size == 0 else array, self.dim)
        self.probes = probes
        self.threads = threads
        self.build_seconds = 0.0
        self._store: np.ndarray | None = None  # owned buffer once `add` was called (never the caller's matrix)
        self._codes: ClusterShortlist | None = None  # row numbers as ids
        self._trained_at = 0
        if len(self.vectors) >= CLUSTER_MIN_TRAIN:
            self._train()

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def lists(self) -> int:
        """Number of k-means cells (0 while searching by brute force)."""
        return self._codes.lists if self._codes is not None else 0

    @property
    def nbytes(self) -> int:
        """Memory the index adds to the vectors it was given: codes, ids, cell centres, and any owned buffer."""
        added = self._codes.nbytes if self._codes is not None else 0
        return added + (self._store.nbytes if self._store is not None else 0)

    def _train(self) -> None:
        """k-means cells and PQ codebooks from a sample, then every vector's code; sets build_seconds."""
        start = time.perf_counter()
        if self.threads is not None:
            faiss.omp_set_num_threads(self.threads)
        n = len(self.vectors)
        codes = ClusterShortlist(self.dim, self.vectors, n, self.probes)
        for begin in range(0, n, 1 << 17):
            codes.add(self.vectors[begin : begin + (1 << 17)], np.arange(begin, min(begin + (1 << 17), n)))
        self._codes, self._trained_at = codes, n
        self.build_seconds = time.perf_counter() - start

    def add(self, vectors: np.ndarray) -> None:
        """Append rows (their ids continue from len(self)); retrain when the index has outgrown its cells."""
        rows = _as_matrix(vectors, self.dim)
        n, need = len(self.vectors), len(self.vectors) + len(rows)
        if self._store is None or len(self._store) < need:
            store = np.empty((max(need, 2 * n), self.dim), self.vectors.dtype)
            store[:n] = self.vectors
            self._store = store
        self._store[n:need] = rows
        self.vectors = self._store[:need]
        if need >= CLUSTER_MIN_TRAIN and (self._codes is None or need >= CLUSTER_REBUILD_GROWTH * self._trained_at):
            self._train()
        elif self._codes is not None and len(rows):
            self._codes.add(rows, np.arange(n, need))

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(Q, dim) -> (indices (Q, k) int64, exact similarities (Q, k) float32), best first; -1 / -inf pad."""
        queries = _as_matrix(queries, self.dim)
        if len(self) == 0 or len(queries) == 0 or k <= 0:
            return _empty_result(len(queries), max(k, 0))
        if self._codes is None:
            return brute_force(self.vectors, queries, k)
        ids = self._codes.shortlist(queries, min(len(self), max(CLUSTER_SHORTLIST, k)), self.probes)
        return exact_rerank(self.vectors, queries, ids, k)


def default_threads() -> int:
    """Cores this process may use (what faiss's OpenMP pool is sized to by default)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
