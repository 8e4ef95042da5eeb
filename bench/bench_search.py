"""Lookup speed of facenet.gallery.search (what FaceDatabase.identify uses) against the plain NumPy product.

    python bench/bench_search.py                       # exact: 100k and 1M people; approximate: 1M
    python bench/bench_search.py --approx 1000000 10000000 --json bench/results/search.json
    python bench/bench_search.py --like lfw.npz        # people drawn like real embeddings (see --like)

(a) exact: median latency of 1 and 10 faces with NumPy float32 `x @ C.T` + argmax, ExactIndex (int8 scan +
    float32 re-rank) and faiss IndexFlatIP, at each --exact size; the ratio NumPy / ExactIndex; memory added;
    build time; whether ExactIndex's top-1 equals NumPy's for every query (ties aside).
(b) approximate: ApproxIndex (HNSW) build time, memory, latency and recall@1 against the exact top-1, for
    "genuine" queries (a new photo of an enrolled person: their centroid plus noise at a same-person distance)
    and "strangers" (people not enrolled), at several ef_search.
People are random unit vectors (no structure: the hardest case for HNSW) unless --like names an .npz with
"embeddings" (n, dim) and "names" (n,) of real faces: then people are drawn from a Gaussian with the mean and
covariance of the real people's centroids and genuine queries get the real within-person spread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facenet.gallery.search import ApproxIndex, ExactIndex, default_threads, faiss  # noqa: E402


def normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def rss_mb() -> float:
    """Resident memory of this process (MB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class People:
    """Synthetic enrolled people and queries: isotropic, or shaped like real embeddings (--like)."""

    def __init__(self, dim: int, like: Path | None, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.dim = dim
        self.kind = "random unit vectors"
        self.noise = 0.3 / np.sqrt(dim)  # same-person distance ~0.3 for the isotropic case
        self.mean = self.between = self.within = None
        if like is not None:
            data = np.load(like)
            vectors, names = data["embeddings"].astype(np.float64), data["names"]
            self.dim = vectors.shape[1]
            groups: dict[str, list[int]] = {}
            for i, name in enumerate(names):
                groups.setdefault(str(name), []).append(i)
            centroids = np.stack([normalize(vectors[rows].mean(0)) for rows in groups.values()]).astype(np.float64)
            residuals = np.concatenate([vectors[rows] - vectors[rows].mean(0) for rows in groups.values()
                                        if len(rows) > 1])
            self.mean = centroids.mean(0)
            self.between = np.linalg.cholesky(np.cov(centroids.T) + 1e-9 * np.eye(self.dim))
            self.within = np.linalg.cholesky(np.cov(residuals.T) + 1e-9 * np.eye(self.dim))
            self.kind = f"like {like.name} ({len(groups)} people, {len(vectors)} faces)"

    def people(self, n: int, chunk: int = 1 << 20) -> np.ndarray:
        out = np.empty((n, self.dim), np.float32)
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            z = self.rng.standard_normal((size, self.dim), dtype=np.float32)
            if self.mean is not None:
                z = (self.mean + z @ self.between.T.astype(np.float32)).astype(np.float32)
            out[start : start + size] = normalize(z)
        return out

    def genuine(self, gallery: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(queries, enrolled rows they belong to): a centroid plus same-person noise."""
        rows = self.rng.choice(len(gallery), n, replace=False)
        z = self.rng.standard_normal((n, self.dim), dtype=np.float32)
        noise = z @ self.within.T.astype(np.float32) if self.within is not None else z * self.noise
        return normalize(gallery[rows] + noise), rows

    def strangers(self, n: int) -> np.ndarray:
        return self.people(n)


def median_ms(run, queries: np.ndarray, faces: int, repeat: int) -> float:
    """Median wall time of run(batch) over `repeat` different batches of `faces` queries (after one warm-up)."""
    run(queries[:faces])
    times = []
    for i in range(repeat):
        batch = queries[(i * faces) % (len(queries) - faces + 1) :][:faces]
        start = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def bench_exact(size: int, maker: People, repeat: int, flat: bool) -> dict:
    gallery = maker.people(size)
    genuine, _ = maker.genuine(gallery, 200)
    queries = np.concatenate([genuine, maker.strangers(200)])
    before = rss_mb()
    start = time.perf_counter()
    index = ExactIndex(gallery)
    build = time.perf_counter() - start
    row: dict = {"people": size, "dim": maker.dim, "method": index.method, "build_s": round(build, 3),
                 "vectors_mb": round(gallery.nbytes / 2**20, 1), "index_added_mb": round(index.nbytes / 2**20, 1),
                 "rss_added_mb": round(rss_mb() - before, 1)}

    def numpy_top1(q: np.ndarray) -> np.ndarray:
        return (q @ gallery.T).argmax(axis=1)

    runs = {"numpy": numpy_top1, "exact_index": lambda q: index.search(q, 1)}
    if flat and faiss is not None:
        flat_index = faiss.IndexFlatIP(maker.dim)
        flat_index.add(gallery)
        runs["faiss_flat"] = lambda q: flat_index.search(q, 1)
    for faces in (1, 10):
        for name, run in runs.items():
            row[f"{name}_{faces}_ms"] = round(median_ms(run, queries, faces, repeat), 2)
        row[f"speedup_{faces}"] = round(row[f"numpy_{faces}_ms"] / row[f"exact_index_{faces}_ms"], 2)
    got, sims = index.search(queries, 1)
    scores = queries @ gallery.T
    want = scores.argmax(axis=1)
    tied = np.sort(scores, axis=1)[:, -2] >= scores.max(axis=1) - 1e-6
    row["top1_equal"] = f"{int((got[:, 0] == want).sum())}/{len(queries)}"
    row["top1_differs_untied"] = int(((got[:, 0] != want) & ~tied).sum())
    row["max_sim_error"] = float(np.abs(sims[:, 0] - scores.max(axis=1)).max())
    return row


def bench_approx(size: int, maker: People, repeat: int, efs: list[int], connectivity: int,
                 ef_construction: int) -> dict:
    gallery = maker.people(size)
    genuine, _ = maker.genuine(gallery, 500)
    strangers = maker.strangers(500)
    exact = ExactIndex(gallery)
    truth_genuine = exact.search(genuine, 1)[0][:, 0]
    truth_strangers = exact.search(strangers, 1)[0][:, 0]
    before = rss_mb()
    index = ApproxIndex(gallery, connectivity=connectivity, ef_construction=ef_construction)
    row: dict = {"people": size, "dim": maker.dim, "M": connectivity, "ef_construction": ef_construction,
                 "build_s": round(index.build_seconds, 1), "build_per_s": round(size / index.build_seconds),
                 "rss_added_mb": round(rss_mb() - before, 1), "exact_1_ms": round(median_ms(
                     lambda q: exact.search(q, 1), genuine, 1, repeat), 2), "ef": {}}
    for ef in efs:
        index.ef_search = ef
        found_g = index.search(genuine, 1)[0][:, 0]
        found_s = index.search(strangers, 1)[0][:, 0]
        row["ef"][ef] = {"recall_genuine": float(np.mean(found_g == truth_genuine)),
                         "recall_strangers": float(np.mean(found_s == truth_strangers)),
                         "ms_1": round(median_ms(lambda q: index.search(q, 1), genuine, 1, repeat), 3),
                         "ms_10": round(median_ms(lambda q: index.search(q, 1), genuine, 10, repeat), 3)}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exact", type=int, nargs="*", default=[100_000, 1_000_000], help="gallery sizes")
    parser.add_argument("--approx", type=int, nargs="*", default=[1_000_000], help="gallery sizes for HNSW")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--like", type=Path, help=".npz of real embeddings (keys embeddings, names)")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--ef", type=int, nargs="*", default=[32, 64, 128, 256])
    parser.add_argument("--M", type=int, default=32, help="HNSW connectivity")
    parser.add_argument("--ef_construction", type=int, default=64)
    parser.add_argument("--no_flat", action="store_true", help="skip faiss IndexFlatIP")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    maker = People(args.dim, args.like)
    result = {"data": maker.kind, "threads": default_threads(), "cpu_count": os.cpu_count(),
              "load_average": os.getloadavg(), "faiss": getattr(faiss, "__version__", None),
              "numpy": np.__version__, "exact": [], "approx": []}
    print(f"data: {maker.kind}, dim {maker.dim}, {result['threads']} threads, faiss {result['faiss']}, "
          f"load average {result['load_average'][0]:.1f}")
    if args.exact:
        print("\n(a) exact top-1, median ms over", args.repeat, "batches")
        print(f"  {'people':>10} {'faces':>5} {'numpy':>8} {'ExactIndex':>10} {'faiss flat':>10} {'speedup':>8} "
              f"{'added MB':>8} {'build s':>7}  top-1 equal")
    for size in args.exact:
        row = bench_exact(size, maker, args.repeat, not args.no_flat)
        result["exact"].append(row)
        for faces in (1, 10):
            print(f"  {size:>10,} {faces:>5} {row[f'numpy_{faces}_ms']:>8.2f} {row[f'exact_index_{faces}_ms']:>10.2f} "
                  f"{row.get(f'faiss_flat_{faces}_ms', float('nan')):>10.2f} {row[f'speedup_{faces}']:>7.2f}x "
                  f"{row['index_added_mb']:>8.0f} {row['build_s']:>7.2f}  {row['top1_equal']} "
                  f"(untied differences {row['top1_differs_untied']})")
    if args.approx:
        print(f"\n(b) approximate: HNSW M={args.M} ef_construction={args.ef_construction}, recall@1 vs exact")
    for size in args.approx:
        row = bench_approx(size, maker, args.repeat, args.ef, args.M, args.ef_construction)
        result["approx"].append(row)
        print(f"  {size:,} people: build {row['build_s']} s ({row['build_per_s']:,}/s), +{row['rss_added_mb']:.0f} MB;"
              f" exact 1 face {row['exact_1_ms']} ms")
        print(f"  {'ef':>6} {'recall genuine':>15} {'recall strangers':>17} {'1 face ms':>10} {'10 faces ms':>12}")
        for ef, figures in row["ef"].items():
            print(f"  {ef:>6} {figures['recall_genuine']:>15.3f} {figures['recall_strangers']:>17.3f} "
                  f"{figures['ms_1']:>10.3f} {figures['ms_10']:>12.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
