"""PostgreSQL + pgvector gallery (facenet.gallery.pg): enrollment, lookup exact vs IVFFlat vs HNSW, the no-copy
client, incremental enrollment, concurrency.

    python bench/bench_pg.py                                  # 100k people, dim 256, a throwaway pgserver instance
    python bench/bench_pg.py --people 100000 1000000 --like lfw --small --concurrent 0 --json bench/results/pg.json
    python bench/bench_pg.py --url postgresql://user@host/db  # an existing server (its tables are REPLACED)

Per gallery size (synthetic people, one photo each, from a fake `examine`: random unit vectors, or with --like
drawn like real embeddings: bench_search's `People`; `--like lfw` = the fused 256-d vectors of
bench/results/lfw_dev_*_yunet.npz):
  enrollment: sync() time and rows/s (examine + result cache, and the gallery transaction);
  lookup: median ms of nearest() for 1 and 10 faces by exact scan, and per --index kind (IVFFlat: the default,
          lists = ivf_lists; HNSW: m 16 / ef_construction 64) its build time and, per probes / ef_search, recall@1
          against the exact top-1 for genuine queries (a centroid plus same-person noise) and strangers;
  client: what load() holds (every centroid, in-memory FaceDatabase) vs the no-copy client (FaceDatabase searching
          through PgSearcher: local codes, exact re-rank of fetched rows), Python-allocated MB (tracemalloc) plus
          the codes' MB, ms of identify() for 1 and 10 faces, recall@1 of the genuine queries;
  incremental: sync of one new person into the gallery (index updated on insert), then a load(): seconds, and
          whether the index finds him; then another person and a load() that carries the first one's codes on
          (seconds, rows read, whether it names both);
then the exact-scan latency at small sizes (where an index starts to pay: HNSW_MIN_PEOPLE), and two clients
enrolling different people at once (every person and photo present afterwards).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import People, median_ms, normalize  # noqa: E402

from facenet.gallery.index import FaceDatabase  # noqa: E402
from facenet.gallery.pg import HNSW_EF_SEARCH, IVF_PROBES, PgGallery, PgSearcher  # noqa: E402

MODEL = "bench:synthetic"
LFW = Path(__file__).resolve().parent / "results" / "lfw_dev_96c8392123dc90ab_yunet.npz"
PROBES = (8, 16, IVF_PROBES, 64)
EFS = (40, HNSW_EF_SEARCH, 200)


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fused_like(source: Path, scratch: Path) -> Path:
    """An .npz for `People(like=)` of the default model's vectors: dlib and SFace unit vectors joined, SFace
    weighted by FUSION_SFACE_WEIGHT, re-normalised (facenet.models.split's fused model)."""
    from facenet.config import FUSION_SFACE_WEIGHT

    data = np.load(source)
    fused = normalize(np.concatenate([data["dlib"], FUSION_SFACE_WEIGHT * data["sface"]], axis=1))
    path = scratch / "fused_like.npz"
    np.savez(path, embeddings=fused, names=data["names"])
    return path


class Examine:
    """Fake examine: a random unit vector per photo (seeded by its sha), no detection; or, given `vectors`
    {sha: vector}, those."""

    def __init__(self, dim: int, vectors: dict[str, np.ndarray] | None = None) -> None:
        self.dim, self.vectors = dim, vectors
        self.seconds = 0.0

    def __call__(self, pending):
        start = time.perf_counter()
        shas = list(pending)
        if self.vectors is not None:
            vectors = [self.vectors[s] for s in shas]
        else:
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


def top1(queries: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return np.concatenate([(queries[i : i + 64] @ centroids.T).argmax(1) for i in range(0, len(queries), 64)])


def pipeline_of(dim: int) -> SimpleNamespace:
    """What PgGallery.load reads of a pipeline (the fused model's calibration)."""
    return SimpleNamespace(model_id=MODEL, embedder=SimpleNamespace(model_id=MODEL, dim=dim, distance_scale=1.0,
                                                                    name="fused"))


def bench_size(url: str, people: int, maker: People, repeat: int, kinds: list[str]) -> dict:
    reset(url)
    dim = maker.dim
    row: dict = {"people": people, "dim": dim, "vectors": maker.kind, "load": list(os.getloadavg())}
    enrolled = folder("p", people)
    centroids = maker.people(people)
    examine = Examine(dim, {photos[0][1]: v for (_, photos), v in zip(enrolled, centroids, strict=True)})
    with PgGallery(url) as gallery:
        start = time.perf_counter()
        report = gallery.sync_photos(enrolled, examine, MODEL, dim, batch=50_000, build_index=False)
        seconds = time.perf_counter() - start
        row.update(enroll_s=round(seconds, 1), enroll_rows_per_s=round(people / seconds),
                   fake_examine_s=round(examine.seconds, 1), examine_and_cache_s=report["examine_s"],
                   gallery_transaction_s=report["write_s"])
        start = time.perf_counter()
        again = gallery.sync_photos(enrolled, examine, MODEL, dim, build_index=False)
        row["resync_unchanged_s"] = round(time.perf_counter() - start, 2)
        assert again["examined"] == 0
        start = time.perf_counter()
        names, stored, _ = gallery.load_centroids(MODEL, dim)
        row["load_s"] = round(time.perf_counter() - start, 2)
        order = np.argsort([name for name, _ in enrolled])  # enrolled in name order: the same rows as `names`
        assert names == [enrolled[i][0] for i in order]
        del stored
        genuine, _ = maker.genuine(centroids, 300)
        strangers = maker.strangers(100)
        truth_g, truth_s = top1(genuine, centroids), top1(strangers, centroids)
        exact_g = [r[0] for r in gallery.nearest(genuine, MODEL, exact=True)[0]]
        row["exact_agrees_with_numpy"] = float(np.mean([enrolled[t][0] == e for t, e in zip(truth_g, exact_g,
                                                                                           strict=True)]))
        for faces in (1, 10):
            row[f"exact_{faces}_ms"] = round(median_ms(lambda q: gallery.nearest(q, MODEL, exact=True), genuine,
                                                       faces, max(3, repeat // 3)), 2)
        for kind in kinds:
            row[kind] = bench_index(gallery, kind, genuine, strangers, [enrolled[t][0] for t in truth_g],
                                    [enrolled[t][0] for t in truth_s], repeat)
    row["client"] = bench_client(url, dim, genuine, [enrolled[t][0] for t in truth_g], repeat)
    row["incremental"] = bench_incremental(url, maker)
    return row


def bench_index(gallery: PgGallery, kind: str, genuine: np.ndarray, strangers: np.ndarray, truth_g: list[str],
                truth_s: list[str], repeat: int) -> dict:
    """Build time of one index kind, and recall@1 / ms at each of its search settings."""
    result: dict = {"load_before": list(os.getloadavg()), "build_s": round(gallery.create_index(kind), 1)}
    for value in (PROBES if kind == "ivfflat" else EFS):
        setting = {"probes": value} if kind == "ivfflat" else {"ef_search": value}

        def search(q: np.ndarray, setting: dict = setting) -> tuple:
            return gallery.nearest(q, MODEL, exact=False, **setting)

        found_g, found_s = [r[0] for r in search(genuine)[0]], [r[0] for r in search(strangers)[0]]
        result[value] = {"recall_genuine": float(np.mean([a == b for a, b in zip(found_g, truth_g, strict=True)])),
                         "recall_strangers": float(np.mean([a == b for a, b in zip(found_s, truth_s, strict=True)])),
                         "ms_1": round(median_ms(search, genuine, 1, repeat), 2),
                         "ms_10": round(median_ms(search, genuine, 10, max(3, repeat // 2)), 2)}
    return result


def held(make) -> tuple[object, float, float]:
    """(what make() returns, MB it still holds, peak MB while making it) of Python-allocated memory."""
    tracemalloc.start()
    made = make()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return made, round(current / 2**20, 1), round(peak / 2**20, 1)


def full_copy(gallery: PgGallery, dim: int) -> FaceDatabase:
    """What load() gives below NO_COPY_MIN_PEOPLE: every centroid in memory."""
    names, centroids, counts = gallery.load_centroids(MODEL, dim)
    return FaceDatabase(names, centroids, MODEL, counts, model="fused", dim=dim)


def bench_client(url: str, dim: int, queries: np.ndarray, truth: list[str], repeat: int) -> dict:
    """The client with every centroid (its ExactIndex made by the first lookup) vs the no-copy client: memory
    (Python allocations: tracemalloc; the no-copy client's faiss codes: codes_mb), open time, identify ms (1 and 10
    faces), recall@1 of the genuine `queries` against the exact top-1 names `truth`."""
    result = {}
    with PgGallery(url) as gallery:
        makers = {"no_copy": lambda: FaceDatabase.searching(PgSearcher(gallery, MODEL, dim), MODEL, model="fused",
                                                             dim=dim),
                  "full_copy": lambda: full_copy(gallery, dim)}
        for label, make in makers.items():
            def opened(make=make) -> FaceDatabase:
                database = make()
                database.identify(queries[:1])  # ExactIndex built / connection opened
                return database

            start = time.perf_counter()
            database, mb, peak = held(opened)
            seconds = time.perf_counter() - start
            names = [row[0][0] for row in database.nearest_people(queries, 1)]
            result[label] = {"open_s": round(seconds, 2), "held_mb": mb, "peak_mb": peak,
                             "codes_mb": round((database.searcher.codes_nbytes if database.searcher else 0) / 2**20,
                                               1),
                             "recall_genuine": float(np.mean([a == b for a, b in zip(names, truth, strict=True)])),
                             **{f"identify_{n}_ms": round(median_ms(database.identify, queries, n, repeat), 2)
                                for n in (1, 10)}}
            if database.searcher is not None:
                database.searcher.close()
            del database
    return result


def bench_incremental(url: str, maker: People) -> dict:
    """One new person synced into the big gallery (the index updated on insert), then a load(); then another one,
    and a load() while the first load's database is still open: a no-copy client carries its codes on and reads the
    rows changed since, as if the gallery's bulk enrollment were older than CODES_OVERLAP (set to 0 for this)."""
    from facenet.gallery.pg import queries

    newcomers = maker.people(2)
    enrolled = folder("new", 2)
    examine = Examine(maker.dim, {photos[0][1]: v for (_, photos), v in zip(enrolled, newcomers, strict=True)})
    with PgGallery(url) as gallery:
        start = time.perf_counter()
        report = gallery.sync_photos(enrolled[:1], examine, MODEL, maker.dim)
        sync_s = time.perf_counter() - start
        start = time.perf_counter()
        database = gallery.load(pipeline_of(maker.dim))
        load_s = time.perf_counter() - start
        found = gallery.nearest(newcomers[:1], MODEL, exact=False)[0][0][0]
        named = database.identify(newcomers[:1]).names[0]
        gallery.sync_photos(enrolled[1:], examine, MODEL, maker.dim)
        overlap, queries.CODES_OVERLAP = queries.CODES_OVERLAP, timedelta(0)
        try:
            start = time.perf_counter()
            again = gallery.load(pipeline_of(maker.dim))
            carried_s = time.perf_counter() - start
        finally:
            queries.CODES_OVERLAP = overlap
        named_again = again.identify(newcomers).names
        rows = again.searcher.codes_rows_read if again.searcher is not None else None
        for opened in (database, again):
            if opened.searcher is not None:
                opened.searcher.close()
    return {"sync_one_s": round(sync_s, 2), "index": report["index"], "load_after_s": round(load_s, 2),
            "index_finds_him": found == enrolled[0][0], "identified_as": named,
            "load_carried_s": round(carried_s, 2), "carried_rows_read": rows,
            "carried_identifies_both": named_again == [enrolled[0][0], enrolled[1][0]]}


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


def print_size(row: dict) -> None:
    print(f"\n{row['people']:,} people, dim {row['dim']}, {row['vectors']} (load {row['load'][0]:.1f}): enroll "
          f"{row['enroll_s']} s ({row['enroll_rows_per_s']:,} rows/s), load_centroids {row['load_s']} s, exact scan "
          f"{row['exact_1_ms']} ms / {row['exact_10_ms']} ms (1 / 10 faces, agrees with NumPy "
          f"{row['exact_agrees_with_numpy']:.3f})")
    for kind in ("ivfflat", "hnsw"):
        if kind in row:
            index = row[kind]
            print(f"  {kind}: built in {index['build_s']} s (load {index['load_before'][0]:.1f})")
            for value, f in index.items():
                if isinstance(f, dict):
                    print(f"    {'probes' if kind == 'ivfflat' else 'ef'} {value:>3}: recall@1 genuine "
                          f"{f['recall_genuine']:.3f}, strangers {f['recall_strangers']:.3f}; {f['ms_1']} ms / "
                          f"{f['ms_10']} ms (1 / 10 faces)")
    for label, c in row["client"].items():
        print(f"  client {label}: opens in {c['open_s']} s, holds {c['held_mb']} MB (peak {c['peak_mb']} MB) + "
              f"{c['codes_mb']} MB of codes; identify {c['identify_1_ms']} ms / {c['identify_10_ms']} ms (1 / 10 "
              f"faces); recall@1 genuine {c['recall_genuine']:.3f}")
    i = row["incremental"]
    print(f"  one new person: sync {i['sync_one_s']} s (index {i['index']}), load after {i['load_after_s']} s, "
          f"index finds him: {i['index_finds_him']}; another, load carrying the codes on {i['load_carried_s']} s "
          f"({i['carried_rows_read']} rows read), both identified: {i['carried_identifies_both']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="an existing database (its facenet_* tables are dropped); default: pgserver")
    parser.add_argument("--people", type=int, nargs="*", default=[100_000])
    parser.add_argument("--like", help="'lfw' (fused vectors of bench/results/lfw_dev_*) or an .npz with "
                                       "embeddings and names: people drawn like them (default: random unit vectors)")
    parser.add_argument("--index", nargs="*", default=["ivfflat", "hnsw"], choices=["ivfflat", "hnsw"])
    parser.add_argument("--no_hnsw_above", type=int, default=100_000, help="skip HNSW for larger galleries")
    parser.add_argument("--small", type=int, nargs="*", default=[2_000, 10_000, 20_000, 50_000])
    parser.add_argument("--concurrent", type=int, default=20_000, help="people per client in the concurrency run")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    scratch = Path(tempfile.mkdtemp(prefix="bench_pg_"))
    like = fused_like(LFW, scratch) if args.like == "lfw" else Path(args.like) if args.like else None
    maker = People(args.dim, like)
    server = None
    url = args.url
    if url is None:
        import pgserver

        server = pgserver.get_server(scratch / "data", cleanup_mode="delete")
        url = server.get_uri()
    result: dict = {"server": "pgserver (PostgreSQL 16, pgvector 0.6.2)" if server else "given URL", "sizes": []}
    try:
        with PgGallery(url) as gallery:
            version = gallery.conn.execute("SHOW server_version").fetchone()[0]
            pgvector = gallery.conn.execute("SELECT default_version FROM pg_available_extensions "
                                            "WHERE name = 'vector'").fetchone()[0]
        print(f"PostgreSQL {version}, pgvector {pgvector}; dim {maker.dim}; {maker.kind}; load {os.getloadavg()}")
        for people in args.people:
            kinds = [k for k in ("hnsw", "ivfflat")
                     if k in args.index and (k != "hnsw" or people <= args.no_hnsw_above)]
            row = bench_size(url, people, maker, args.repeat, kinds)
            result["sizes"].append(row)
            print_size(row)
        if args.small:
            result["exact_1_face_ms_small"] = bench_small(url, args.small, maker.dim, args.repeat, rng)
            print("\nexact scan, 1 face:", ", ".join(f"{n:,} people {ms} ms"
                                                    for n, ms in result["exact_1_face_ms_small"].items()))
        if args.concurrent:
            result["concurrent"] = bench_concurrent(url, args.concurrent, maker.dim)
            c = result["concurrent"]
            print(f"\ntwo clients x {c['people_each']:,} people at once: {c['seconds']} s, {c['people_present']:,} "
                  f"people / {c['photos_present']:,} photos present, all present: {c['all_present']}, "
                  f"errors: {c['errors'] or 'none'}")
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"load at the end {os.getloadavg()}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
