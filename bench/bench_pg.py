"""PostgreSQL + pgvector gallery (facenet.gallery.pg): enrollment rate, lookup latency exact vs HNSW, concurrency.

    python bench/bench_pg.py                                  # 100k people, a throwaway pgserver instance
    python bench/bench_pg.py --people 100000 1000000 --json bench/results/pg.json
    python bench/bench_pg.py --url postgresql://user@host/db  # an existing server (its tables are REPLACED)

Per gallery size (synthetic people, one photo each, random unit vectors from a fake `examine`):
  enrollment: sync() time and rows/s (examine + result cache, and the gallery transaction);
  lookup: median ms of nearest() for 1 and 10 faces by exact scan and by HNSW (after create_index, whose build
          time is reported), recall@1 of HNSW vs exact for genuine queries (a centroid plus same-person noise)
          and strangers, and load() time (everything into memory for the in-process ExactIndex);
then the exact-scan latency at small sizes (where HNSW starts to pay: HNSW_MIN_PEOPLE), and two clients enrolling
different people at once (every person and photo present afterwards).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import median_ms  # noqa: E402

from facenet.gallery.pg import HNSW_EF_SEARCH, PgGallery  # noqa: E402

MODEL = "bench:synthetic"


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Examine:
    """Fake examine: a random unit vector per photo (seeded by its sha), no detection."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.seconds = 0.0

    def __call__(self, pending):
        start = time.perf_counter()
        shas = list(pending)
        seeds = np.array([int(s[:15], 16) for s in shas], dtype=np.int64)
        vectors = unit(np.random.default_rng(seeds), len(shas), self.dim) if shas else []
        self.seconds += time.perf_counter() - start
        return {s: {"reason": None, "faces": 1} for s in shas}, dict(zip(shas, vectors, strict=True))


def folder(prefix: str, people: int) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(f"{prefix}{i:07d}", [(f"{prefix}{i:07d}/0.jpg", hashlib.sha256(f"{prefix}{i}".encode()).hexdigest())])
            for i in range(people)]


def reset(url: str) -> None:
    with PgGallery(url) as gallery:
        gallery.conn.execute("DROP TABLE IF EXISTS facenet_photos, facenet_embeddings, facenet_people, facenet_meta")


def bench_size(url: str, people: int, dim: int, repeat: int, rng: np.random.Generator, hnsw: bool) -> dict:
    reset(url)
    row: dict = {"people": people, "dim": dim}
    examine = Examine(dim)
    with PgGallery(url) as gallery:
        start = time.perf_counter()
        report = gallery.sync_photos(folder("p", people), examine, MODEL, dim, batch=50_000, build_index=False)
        seconds = time.perf_counter() - start
        row.update(enroll_s=round(seconds, 1), enroll_rows_per_s=round(people / seconds),
                   fake_examine_s=round(examine.seconds, 1), examine_and_cache_s=report["examine_s"],
                   gallery_transaction_s=report["write_s"], index_in_sync_s=report["index_s"],
                   index_after_sync=report["index"])
        start = time.perf_counter()
        again = gallery.sync_photos(folder("p", people), examine, MODEL, dim, build_index=False)
        row["resync_unchanged_s"] = round(time.perf_counter() - start, 2)
        assert again["examined"] == 0
        start = time.perf_counter()
        names, centroids, _ = gallery.load_centroids(MODEL, dim)
        row["load_s"] = round(time.perf_counter() - start, 2)
        gallery.drop_index()
        rows = rng.choice(len(names), 300, replace=False)
        genuine = centroids[rows] + 0.3 / np.sqrt(dim) * rng.standard_normal((300, dim), dtype=np.float32)
        genuine /= np.linalg.norm(genuine, axis=1, keepdims=True)
        strangers = unit(rng, 100, dim)
        truth_g = (genuine @ centroids.T).argmax(1)
        truth_s = (strangers @ centroids.T).argmax(1)
        exact_g = [r[0] for r in gallery.nearest(genuine, MODEL, exact=True)[0]]
        row["exact_agrees_with_numpy"] = float(np.mean([names[t] == e for t, e in zip(truth_g, exact_g,
                                                                                    strict=True)]))
        for faces in (1, 10):
            row[f"exact_{faces}_ms"] = round(median_ms(lambda q: gallery.nearest(q, MODEL, exact=True), genuine,
                                                       faces, max(3, repeat // 3)), 2)
        if not hnsw:
            return row
        row["hnsw_build_s"] = round(gallery.create_index(), 1)
        for ef in sorted({40, HNSW_EF_SEARCH, 200}):
            found_g = [r[0] for r in gallery.nearest(genuine, MODEL, exact=False, ef_search=ef)[0]]
            found_s = [r[0] for r in gallery.nearest(strangers, MODEL, exact=False, ef_search=ef)[0]]
            figures = {"recall_genuine": float(np.mean([names[t] == f for t, f in zip(truth_g, found_g,
                                                                                     strict=True)])),
                       "recall_strangers": float(np.mean([names[t] == f for t, f in zip(truth_s, found_s,
                                                                                       strict=True)]))}
            for faces in (1, 10):
                figures[f"ms_{faces}"] = round(median_ms(
                    lambda q, ef=ef: gallery.nearest(q, MODEL, exact=False, ef_search=ef), genuine, faces, repeat), 2)
            row[f"hnsw_ef{ef}"] = figures
    return row


def bench_small(url: str, sizes: list[int], dim: int, repeat: int, rng: np.random.Generator) -> dict:
    """Exact-scan latency for 1 face at small gallery sizes: where an index starts to matter."""
    result = {}
    for people in sizes:
        reset(url)
        with PgGallery(url) as gallery:
            gallery.sync_photos(folder("s", people), Examine(dim), MODEL, dim, batch=50_000, build_index=False)
            queries = unit(rng, 50, dim)
            result[people] = round(median_ms(lambda q: gallery.nearest(q, MODEL, exact=True), queries, 1, repeat), 2)
    return result


def bench_concurrent(url: str, people: int, dim: int) -> dict:
    """Two clients enroll different people at the same moment; count what is there afterwards."""
    reset(url)
    with PgGallery(url) as gallery:
        gallery.sync_photos(folder("seed", 1), Examine(dim), MODEL, dim)
    errors: list[BaseException] = []

    def client(prefix: str) -> None:
        try:
            with PgGallery(url) as gallery:
                gallery.sync_photos(folder(prefix, people), Examine(dim), MODEL, dim, batch=2000)
        except BaseException as error:  # noqa: BLE001 - reported
            errors.append(error)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(prefix,)) for prefix in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    with PgGallery(url) as gallery:
        stats = gallery.stats()
    return {"people_each": people, "seconds": round(seconds, 2), "errors": [str(e) for e in errors],
            "people_present": stats["people"], "photos_present": stats["photos"],
            "all_present": stats["people"] == 2 * people + 1 and stats["photos"] == 2 * people + 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="an existing database (its facenet_* tables are dropped); default: pgserver")
    parser.add_argument("--people", type=int, nargs="*", default=[100_000])
    parser.add_argument("--small", type=int, nargs="*", default=[2_000, 10_000, 20_000, 50_000])
    parser.add_argument("--no_hnsw_above", type=int, default=10**9, help="skip HNSW for larger galleries")
    parser.add_argument("--concurrent", type=int, default=20_000, help="people per client in the concurrency run")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    server = None
    url = args.url
    if url is None:
        import pgserver

        scratch = Path(tempfile.mkdtemp(prefix="bench_pg_"))
        server = pgserver.get_server(scratch / "data", cleanup_mode="delete")
        url = server.get_uri()
    result: dict = {"server": "pgserver (PostgreSQL 16, pgvector 0.6.2)" if server else "given URL", "sizes": []}
    try:
        with PgGallery(url) as gallery:
            version = gallery.conn.execute("SHOW server_version").fetchone()[0]
        print(f"PostgreSQL {version}; dim {args.dim}; model {MODEL}")
        print(f"\n{'people':>9} {'enroll s':>8} {'rows/s':>7} {'load s':>6} {'exact 1':>8} {'exact 10':>9} "
              f"{'hnsw build s':>12} {'ef':>4} {'hnsw 1':>7} {'hnsw 10':>8} {'recall genuine':>14} {'strangers':>9}")
        for people in args.people:
            row = bench_size(url, people, args.dim, args.repeat, rng, people <= args.no_hnsw_above)
            result["sizes"].append(row)
            head = (f"{people:>9,} {row['enroll_s']:>8} {row['enroll_rows_per_s']:>7,} {row['load_s']:>6} "
                    f"{row['exact_1_ms']:>8} {row['exact_10_ms']:>9} {row.get('hnsw_build_s', '-'):>12}")
            efs = [k for k in row if k.startswith("hnsw_ef")]
            if not efs:
                print(head)
            for i, key in enumerate(efs):
                f = row[key]
                print(f"{head if i == 0 else ' ' * len(head)} {key[7:]:>4} {f['ms_1']:>7} {f['ms_10']:>8} "
                      f"{f['recall_genuine']:>14.3f} {f['recall_strangers']:>9.3f}")
        if args.small:
            result["exact_1_face_ms_small"] = bench_small(url, args.small, args.dim, args.repeat, rng)
            print("\nexact scan, 1 face:", ", ".join(f"{n:,} people {ms} ms"
                                                    for n, ms in result["exact_1_face_ms_small"].items()))
        if args.concurrent:
            result["concurrent"] = bench_concurrent(url, args.concurrent, args.dim)
            c = result["concurrent"]
            print(f"\ntwo clients x {c['people_each']:,} people at once: {c['seconds']} s, {c['people_present']:,} "
                  f"people / {c['photos_present']:,} photos present, all present: {c['all_present']}, "
                  f"errors: {c['errors'] or 'none'}")
    finally:
        if server is not None:
            server.cleanup()
            shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
