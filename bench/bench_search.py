"""Lookup speed of facenet.gallery.search (what FaceDatabase.identify uses) against the plain NumPy product.

    python bench/bench_search.py                       # exact vs ClusterIndex: 100k and 1M people, dim 128
    python bench/bench_search.py --dim 128 256 --like_lfw dlib fused --lfw_dir ../shared/faces/lfw_dev --no_flat
        # the table of docs/benchmarks.md (both dims, both shapes)
    python bench/bench_search.py --exact --approx 1000000 --json bench/results/search.json   # HNSW (13 min build)

(a) exact vs approximate, for each data set (random unit vectors at each --dim, then each --like file) and each
    --exact size: median latency of 1 and 10 faces with NumPy float32 `x @ C.T` + argmax, ExactIndex (int8 scan +
    float32 re-rank), faiss IndexFlatIP (unless --no_flat) and ClusterIndex (IVF + 4-bit PQ fast scan + float32
    re-rank) at each --probes; ClusterIndex's recall@1 against the exact top-1 for "genuine" queries (a new photo
    of an enrolled person: their centroid plus noise at a same-person distance) and "strangers" (people not
    enrolled); build seconds and memory added by each index; whether ExactIndex's top-1 equals NumPy's; and, at
    CLUSTER_PROBES, how deep in the codes' own order each genuine face's exact nearest person lies (the share found
    among the first 4 ... CLUSTER_SHORTLIST: how many rows a re-rank must fetch, facenet.gallery.pg.PgSearcher).
(b) approximate peer: an HNSW graph (faiss; what ClusterIndex replaced) build time, memory, latency and
    recall@1 against the exact top-1 at several ef_search, for each --approx size (none by default: 1 M takes 13
    minutes to build).
People are random unit vectors (no structure: the hardest case for cells and graphs) or, for a --like .npz with
"embeddings" (n, dim) and "names" (n,) of real faces, drawn from a Gaussian with the mean and covariance of the real
people's centroids, genuine queries getting the real within-person spread. --like_lfw dlib|fused makes such a file
from every lfw_dev photo (bench/calibrate.py's cached vectors): dlib's 128-d or the fused 256-d vector.
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

from facenet.gallery import search  # noqa: E402
from facenet.gallery.search import ClusterIndex, ExactIndex, default_threads, exact_rerank, faiss  # noqa: E402
from facenet.gallery.thresholds import gallery_threshold  # noqa: E402
from facenet.models.vectors import unit_distance  # noqa: E402


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
        self.noise = 0.3 / np.sqrt(max(dim, 1))  # same-person distance ~0.3 for the isotropic case
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


def bench_exact(size: int, maker: People, repeat: int, flat: bool, probes: list[int]) -> dict:
    gallery = maker.people(size)
    genuine, _ = maker.genuine(gallery, 1000)
    strangers = maker.strangers(500)
    queries = np.concatenate([genuine[:200], strangers[:200]])
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
    del scores
    row["cluster"] = bench_cluster(gallery, index, genuine, strangers, repeat, probes)
    return row


def bench_cluster(gallery: np.ndarray, exact: ExactIndex, genuine: np.ndarray, strangers: np.ndarray, repeat: int,
                  probes: list[int]) -> dict:
    """ClusterIndex on the same gallery: build, memory, and recall@1 / latency at each number of probed cells."""
    truth_genuine = exact.search(genuine, 1)[0][:, 0]
    truth_strangers = exact.search(strangers, 1)[0][:, 0]
    before = rss_mb()
    index = ClusterIndex(gallery)
    out: dict = {"lists": index.lists, "build_s": round(index.build_seconds, 2),
                 "index_added_mb": round(index.nbytes / 2**20, 1), "rss_added_mb": round(rss_mb() - before, 1),
                 "probes": {}}
    for count in probes:
        index.probes = count
        found_g, sims = index.search(genuine, 1)
        exact_sims = np.einsum("qd,qd->q", gallery[found_g[:, 0]], genuine)
        out["probes"][count] = {
            "recall_genuine": float(np.mean(found_g[:, 0] == truth_genuine)),
            "recall_strangers": float(np.mean(index.search(strangers, 1)[0][:, 0] == truth_strangers)),
            "max_sim_error": float(np.abs(sims[:, 0] - exact_sims).max()),
            "ms_1": round(median_ms(lambda q: index.search(q, 1), genuine, 1, repeat), 2),
            "ms_10": round(median_ms(lambda q: index.search(q, 1), genuine, 10, repeat), 2)}
    index.probes = search.CLUSTER_PROBES
    ranked = index._codes.shortlist(genuine, search.CLUSTER_SHORTLIST, index.probes)
    out["shortlist_depth"] = {depth: float(np.mean((ranked[:, :depth] == truth_genuine[:, None]).any(axis=1)))
                              for depth in (4, 8, 16, 32, search.CLUSTER_SHORTLIST)}
    out["float16"] = bench_float16(gallery, index, genuine, strangers, truth_genuine, repeat)
    out["float32_held_mb"] = round((gallery.nbytes + index.nbytes) / 2**20, 1)
    return out


def bench_float16(gallery: np.ndarray, index: ClusterIndex, genuine: np.ndarray, strangers: np.ndarray,
                  truth_genuine: np.ndarray, repeat: int) -> dict:
    """ClusterIndex over float16 centroids, as FaceDatabase holds a gallery of CLUSTER_INDEX_MIN people or more:
    memory held, recall and speed; then, re-ranking the float32 index's own shortlists from the float16 rows instead,
    how far the distances move and how many faces change person or decision (at the default threshold of a
    one-photo person in a gallery this size)."""
    held = gallery.astype(np.float16)
    compact = ClusterIndex(held)
    limit = gallery_threshold(len(gallery), 1, "fused" if gallery.shape[1] == 256 else "dlib")
    queries = np.concatenate([genuine, strangers])
    ids = index._codes.shortlist(queries, search.CLUSTER_SHORTLIST, index.probes)
    (found, sims), (wide_found, wide_sims) = exact_rerank(held, queries, ids, 1), exact_rerank(gallery, queries, ids, 1)
    distance, wide_distance = unit_distance(sims[:, 0]), unit_distance(wide_sims[:, 0])
    same_row = found[:, 0] == wide_found[:, 0]
    decided = (distance <= limit) == (wide_distance <= limit)
    return {"held_mb": round((held.nbytes + compact.nbytes) / 2**20, 1),
            "recall_genuine": float(np.mean(compact.search(genuine, 1)[0][:, 0] == truth_genuine)),
            "max_distance_error": float(np.abs(distance - wide_distance)[same_row].max()),
            "same_person_and_decision": f"{int(np.sum(same_row & decided))}/{len(queries)}", "threshold": limit,
            "ms_10": round(median_ms(lambda q: compact.search(q, 1), genuine, 10, repeat), 2)}


class HnswPeer:
    """A faiss HNSW graph (IndexHNSWFlat, inner product) re-ranked in float32: the approximate peer that
    ClusterIndex replaced in the library (as fast to search, but 13 min to build at 1 M on 2 cores)."""

    def __init__(self, vectors: np.ndarray, connectivity: int, ef_construction: int) -> None:
        start = time.perf_counter()
        self.vectors, self.ef_search = vectors, 512
        self.index = faiss.IndexHNSWFlat(vectors.shape[1], connectivity, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        for begin in range(0, len(vectors), 1 << 18):
            self.index.add(vectors[begin : begin + (1 << 18)])
        self.build_seconds = time.perf_counter() - start

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, k)
        _, ids = self.index.search(queries, k, params=params)
        return exact_rerank(self.vectors, queries, ids, k)


def bench_approx(size: int, maker: People, repeat: int, efs: list[int], connectivity: int,
                 ef_construction: int) -> dict:
    gallery = maker.people(size)
    genuine, _ = maker.genuine(gallery, 500)
    strangers = maker.strangers(500)
    exact = ExactIndex(gallery)
    truth_genuine = exact.search(genuine, 1)[0][:, 0]
    truth_strangers = exact.search(strangers, 1)[0][:, 0]
    before = rss_mb()
    index = HnswPeer(gallery, connectivity, ef_construction)
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


def print_exact(kind: str, rows: list[dict], probes: int) -> None:
    """Markdown rows: exact vs ClusterIndex at `probes` per size and face count, then builds and memory."""
    short = "random" if kind.startswith("random") else kind.split()[1]
    for row in rows:
        cluster = row["cluster"]
        at = cluster["probes"].get(probes) or next(iter(cluster["probes"].values()))
        for faces in (1, 10):
            print(f"| {short} | {row['dim']} | {row['people']:,} | {faces} | {row[f'numpy_{faces}_ms']:.1f} | "
                  f"{row[f'exact_index_{faces}_ms']:.1f} | **{at[f'ms_{faces}']:.1f}** | {at['recall_genuine']:.3f} | "
                  f"{at['recall_strangers']:.3f} | {row['build_s']:.1f} / {cluster['build_s']:.1f} | "
                  f"{row['index_added_mb']:.0f} / {cluster['index_added_mb']:.0f} |")


def print_probes(kind: str, rows: list[dict]) -> None:
    short = "random" if kind.startswith("random") else kind.split()[1]
    for row in rows:
        cluster = row["cluster"]
        for count, at in cluster["probes"].items():
            print(f"  {short:>24} {row['dim']:>4} {row['people']:>10,} {cluster['lists']:>6} {count:>6} "
                  f"{at['recall_genuine']:>8.3f} {at['recall_strangers']:>9.3f} {at['ms_1']:>7.2f} {at['ms_10']:>8.2f}"
                  f"  exact top-1 = NumPy {row['top1_equal']}, similarity error {at['max_sim_error']:.1e}")


def print_float16(kind: str, rows: list[dict]) -> None:
    short = "random" if kind.startswith("random") else kind.split()[1]
    for row in rows:
        f16 = row["cluster"]["float16"]
        print(f"  {short:>24} {row['dim']:>4} {row['people']:>10,} held {row['cluster']['float32_held_mb']:>7.0f} MB"
              f" -> {f16['held_mb']:>6.0f} MB; recall genuine {f16['recall_genuine']:.3f}, 10 faces {f16['ms_10']:.2f}"
              f" ms; distance error {f16['max_distance_error']:.1e}; same person and decision at"
              f" {f16['threshold']:.3f}: {f16['same_person_and_decision']}")
        depths = ", ".join(f"{depth} {share:.4f}" for depth, share in row["cluster"]["shortlist_depth"].items())
        print(f"  {'':>24} {'':>4} {'':>10} genuine faces whose exact nearest is among the codes' first n: {depths}")


def print_approx(row: dict) -> None:
    print(f"  {row['people']:,} people: build {row['build_s']} s ({row['build_per_s']:,}/s), "
          f"+{row['rss_added_mb']:.0f} MB; exact 1 face {row['exact_1_ms']} ms")
    print(f"  {'ef':>6} {'recall genuine':>15} {'recall strangers':>17} {'1 face ms':>10} {'10 faces ms':>12}")
    for ef, figures in row["ef"].items():
        print(f"  {ef:>6} {figures['recall_genuine']:>15.3f} {figures['recall_strangers']:>17.3f} "
              f"{figures['ms_1']:>10.3f} {figures['ms_10']:>12.3f}")


def lfw_like(kind: str, lfw_dir: Path) -> Path:
    """bench/results/like_lfw_<kind>.npz (embeddings, names) of every lfw_dev photo: dlib's vectors or fused ones."""
    from calibrate import RESULTS, branch_embeddings, fused

    from facenet.config import FUSION_SFACE_WEIGHT

    data = branch_embeddings(lfw_dir, "yunet", Path(__file__).resolve().parents[1] / "weights")
    path = RESULTS / f"like_lfw_{kind}.npz"
    np.savez(path, embeddings=data["dlib"] if kind == "dlib" else fused(data, FUSION_SFACE_WEIGHT),
             names=data["names"])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exact", type=int, nargs="*", default=[100_000, 1_000_000], help="gallery sizes")
    parser.add_argument("--approx", type=int, nargs="*", default=[], help="gallery sizes for HNSW")
    parser.add_argument("--dim", type=int, nargs="*", default=[128], help="dims of random unit vectors")
    parser.add_argument("--like", type=Path, nargs="*", default=[], help=".npz files of real embeddings")
    parser.add_argument("--like_lfw", nargs="*", default=[], choices=("dlib", "fused"),
                        help="people shaped like lfw_dev's real dlib / fused vectors (needs --lfw_dir)")
    parser.add_argument("--lfw_dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "faces"
                        / "lfw_dev")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--probes", type=int, nargs="*", default=[16, search.CLUSTER_PROBES, 64],
                        help="ClusterIndex cells probed per query")
    parser.add_argument("--ef", type=int, nargs="*", default=[32, 64, 128, 256])
    parser.add_argument("--M", type=int, default=32, help="HNSW connectivity")
    parser.add_argument("--ef_construction", type=int, default=64)
    parser.add_argument("--no_flat", action="store_true", help="skip faiss IndexFlatIP")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    likes = args.like + [lfw_like(kind, args.lfw_dir) for kind in args.like_lfw]
    makers = [People(dim, None) for dim in args.dim] + [People(0, like) for like in likes]
    result = {"threads": default_threads(), "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
              "faiss": getattr(faiss, "__version__", None), "numpy": np.__version__, "data": []}
    print(f"{result['threads']} threads, faiss {result['faiss']}, load average {result['load_average']}")
    print(f"\n(a) top-1 median ms over {args.repeat} batches; ClusterIndex at {search.CLUSTER_PROBES} probes, recall@1"
          " vs exact; build s and MB added: ExactIndex / ClusterIndex")
    print("| data | dim | people | faces | NumPy | ExactIndex | ClusterIndex | recall genuine | recall strangers |"
          " build s | added MB |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for maker in makers:
        entry = {"data": maker.kind, "dim": maker.dim, "exact": [], "approx": []}
        result["data"].append(entry)
        for size in args.exact:
            entry["exact"].append(bench_exact(size, maker, args.repeat, not args.no_flat, args.probes))
            print_exact(maker.kind, entry["exact"][-1:], search.CLUSTER_PROBES)
    print(f"\n  {'data':>24} {'dim':>4} {'people':>10} {'lists':>6} {'probes':>6} {'genuine':>8} {'strangers':>9} "
          f"{'1 ms':>7} {'10 ms':>8}")
    for entry in result["data"]:
        print_probes(entry["data"], entry["exact"])
    print(f"\n  ClusterIndex at {search.CLUSTER_PROBES} probes over float16 centroids (what FaceDatabase holds from"
          " CLUSTER_INDEX_MIN people on) vs float32: memory held (centroids + index)")
    for entry in result["data"]:
        print_float16(entry["data"], entry["exact"])
    for maker, entry in zip(makers, result["data"], strict=True):
        for size in args.approx:
            print(f"\n(b) {maker.kind}: HNSW M={args.M} ef_construction={args.ef_construction}, recall@1 vs exact")
            entry["approx"].append(bench_approx(size, maker, args.repeat, args.ef, args.M, args.ef_construction))
            print_approx(entry["approx"][-1])
    result["load_average_end"] = os.getloadavg()
    print(f"\nload average at the end {result['load_average_end']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
