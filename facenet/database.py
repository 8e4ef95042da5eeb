"""The enrollment database (data/<person>/ photos -> embeddings and centroids) and the 1:N lookup.

`sync_database` makes `database_dir` follow `data_dir`: photos are keyed by the sha256 of their bytes, so only
new or changed photos are detected and embedded (a renamed or moved photo is not), and photos or people that
left data/ are pruned. data/ is only ever read.

On disk the database is ONE file, `faces.npz` (np.savez, loaded with allow_pickle=False): the per-photo
embeddings, the per-person centroids and a UTF-8 JSON manifest (format version, the embedder fingerprint,
every photo's path, size, mtime and hash, each distinct photo's detection result). One file means one atomic
rename: a crash mid-write leaves the previous complete database in place, and the three parts can never
disagree. Beside it, `enrollment_report.json` / `.txt` say what the last sync did.

Lookup: nearest centroid by Euclidean distance on the unit sphere (one matrix product). The default decision
holds false accepts of strangers down as the gallery grows: a stranger is compared with P people, so each
comparison may accept only a share f = 1 - (1 - GALLERY_FAR) ** (1 / P); each person's threshold is the
f-quantile of the distance from a stranger to a centroid of that person's k photos, modelled from LFW DevTrain
by bench/calibrate.py (mean falling with k, a measured lower tail). See the README for the measured trade-off.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

from facenet.config import (
    DATABASE_FILE,
    DATABASE_FORMAT,
    DATABASE_VERSION,
    EMBEDDING_DIM,
    ENROLL_CHUNK,
    ENROLLMENT_REPORT,
    GALLERY_FAR,
    IMPOSTOR_MEAN_MANY,
    IMPOSTOR_MEAN_ONE,
    IMPOSTOR_STD,
    IMPOSTOR_Z,
    SCORE_STEEPNESS,
    UNKNOWN,
    VERIFY_THRESHOLD,
)
from facenet.console import progress
from facenet.embed import normalize
from facenet.faces import face_chip
from facenet.files import atomic_write, file_sha256
from facenet.images import ImageError, list_people, load_image

if TYPE_CHECKING:
    from facenet.embed import Embedder
    from facenet.faces import FaceDetector

log = logging.getLogger(__name__)

FARTHEST = 2.0
"""Largest distance between unit vectors: what a face is from an empty gallery."""

NO_FACE = "no face"


# --------------------------------------------------------------------------- thresholds and scores


def _z(far: float) -> float:
    """Standardised stranger-distance quantile at a false-accept rate: the measured table, Gaussian beyond it."""
    far = min(max(far, 1e-300), 1.0 - 1e-12)
    log_far = np.log10(far)
    (high_log, high_z), (low_log, low_z) = IMPOSTOR_Z[0], IMPOSTOR_Z[-1]
    gaussian = NormalDist().inv_cdf
    if log_far > high_log:
        return gaussian(far) * high_z / gaussian(10.0**high_log)
    if log_far < low_log:
        return gaussian(far) * low_z / gaussian(10.0**low_log)
    logs, zs = zip(*reversed(IMPOSTOR_Z), strict=True)
    return float(np.interp(log_far, logs, zs))


def impostor_quantile(far: float, photos: int = 1) -> float:
    """Distance below which a share `far` of strangers falls from the centroid of `photos` photos of someone."""
    mean = IMPOSTOR_MEAN_MANY + (IMPOSTOR_MEAN_ONE - IMPOSTOR_MEAN_MANY) / max(int(photos), 1)
    return float(mean + IMPOSTOR_STD * _z(far))


def comparison_far(people: int, target_far: float = GALLERY_FAR) -> float:
    """Per-comparison false-accept rate that keeps a stranger's chance of matching ANY of `people` at target_far."""
    return float(-np.expm1(np.log1p(-target_far) / max(int(people), 1)))


def gallery_threshold(people: int, photos: int = 1, target_far: float = GALLERY_FAR) -> float:
    """Default threshold for someone enrolled with `photos` photos in a gallery of `people` people.

    Falls as the gallery grows (more people, more chances for a stranger to land near one of them) and rises
    slightly with fewer photos per person (a one-photo centroid sits farther from everyone).
    """
    return impostor_quantile(comparison_far(people, target_far), photos)


def match_score(distance: float | np.ndarray, threshold: float | np.ndarray) -> float | np.ndarray:
    """0-100 score: 100 / (1 + (distance / threshold) ** SCORE_STEEPNESS).

    100 for identical faces, 50 exactly at the threshold (above 50 = accepted), towards 0 far away.
    """
    ratio = np.asarray(distance, dtype=np.float64) / np.maximum(np.asarray(threshold, dtype=np.float64), 1e-9)
    score = 100.0 / (1.0 + np.maximum(ratio, 0.0) ** SCORE_STEEPNESS)
    return float(score) if score.ndim == 0 else score


# --------------------------------------------------------------------------- lookup


@dataclass(frozen=True)
class Match:
    """Who a face is: the enrolled name (or UNKNOWN when rejected), its distance and 0-100 score."""

    name: str
    distance: float
    score: float


class FaceDatabase:
    """Enrolled people's centroids and the nearest-centroid lookup with a gallery-size-aware threshold.

    `threshold` is the default for a person with the gallery's median number of photos; each person's own
    default (`thresholds[i]`, from their photo count) is what `identify` applies unless overridden. Both are
    multiplied by `distance_scale`, the spread of fine-tuned weights relative to the calibrated model.
    """

    def __init__(
        self,
        names: list[str],
        centroids: np.ndarray,
        fingerprint: str,
        photo_counts: list[int] | np.ndarray | None = None,
        target_far: float = GALLERY_FAR,
        distance_scale: float = 1.0,
    ) -> None:
        self.names = list(names)
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32).reshape(-1, EMBEDDING_DIM)
        if len(self.names) != len(self.centroids):
            raise ValueError(f"{len(self.names)} names for {len(self.centroids)} centroids")
        counts = np.ones(len(self.names), int) if photo_counts is None else np.asarray(photo_counts, int)
        self.photo_counts = counts
        self.fingerprint = fingerprint
        self.target_far = target_far
        self.distance_scale = distance_scale
        people = len(self.names)
        by_count = {int(k): distance_scale * gallery_threshold(people, int(k), target_far) for k in np.unique(counts)}
        self.thresholds = np.array([by_count[int(k)] for k in counts], dtype=np.float64)
        typical = int(np.median(counts)) if people else 1
        self.threshold = distance_scale * gallery_threshold(people, typical, target_far)

    def __len__(self) -> int:
        return len(self.names)

    def identify(self, embeddings: np.ndarray, threshold: float | None = None) -> list[Match]:
        """(N, 128) unit vectors -> one Match per row: the nearest centroid, or UNKNOWN beyond the threshold.

        One matrix product for all faces: d^2 = 2 - 2 x.c on the unit sphere. `threshold` replaces every
        person's default. With nobody enrolled every face is UNKNOWN at distance FARTHEST (2.0).
        """
        x = np.asarray(embeddings, dtype=np.float32).reshape(-1, EMBEDDING_DIM)
        if len(self) == 0:
            limit = self.threshold if threshold is None else threshold
            return [Match(UNKNOWN, FARTHEST, match_score(FARTHEST, limit)) for _ in range(len(x))]
        similarity = x @ self.centroids.T
        best = similarity.argmax(axis=1)
        nearest = similarity[np.arange(len(x)), best].astype(np.float64)
        distance = np.sqrt(np.clip(2.0 - 2.0 * nearest, 0.0, 4.0))
        limit = self.thresholds[best] if threshold is None else np.full(len(x), float(threshold))
        score = match_score(distance, limit)
        return [
            Match(self.names[b] if d <= t else UNKNOWN, float(d), float(s))
            for b, d, t, s in zip(best, distance, limit, score, strict=True)
        ]


# --------------------------------------------------------------------------- report


@dataclass
class EnrollmentReport:
    """What one sync did and found; paths are relative to data_dir."""

    data_dir: str
    database: str
    fingerprint: str = ""
    threshold: float = float("nan")
    people: dict[str, list[str]] = field(default_factory=dict)
    """Enrolled person -> the photos used."""
    skipped: list[dict[str, str]] = field(default_factory=list)
    """{"path", "reason"}: unreadable, no face."""
    several_faces: list[dict[str, Any]] = field(default_factory=list)
    """{"path", "faces"}: used, with the largest face."""
    far_from_own: list[dict[str, Any]] = field(default_factory=list)
    """{"path", "person", "distance"}: farther than VERIFY_THRESHOLD from the person's other photos."""
    mislabeled: list[dict[str, Any]] = field(default_factory=list)
    """{"path", "person", "closer_to", "distance", "distance_to_other"}: nearer another person than its own."""
    not_enrolled: list[str] = field(default_factory=list)
    """People folders without a usable photo."""
    ignored: list[str] = field(default_factory=list)
    """Photos directly in data_dir (not in a person's folder)."""
    embedded: int = 0
    """Distinct photos detected and embedded by this sync."""
    examined: int = 0
    """Distinct photos decoded by this sync (embedded + newly skipped)."""
    reused: int = 0
    """Photos whose stored result was reused (nothing recomputed)."""
    hashed: int = 0
    """Photos whose bytes were hashed (new, moved or touched since the last sync)."""
    pruned: int = 0
    """Stored photo results dropped because their photo left data_dir."""
    rebuilt: str | None = None
    """Why the stored database was discarded (missing, corrupt, other weights), else None."""
    saved: bool = False
    """Whether the database file was (re)written."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        photos = sum(len(paths) for paths in self.people.values())
        lines = [
            f"Enrollment: {len(self.people)} people, {photos} photos ({self.embedded} embedded, "
            f"{self.reused} reused, {self.pruned} pruned) -> {self.database}",
            f"Default threshold {self.threshold:.3f} (at most {GALLERY_FAR:.0%} of strangers named)",
        ]
        if self.rebuilt:
            lines.append(f"Database rebuilt: {self.rebuilt}")
        for name, paths in self.people.items():
            shown = ", ".join(Path(p).name for p in paths[:5]) + (f", +{len(paths) - 5} more" if len(paths) > 5 else "")
            lines.append(f"  {name} ({len(paths)}): {shown}")
        sections = [
            ("Skipped", [f"{s['path']}: {s['reason']}" for s in self.skipped]),
            ("Several faces, the largest used", [f"{s['path']}: {s['faces']} faces" for s in self.several_faces]),
            ("Far from the person's other photos", [f"{s['path']}: {s['distance']:.3f}" for s in self.far_from_own]),
            (
                "Likely mislabeled",
                [
                    f"{s['path']}: closer to {s['closer_to']} ({s['distance_to_other']:.3f}) than to {s['person']} "
                    f"({s['distance']:.3f})"
                    for s in self.mislabeled
                ],
            ),
            ("Not enrolled (no usable photo)", self.not_enrolled),
            ("Ignored (photos directly in the data folder)", self.ignored),
        ]
        for title, items in sections:
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines.extend(f"  {item}" for item in items)
        return "\n".join(lines)


# --------------------------------------------------------------------------- storage


class _Stored:
    """The database as read from disk: manifest + per-photo embeddings (rows match manifest["embedded"])."""

    def __init__(self, manifest: dict[str, Any], embeddings: np.ndarray) -> None:
        self.manifest = manifest
        self.rows = {sha: i for i, sha in enumerate(manifest["embedded"])}
        self.embeddings = embeddings

    @classmethod
    def empty(cls) -> _Stored:
        return cls({"photos": [], "results": {}, "embedded": [], "people": []}, np.zeros((0, EMBEDDING_DIM)))


def _read(path: Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Manifest, photo embeddings and centroids of a database file; ValueError when anything is off."""
    with np.load(path, allow_pickle=False) as data:
        manifest = json.loads(data["manifest"].tobytes().decode("utf-8"))
        embeddings = data["embeddings"].astype(np.float32)
        centroids = data["centroids"].astype(np.float32)
    if manifest.get("format") != DATABASE_FORMAT or manifest.get("version") != DATABASE_VERSION:
        raise ValueError(f"format {manifest.get('format')!r} version {manifest.get('version')!r}, "
                         f"expected {DATABASE_FORMAT!r} version {DATABASE_VERSION}")
    if embeddings.shape != (len(manifest["embedded"]), EMBEDDING_DIM) or centroids.shape != (
        len(manifest["people"]),
        EMBEDDING_DIM,
    ):
        raise ValueError("array shapes do not match the manifest")
    if not (np.isfinite(embeddings).all() and np.isfinite(centroids).all()):
        raise ValueError("non-finite values")
    embedded = set(manifest["embedded"])
    for photo in manifest["photos"]:
        result = manifest["results"][photo["sha256"]]
        if result.get("reason") is None and photo["sha256"] not in embedded:
            raise ValueError(f"no embedding for {photo['path']}")
    return manifest, embeddings, centroids


def load_database(database_dir: str | Path, fingerprint: str | None = None) -> FaceDatabase | None:
    """The saved database as it is (no sync); None with a warning when missing, unreadable or by other weights."""
    path = Path(database_dir) / DATABASE_FILE
    try:
        manifest, _, centroids = _read(path)
    except FileNotFoundError:
        log.warning("%s: no database yet", path)
        return None
    except Exception as error:  # noqa: BLE001 - any unreadable file is reported, never a crash
        log.warning("%s: unreadable database (%s)", path, error)
        return None
    if fingerprint is not None and manifest["fingerprint"] != fingerprint:
        log.warning("%s: made by other weights (%s, not %s)", path, manifest["fingerprint"], fingerprint)
        return None
    people = manifest["people"]
    return FaceDatabase([p["name"] for p in people], centroids, manifest["fingerprint"], [p["photos"] for p in people],
                        distance_scale=float(manifest.get("distance_scale", 1.0)))


def _load_stored(path: Path, fingerprint: str) -> tuple[_Stored, str | None]:
    """The stored database to reuse, or an empty one and why it was discarded."""
    if not path.exists():
        log.info("%s: no database yet; creating it", path)
        return _Stored.empty(), "no database yet"
    try:
        manifest, embeddings, _ = _read(path)
    except Exception as error:  # noqa: BLE001 - corrupt, truncated, foreign or old: rebuild
        log.warning("%s: unreadable database (%s); rebuilding it", path, error)
        return _Stored.empty(), f"unreadable ({error})"
    if manifest["fingerprint"] != fingerprint:
        log.info("%s: made by other weights (%s); rebuilding it for %s", path, manifest["fingerprint"], fingerprint)
        return _Stored.empty(), f"made by other weights ({manifest['fingerprint']}, now {fingerprint})"
    return _Stored(manifest, embeddings), None


def _write_database(path: Path, manifest: dict[str, Any], embeddings: np.ndarray, centroids: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                manifest=np.frombuffer(json.dumps(manifest, ensure_ascii=False).encode("utf-8"), np.uint8),
                embeddings=np.asarray(embeddings, np.float32).reshape(-1, EMBEDDING_DIM),
                centroids=np.asarray(centroids, np.float32).reshape(-1, EMBEDDING_DIM),
            )
            handle.flush()
            os.fsync(handle.fileno())

    atomic_write(path, write)


def _write_report(database_dir: Path, report: EnrollmentReport) -> None:
    stem = database_dir / ENROLLMENT_REPORT
    text = json.dumps(report.to_dict(), ensure_ascii=False, indent=1)
    atomic_write(stem.with_suffix(".json"), lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    atomic_write(stem.with_suffix(".txt"), lambda tmp: tmp.write_text(report.to_text() + "\n", encoding="utf-8"))


# --------------------------------------------------------------------------- sync


def _examine(
    pending: dict[str, Path], embedder: Embedder, detector: FaceDetector
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Detect and embed each distinct new photo (largest face); chips are embedded in batches."""
    results: dict[str, dict[str, Any]] = {}
    vectors: dict[str, np.ndarray] = {}
    if not pending:
        return results, vectors
    chips: list[np.ndarray] = []
    waiting: list[str] = []

    def flush() -> None:
        if chips:
            for sha, vector in zip(waiting, embedder.embed(np.stack(chips)), strict=True):
                vectors[sha] = vector
            chips.clear()
            waiting.clear()

    for sha, path in progress(pending.items(), "enrolling", total=len(pending), unit="photo"):
        result: dict[str, Any] = {"reason": None, "faces": 0, "box": None, "detector": detector.kind}
        try:
            image = load_image(path)
            faces = detector.detect(image)
        except ImageError as error:
            result["reason"] = f"unreadable: {error.reason}"
        else:
            result["faces"] = len(faces)
            if faces:
                result["box"] = [int(v) for v in faces[0].box]
                chips.append(face_chip(image, faces[0]))
                waiting.append(sha)
            else:
                result["reason"] = NO_FACE
        if result["reason"]:
            log.warning("%s: skipped, %s", path, result["reason"])
        results[sha] = result
        if len(chips) >= ENROLL_CHUNK:
            flush()
    flush()
    return results, vectors


def _quality(
    report: EnrollmentReport,
    names: list[str],
    centroids: np.ndarray,
    used: list[tuple[str, int, np.ndarray]],
    far: float = VERIFY_THRESHOLD,
) -> None:
    """Flag photos farther than `far` from their person's other photos (leave-one-out centroid) or nearer
    another person."""
    if not used:
        return
    person = np.array([p for _, p, _ in used])
    vectors = np.stack([v for _, _, v in used]).astype(np.float32)
    sums = np.zeros((len(names), EMBEDDING_DIM), np.float64)
    np.add.at(sums, person, vectors)
    counts = np.bincount(person, minlength=len(names))
    others = normalize(sums[person] - vectors)
    own = np.linalg.norm(vectors - others, axis=1)
    for start in range(0, len(vectors), 1024):
        block = slice(start, start + 1024)
        similarity = vectors[block] @ centroids.T
        similarity[np.arange(len(similarity)), person[block]] = -np.inf
        nearest = similarity.argmax(axis=1) if len(names) > 1 else np.zeros(len(similarity), int)
        other = np.sqrt(np.clip(2.0 - 2.0 * similarity[np.arange(len(similarity)), nearest], 0.0, 4.0))
        for i, j, d_other in zip(range(start, start + len(similarity)), nearest, other, strict=True):
            if counts[person[i]] < 2:
                continue
            path, name = used[i][0], names[person[i]]
            if len(names) > 1 and d_other < own[i]:
                report.mislabeled.append({"path": path, "person": name, "closer_to": names[j],
                                          "distance": round(float(own[i]), 4),
                                          "distance_to_other": round(float(d_other), 4)})
            elif own[i] > far:
                report.far_from_own.append({"path": path, "person": name, "distance": round(float(own[i]), 4)})


def _hash_photos(
    data_dir: Path, people: list[tuple[str, list[Path]]], old_photos: dict[str, Any], report: EnrollmentReport
) -> list[dict[str, Any]]:
    """One record per photo (path, person, sha256, size, mtime); the stored hash is reused when size and mtime
    are unchanged, so an unchanged data/ costs one stat per photo."""
    photos = []
    for name, files in people:
        for file in files:
            rel = file.relative_to(data_dir).as_posix()
            try:
                stat = file.stat()
                old = old_photos.get(rel)
                if old and old["size"] == stat.st_size and old["mtime_ns"] == stat.st_mtime_ns:
                    sha = old["sha256"]
                else:
                    sha = file_sha256(file)
                    report.hashed += 1
            except OSError as error:
                report.skipped.append({"path": rel, "reason": f"unreadable: {error.strerror or error}"})
                log.warning("%s: skipped, %s", file, report.skipped[-1]["reason"])
                continue
            photos.append({"path": rel, "person": name, "sha256": sha, "size": stat.st_size,
                           "mtime_ns": stat.st_mtime_ns})
    return photos


def _enroll_people(
    data_dir: Path,
    people: list[tuple[str, list[Path]]],
    photos: list[dict[str, Any]],
    results: dict[str, dict[str, Any]],
    vector,
    report: EnrollmentReport,
) -> tuple[list[str], np.ndarray, list[int], list[tuple[str, int, np.ndarray]]]:
    """Names, centroids (normalised mean of each person's distinct usable photos), photo counts, and the
    (path, person index, embedding) of every photo used; fills the report's per-person sections."""
    names, centroids, counts, used = [], [], [], []
    by_person: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in people}
    for photo in photos:
        by_person[photo["person"]].append(photo)
    for name, _ in people:
        paths, distinct = [], {}
        for photo in by_person[name]:
            result = results[photo["sha256"]]
            if result["reason"] is not None:
                report.skipped.append({"path": photo["path"], "reason": result["reason"]})
                continue
            if result["faces"] > 1:
                report.several_faces.append({"path": photo["path"], "faces": result["faces"]})
            paths.append(photo["path"])
            distinct.setdefault(photo["sha256"], photo["path"])
        if not distinct:
            report.not_enrolled.append(name)
            log.warning("%s: no usable photo; %s is not enrolled", data_dir / name, name)
            continue
        vectors = np.stack([vector(sha) for sha in distinct])
        used.extend((rel, len(names), v) for rel, v in zip(distinct.values(), vectors, strict=True))
        names.append(name)
        centroids.append(normalize(vectors.mean(axis=0)))
        counts.append(len(distinct))
        report.people[name] = paths
    report.skipped.sort(key=lambda s: s["path"])
    return names, np.stack(centroids) if centroids else np.zeros((0, EMBEDDING_DIM), np.float32), counts, used


def sync_database(
    data_dir: str | Path, database_dir: str | Path, embedder: Embedder, detector: FaceDetector
) -> tuple[FaceDatabase, EnrollmentReport]:
    """Bring `database_dir` in line with the photos of `data_dir` (read only) and return the database and report.

    Unchanged photos are not recomputed; a database made by other weights, corrupt or of another version is
    rebuilt. A missing data_dir gives an empty database without touching the saved one. Failing to save is
    a warning: the database is still returned.
    """
    data_dir, database_dir = Path(data_dir), Path(database_dir)
    path = database_dir / DATABASE_FILE
    report = EnrollmentReport(data_dir=str(data_dir), database=str(path), fingerprint=embedder.fingerprint)
    if not data_dir.is_dir():
        log.warning("%s: data folder not found; no one is enrolled (the saved database is kept)", data_dir)
        database = FaceDatabase([], np.zeros((0, EMBEDDING_DIM)), embedder.fingerprint)
        report.threshold = database.threshold
        return database, report

    stored, report.rebuilt = _load_stored(path, embedder.fingerprint)
    old_results = stored.manifest["results"]
    people, loose = list_people(data_dir, skip=database_dir)
    if loose:
        report.ignored = [p.name for p in loose]
        log.warning("%s: %d photo(s) directly in the data folder ignored; put them in %s/<person name>/",
                    data_dir, len(loose), data_dir)
    photos = _hash_photos(data_dir, people, {p["path"]: p for p in stored.manifest["photos"]}, report)

    def reusable(sha: str) -> bool:
        result = old_results.get(sha)
        if result is None:
            return False
        if result["reason"] is None:
            return sha in stored.rows
        # "no face" may change with another detector; an undecodable file will not
        return result["reason"] != NO_FACE or result["detector"] == detector.kind

    pending: dict[str, Path] = {}
    for photo in photos:
        if reusable(photo["sha256"]):
            report.reused += 1
        else:
            pending.setdefault(photo["sha256"], data_dir / photo["path"])
    new_results, new_vectors = _examine(pending, embedder, detector)
    report.examined, report.embedded = len(new_results), len(new_vectors)
    results = {sha: old_results[sha] for sha in {p["sha256"] for p in photos} if sha not in new_results}
    results.update(new_results)
    report.pruned = len(set(old_results) - set(results))

    def vector(sha: str) -> np.ndarray:
        return new_vectors[sha] if sha in new_vectors else stored.embeddings[stored.rows[sha]]

    names, centroids, counts, used = _enroll_people(data_dir, people, photos, results, vector, report)
    scale = getattr(embedder, "distance_scale", 1.0)
    database = FaceDatabase(names, centroids, embedder.fingerprint, counts, distance_scale=scale)
    report.threshold = round(database.threshold, 4)
    _quality(report, names, centroids, used, far=VERIFY_THRESHOLD * scale)

    embedded = sorted(sha for sha, result in results.items() if result["reason"] is None)
    manifest = {
        "format": DATABASE_FORMAT,
        "version": DATABASE_VERSION,
        "fingerprint": embedder.fingerprint,
        "distance_scale": scale,
        "photos": photos,
        "results": dict(sorted(results.items())),
        "embedded": embedded,
        "people": [{"name": n, "photos": k} for n, k in zip(names, counts, strict=True)],
    }
    previous = {key: value for key, value in stored.manifest.items() if key != "written"}
    try:
        if report.rebuilt or previous != manifest:
            embeddings = np.stack([vector(sha) for sha in embedded]) if embedded else np.zeros((0, EMBEDDING_DIM))
            written = {**manifest, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            _write_database(path, written, embeddings, centroids)
            report.saved = True
        _write_report(database_dir, report)
    except OSError as error:
        log.warning("%s: could not save the database (%s); using it in memory this time", path, error)
    return database, report
