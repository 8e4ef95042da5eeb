"""The enrollment database (data/<person>/ photos -> embeddings and centroids) and the 1:N lookup.

`sync_database` makes `database_dir` follow `data_dir`: photos are keyed by the sha256 of their bytes, so only
new or changed photos are detected and embedded (a renamed or moved photo is not), and photos or people that
left data/ are pruned. data/ is only ever read.

On disk the database is ONE file, `faces.npz` (np.savez, loaded with allow_pickle=False): the per-photo
embeddings, the per-person centroids and a UTF-8 JSON manifest (format version, the embedder fingerprint,
every photo's path, size, mtime and hash, each distinct photo's detection result). One file means one atomic
rename: a crash mid-write leaves the previous complete database in place, and the three parts can never
disagree; the manifest records a sha256 of itself and the arrays, so a file changed afterwards (swapped vectors,
a manifest that disagrees with its arrays) is rebuilt, never trusted. A long sync saves its progress as small
checkpoint parts (`faces.checkpoint.*.npz`) that a killed sync's successor takes over. Beside it,
`enrollment_report.json` / `.txt` say what the last sync did.

Lookup: nearest centroid by Euclidean distance on the unit sphere (one matrix product). The default decision
holds false accepts of strangers down as the gallery grows: a stranger is compared with P people, so each
comparison may accept only a share f = 1 - (1 - GALLERY_FAR) ** (1 / P); each person's threshold is the
f-quantile of the distance from a stranger to a centroid of that person's k photos, modelled from LFW DevTrain
by bench/calibrate.py (mean falling with k, a measured lower tail). See the README for the measured trade-off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

from facenet.config import (
    CHECKPOINT_PARTS,
    DATABASE_FILE,
    DATABASE_FORMAT,
    DATABASE_VERSION,
    ENROLL_CHECKPOINT_PHOTOS,
    ENROLL_CHUNK,
    ENROLLMENT_REPORT,
    GALLERY_FAR,
    SCORE_STEEPNESS,
    UNKNOWN,
    Calibration,
    calibration,
)
from facenet.files import atomic_write, file_sha256, remove_stale_temps
from facenet.images import DataLayout, display_path, scan_data_folder
from facenet.models.embed import normalize
from facenet.progress import progress_bar

if TYPE_CHECKING:
    from facenet.pipeline import FacePipeline

log = logging.getLogger(__name__)

FARTHEST = 2.0
"""Largest distance between unit vectors: what a face is from an empty gallery."""

NO_FACE = "no face"

SEARCH_INDEX_MIN = 50_000
"""From this many people on, lookup uses facenet.search's exact index instead of one plain matrix product
(bench/bench_search.py: at 100 k people 0.9 ms vs 8 ms for one face; at 1 M 7-12 ms vs 40-58 ms)."""


# --------------------------------------------------------------------------- thresholds and scores


def _z(far: float, table: tuple[tuple[float, float], ...]) -> float:
    """Standardised stranger-distance quantile at a false-accept rate: the measured table, Gaussian beyond it."""
    far = min(max(far, 1e-300), 1.0 - 1e-12)
    log_far = np.log10(far)
    (high_log, high_z), (low_log, low_z) = table[0], table[-1]
    gaussian = NormalDist().inv_cdf
    if log_far > high_log:
        return gaussian(far) * high_z / gaussian(10.0**high_log)
    if log_far < low_log:
        return gaussian(far) * low_z / gaussian(10.0**low_log)
    logs, zs = zip(*reversed(table), strict=True)
    return float(np.interp(log_far, logs, zs))


def impostor_quantile(far: float, photos: int = 1, model: str = "dlib") -> float:
    """Distance below which a share `far` of strangers falls from the centroid of `photos` photos of someone."""
    c: Calibration = calibration(model)
    mean = c.impostor_mean_many + (c.impostor_mean_one - c.impostor_mean_many) / max(int(photos), 1)
    return float(mean + c.impostor_std * _z(far, c.impostor_z))


def comparison_far(people: int, target_far: float = GALLERY_FAR) -> float:
    """Per-comparison false-accept rate that keeps a stranger's chance of matching ANY of `people` at target_far."""
    return float(-np.expm1(np.log1p(-target_far) / max(int(people), 1)))


def gallery_threshold(people: int, photos: int = 1, target_far: float = GALLERY_FAR, model: str = "dlib") -> float:
    """Default threshold for someone enrolled with `photos` photos in a gallery of `people` people.

    Falls as the gallery grows (more people, more chances for a stranger to land near one of them) and rises
    slightly with fewer photos per person (a one-photo centroid sits farther from everyone).
    """
    return impostor_quantile(comparison_far(people, target_far), photos, model)


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
    multiplied by `distance_scale`, the spread of fine-tuned weights relative to the calibrated model. `model`
    (one of MODELS) picks the calibrated constants; `fingerprint` identifies the weights that made the centroids.
    """

    def __init__(
        self,
        names: list[str],
        centroids: np.ndarray,
        fingerprint: str,
        photo_counts: list[int] | np.ndarray | None = None,
        target_far: float = GALLERY_FAR,
        distance_scale: float = 1.0,
        model: str = "dlib",
        dim: int | None = None,
    ) -> None:
        self.names = list(names)
        centroids = np.asarray(centroids, dtype=np.float32)
        self.dim = int(dim or (centroids.shape[-1] if centroids.ndim == 2 and centroids.shape[-1] else 128))
        self.centroids = np.ascontiguousarray(centroids).reshape(-1, self.dim)
        self.model = model
        self._index = None
        if len(self.names) != len(self.centroids):
            raise ValueError(f"{len(self.names)} names for {len(self.centroids)} centroids")
        counts = np.ones(len(self.names), int) if photo_counts is None else np.asarray(photo_counts, int)
        self.photo_counts = counts
        self.fingerprint = fingerprint
        self.target_far = target_far
        self.distance_scale = distance_scale
        people = len(self.names)
        by_count = {int(k): distance_scale * gallery_threshold(people, int(k), target_far, model)
                    for k in np.unique(counts)}
        self.thresholds = np.array([by_count[int(k)] for k in counts], dtype=np.float64)
        typical = int(np.median(counts)) if people else 1
        self.threshold = distance_scale * gallery_threshold(people, typical, target_far, model)

    def __len__(self) -> int:
        return len(self.names)

    def _nearest(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index, similarity) of each row's nearest centroid: one matrix product, or for a big gallery the exact
        int8-shortlist index of facenet.search (1 face among 1 M people in < 20 ms on 2 cores)."""
        if len(self) >= SEARCH_INDEX_MIN:
            if self._index is None:
                from facenet.search import ExactIndex

                self._index = ExactIndex(self.centroids)
            indices, similarities = self._index.search(x, 1)
            return indices[:, 0], similarities[:, 0].astype(np.float64)
        similarity = x @ self.centroids.T
        best = similarity.argmax(axis=1)
        return best, similarity[np.arange(len(x)), best].astype(np.float64)

    def identify(self, embeddings: np.ndarray, threshold: float | None = None) -> list[Match]:
        """(N, 128) unit vectors -> one Match per row: the nearest centroid, or UNKNOWN beyond the threshold.

        One matrix product for all faces: d^2 = 2 - 2 x.c on the unit sphere. `threshold` replaces every
        person's default. With nobody enrolled every face is UNKNOWN at distance FARTHEST (2.0).
        """
        x = np.asarray(embeddings, dtype=np.float32).reshape(-1, self.dim)
        if len(self) == 0:
            limit = self.threshold if threshold is None else threshold
            return [Match(UNKNOWN, FARTHEST, match_score(FARTHEST, limit)) for _ in range(len(x))]
        best, nearest = self._nearest(x)
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
    """{"path", "person", "distance"}: farther than the model's verify threshold from the person's other photos."""
    mislabeled: list[dict[str, Any]] = field(default_factory=list)
    """{"path", "person", "closer_to", "distance", "distance_to_other"}: nearer another person than its own;
    left out of the person's centroid."""
    duplicates: list[dict[str, str]] = field(default_factory=list)
    """{"path", "same_as"}: byte-identical copies of a photo already enrolled (counted once); a photo also in another
    person's folder adds "kept_with": the person it was kept with (nearest the centroid of their other photos)."""
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
    resumed: int = 0
    """Photos whose result came from the checkpoint of an interrupted enrollment (counted in `reused` too)."""
    save_error: str | None = None
    """The file that could not be written and why (database or report), else None."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        used = sum(len(paths) for paths in self.people.values())
        excluded = sum(1 for m in self.mislabeled if m.get("excluded"))
        files = used + len(self.skipped) + len(self.duplicates) + excluded
        lines = [
            f"Enrollment: {len(self.people)} people, {used} of {files} photos used ({len(self.skipped)} skipped, "
            f"{len(self.duplicates)} duplicates, {excluded} left out as likely mislabeled); {self.examined} photos "
            f"examined now, {self.reused} reused, {self.pruned} pruned -> {self.database}",
            f"Default threshold {self.threshold:.3f} (at most {GALLERY_FAR:.0%} of strangers named)",
        ]
        if self.rebuilt:
            lines.append(f"Database rebuilt: {self.rebuilt}")
        if self.resumed:
            lines.append(f"Resumed: {self.resumed} photos examined by an interrupted enrollment were not examined "
                         "again")
        if self.save_error:
            lines.append(f"NOT SAVED: {self.save_error}")
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
                    f"({s['distance']:.3f})" + ("; left out of the centroid" if s.get("excluded") else "")
                    for s in self.mislabeled
                ],
            ),
            ("Duplicates (byte-identical, counted once)", [
                f"{d['path']}: same as {d['same_as']}" + (f" (in another person's folder: kept with {d['kept_with']},"
                                                          " whose photos it matches)" if "kept_with" in d else "")
                for d in self.duplicates]),
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
        return cls({"photos": [], "results": {}, "embedded": [], "people": []}, np.zeros((0, 0), np.float32))


def _read(path: Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Manifest, photo embeddings and centroids of a database file; ValueError when anything is off."""
    with np.load(path, allow_pickle=False) as data:
        manifest = json.loads(data["manifest"].tobytes().decode("utf-8"))
        embeddings = data["embeddings"].astype(np.float32)
        centroids = data["centroids"].astype(np.float32)
    if manifest.get("format") != DATABASE_FORMAT or manifest.get("version") != DATABASE_VERSION:
        raise ValueError(f"format {manifest.get('format')!r} version {manifest.get('version')!r}, "
                         f"expected {DATABASE_FORMAT!r} version {DATABASE_VERSION}")
    dim = int(manifest.get("dim", 0))
    if centroids.shape != (len(manifest["people"]), dim):
        raise ValueError(f"the manifest lists {len(manifest['people'])} people of dimension {dim} but the file holds "
                         f"centroids of shape {centroids.shape}")
    if embeddings.shape != (len(manifest["embedded"]), dim):
        raise ValueError(f"the manifest lists {len(manifest['embedded'])} photo embeddings of dimension {dim} but "
                         f"the file holds {embeddings.shape}")
    if "checksum" in manifest and manifest["checksum"] != _checksum(manifest, embeddings, centroids):
        raise ValueError("checksum mismatch: its names or vectors changed since it was written")
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
                        distance_scale=float(manifest.get("distance_scale", 1.0)), model=manifest["model"],
                        dim=manifest["dim"])


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


def _checksum(manifest: dict[str, Any], *arrays: np.ndarray) -> str:
    """sha256 of a manifest (without its own checksum) and of float32 arrays: what the writer wrote, so that a
    file whose names or vectors were changed afterwards is not trusted."""
    text = json.dumps({k: v for k, v in manifest.items() if k != "checksum"}, sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(text.encode("utf-8"))
    for array in arrays:
        array = np.ascontiguousarray(array, np.float32)
        digest.update(f"{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _write_npz(path: Path, manifest: dict[str, Any], **arrays: np.ndarray) -> None:
    """A manifest (JSON, with the checksum of itself and the arrays) and float32 arrays as one .npz, atomically."""
    arrays = {key: np.asarray(value, np.float32) for key, value in arrays.items()}
    manifest = {**manifest, "checksum": _checksum(manifest, *arrays.values())}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, manifest=np.frombuffer(json.dumps(manifest, ensure_ascii=False).encode("utf-8"),
                                                    np.uint8), **arrays)

    atomic_write(path, write)


def _write_database(path: Path, manifest: dict[str, Any], embeddings: np.ndarray, centroids: np.ndarray) -> None:
    dim = manifest["dim"]
    _write_npz(path, manifest, embeddings=np.asarray(embeddings, np.float32).reshape(-1, dim),
               centroids=np.asarray(centroids, np.float32).reshape(-1, dim))


def _write_report(database_dir: Path, report: EnrollmentReport) -> str | None:
    """Write the report (.json, .txt); the first file that could not be written and why, else None."""
    stem = database_dir / ENROLLMENT_REPORT
    for path, text in ((stem.with_suffix(".json"), json.dumps(report.to_dict(), ensure_ascii=False, indent=1)),
                       (stem.with_suffix(".txt"), report.to_text())):
        try:
            atomic_write(path, lambda tmp, text=text: tmp.write_text(text + "\n", encoding="utf-8"))
        except OSError as error:
            return f"{path}: could not write the enrollment report ({error.strerror or error})"
    return None


# --------------------------------------------------------------------------- checkpoints of a long enrollment

CHECKPOINT_FORMAT = "facenet-enroll-checkpoint"


class _Checkpoint:
    """Saves what enrollment examined, a part file every ENROLL_CHECKPOINT_PHOTOS photos (only the new results:
    the cost stays linear), so that a killed enrollment of thousands of photos resumes where it stopped."""

    def __init__(self, database_dir: Path, model_id: str, dim: int) -> None:
        self.database_dir, self.model_id, self.dim = database_dir, model_id, dim
        self.token, self.parts, self.failed = secrets.token_hex(4), 0, False

    def save(self, results: dict[str, dict[str, Any]], vectors: dict[str, np.ndarray]) -> None:
        """One part with these results (atomically); a failure is logged once and enrollment goes on."""
        if self.failed or not results:
            return
        embedded = sorted(vectors)
        manifest = {"format": CHECKPOINT_FORMAT, "fingerprint": self.model_id, "dim": self.dim,
                    "results": results, "embedded": embedded}
        stacked = np.stack([vectors[sha] for sha in embedded]) if embedded else np.zeros((0, self.dim))
        self.parts += 1
        path = self.database_dir / CHECKPOINT_PARTS.replace("*", f"{self.token}-{self.parts:05d}")
        try:
            _write_npz(path, manifest, embeddings=stacked.reshape(-1, self.dim))
        except OSError as error:
            self.failed = True
            log.warning("%s: could not save enrollment progress (%s)", path, error.strerror or error)


def _read_checkpoints(database_dir: Path, model_id: str, dim: int) -> tuple[dict[str, dict[str, Any]],
                                                                          dict[str, np.ndarray]]:
    """Results and vectors of an interrupted enrollment by this model; a damaged part is skipped with a warning."""
    results: dict[str, dict[str, Any]] = {}
    vectors: dict[str, np.ndarray] = {}
    for path in sorted(database_dir.glob(CHECKPOINT_PARTS)):
        try:
            with np.load(path, allow_pickle=False) as data:
                manifest = json.loads(data["manifest"].tobytes().decode("utf-8"))
                embeddings = data["embeddings"].astype(np.float32)
            if manifest.get("format") != CHECKPOINT_FORMAT or manifest.get("checksum") != _checksum(manifest,
                                                                                                  embeddings):
                raise ValueError("not a checkpoint, or changed since it was written")
        except Exception as error:  # noqa: BLE001 - a damaged part only costs its photos being examined again
            log.warning("%s: unusable enrollment checkpoint (%s); its photos are examined again", path, error)
            continue
        if manifest["fingerprint"] != model_id or embeddings.shape != (len(manifest["embedded"]), dim):
            continue
        results.update(manifest["results"])
        vectors.update(zip(manifest["embedded"], embeddings, strict=True))
    return results, vectors


def _clear_checkpoints(database_dir: Path) -> None:
    for path in database_dir.glob(CHECKPOINT_PARTS):
        path.unlink(missing_ok=True)


DATABASE_FILES = (DATABASE_FILE, f"{ENROLLMENT_REPORT}.*", CHECKPOINT_PARTS)
"""What enrollment writes in the database folder (temp files of these left by a killed run are removed)."""


# --------------------------------------------------------------------------- sync


def examine_photos(pending: dict[str, Path], pipeline: FacePipeline, desc: str | None = "enrolling"
                   ) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Detect and embed each distinct new photo (its largest face, through the pipeline's fallback chain).

    Returns the per-photo result ({"reason", "faces", "box", "how", "detector"}; reason None when embedded) and
    the vectors, keyed like `pending` (by content hash).
    """
    results: dict[str, dict[str, Any]] = {}
    vectors: dict[str, np.ndarray] = {}
    shas = {path: sha for sha, path in pending.items()}
    found = pipeline.embed_photos(list(pending.values()), "largest", chunk=ENROLL_CHUNK, desc=desc)
    for path, result in found.items():
        subject, sha = result.subject, shas[path]
        results[sha] = {"reason": subject.reason, "faces": subject.faces, "how": subject.how,
                        "box": None if subject.face is None else [int(v) for v in subject.face.box],
                        "detector": pipeline.detector.kind}
        if result.vector is None:
            log.warning("%s: skipped, %s", path, subject.reason)
        else:
            vectors[sha] = result.vector
    return results, vectors


def _quality(
    report: EnrollmentReport,
    names: list[str],
    centroids: np.ndarray,
    counts: list[int],
    used: list[tuple[str, int, np.ndarray]],
    far: float,
) -> tuple[list[str], np.ndarray, list[int]]:
    """Flag photos nearer another person than their own (leave-one-out centroid: likely mislabeled) or farther than
    `far` from their person's other photos; mislabeled photos leave their person's centroid (the README's promise).

    Returns names, centroids and photo counts without the mislabeled photos.
    """
    if not used:
        return names, centroids, counts
    person = np.array([p for _, p, _ in used])
    vectors = np.stack([v for _, _, v in used]).astype(np.float32)
    sums = np.zeros((len(names), vectors.shape[1]), np.float64)
    np.add.at(sums, person, vectors)
    own = np.linalg.norm(vectors - normalize(sums[person] - vectors), axis=1)
    similarity = vectors @ centroids.T
    similarity[np.arange(len(vectors)), person] = -np.inf
    nearest = similarity.argmax(axis=1)
    other = np.sqrt(np.clip(2.0 - 2.0 * similarity[np.arange(len(vectors)), nearest], 0.0, 4.0))
    keep = np.ones(len(vectors), bool)
    for i, (path, p, _) in enumerate(used):
        if counts[p] < 2:
            continue
        if len(names) > 1 and other[i] < own[i]:
            keep[i] = False
            report.mislabeled.append({"path": path, "person": names[p], "closer_to": names[nearest[i]],
                                      "distance": round(float(own[i]), 4),
                                      "distance_to_other": round(float(other[i]), 4), "excluded": True})
        elif own[i] > far:
            report.far_from_own.append({"path": path, "person": names[p], "distance": round(float(own[i]), 4)})
    if keep.all():
        return names, centroids, counts
    centroids, counts = centroids.copy(), list(counts)
    for p in np.unique(person[~keep]):
        mine = (person == p) & keep
        if mine.any():
            centroids[p] = normalize(vectors[mine].mean(axis=0))
            counts[p] = int(mine.sum())
            report.people[names[p]] = [used[i][0] for i in np.flatnonzero(mine)]
        else:  # a person whose every photo looks mislabeled keeps them all
            for entry in report.mislabeled:
                if entry["person"] == names[p]:
                    entry["excluded"] = False
    return names, centroids, counts


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
    far: float = np.inf,
) -> tuple[list[str], np.ndarray, list[int], list[tuple[str, int, np.ndarray]]]:
    """Names, centroids (normalised mean of each person's distinct usable photos), photo counts, and the
    (path, person index, embedding) of every photo used; fills the report's per-person sections.

    A byte-identical copy of a photo already seen (in any person's folder) is listed as a duplicate and counts once.
    """
    names, centroids, counts, used = [], [], [], []
    by_person: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in people}
    for photo in photos:
        by_person[photo["person"]].append(photo)
    owners = _owners_of_shared_photos(by_person, results, vector)
    first_seen: dict[str, str] = {}
    for photo in (p for name, _ in people for p in by_person[name] if owners.get(p["sha256"]) == name):
        first_seen.setdefault(photo["sha256"], photo["path"])  # a photo in several people's folders: its owner's
    for name, _ in people:
        distinct = {}
        for photo in by_person[name]:
            sha, rel = photo["sha256"], photo["path"]
            result = results[sha]
            if result["reason"] is not None:
                report.skipped.append({"path": rel, "reason": result["reason"]})
                continue
            if sha in first_seen and first_seen[sha] != rel:
                duplicate = {"path": rel, "same_as": first_seen[sha]}
                if sha in owners and owners[sha] != name:
                    duplicate["kept_with"] = owners[sha]
                    log.warning("%s: the same photo is in %s's folder (%s); kept with %s, whose photos it matches",
                                data_dir / rel, owners[sha], first_seen[sha], owners[sha])
                report.duplicates.append(duplicate)
                continue
            first_seen[sha] = rel
            if result["faces"] > 1:
                report.several_faces.append({"path": rel, "faces": result["faces"]})
            distinct[sha] = rel
        distinct = _confirm_sensitive(distinct, results, vector, far, report)
        if not distinct:
            report.not_enrolled.append(name)
            log.warning("%s: no usable photo; %s is not enrolled", data_dir / name, name)
            continue
        vectors = np.stack([vector(sha) for sha in distinct])
        used.extend((rel, len(names), v) for rel, v in zip(distinct.values(), vectors, strict=True))
        names.append(name)
        centroids.append(normalize(vectors.mean(axis=0)))
        counts.append(len(distinct))
        report.people[name] = list(distinct.values())
    report.skipped.sort(key=lambda s: s["path"])
    dim = len(used[0][2]) if used else 0
    return names, np.stack(centroids) if centroids else np.zeros((0, dim), np.float32), counts, used


SENSITIVE_ONLY = "only the detector's sensitive pass found a face (it may not be a face)"


def _confirm_sensitive(
    distinct: dict[str, str], results: dict[str, dict[str, Any]], vector, far: float, report: EnrollmentReport
) -> dict[str, str]:
    """A person's photos (sha -> path) without those whose face only the sensitive detector pass found, unless that
    face lies within `far` (the verify threshold) of the centroid of the person's normally detected photos.

    A dog alone in a person's folder is a face to the sensitive pass; on 5,053 real photos (shared/faces people,
    lfw_dev, misc) YuNet's normal pass found a face in every one, so the rule costs no real face there.
    Each photo left out gets a "skipped" report line."""
    sure = [sha for sha in distinct if results[sha].get("how") != "sensitive"]
    if len(sure) == len(distinct):
        return distinct
    centre = normalize(np.mean([vector(sha) for sha in sure], axis=0)) if sure else None
    kept = {sha: distinct[sha] for sha in sure}
    for sha in (sha for sha in distinct if sha not in kept):
        distance = None if centre is None else float(np.linalg.norm(vector(sha) - centre))
        if distance is not None and distance <= far:
            kept[sha] = distinct[sha]
            continue
        why = ("no photo of this person found by the normal pass confirms it" if distance is None else
               f"{distance:.3f} from the person's other photos (more than {far:.3f})")
        report.skipped.append({"path": distinct[sha], "reason": f"{SENSITIVE_ONLY}; {why}"})
        log.warning("%s: skipped, %s; %s", distinct[sha], SENSITIVE_ONLY, why)
    return {sha: distinct[sha] for sha in distinct if sha in kept}


def _owners_of_shared_photos(
    by_person: dict[str, list[dict[str, Any]]], results: dict[str, dict[str, Any]], vector
) -> dict[str, str]:
    """Who keeps a usable photo found byte-identical in several people's folders: the person whose other photos'
    centroid is nearest to it (the first such folder when no one has other photos). Returns sha -> person."""
    holders: dict[str, list[str]] = {}
    for name, photos in by_person.items():
        for sha in dict.fromkeys(p["sha256"] for p in photos):
            if results[sha]["reason"] is None:
                holders.setdefault(sha, []).append(name)
    shared = {sha: names for sha, names in holders.items() if len(names) > 1}
    owners = {}
    for sha, names in shared.items():
        distances = []
        for name in names:
            others = {p["sha256"] for p in by_person[name]} - set(shared) - {sha}
            others = [o for o in others if results[o]["reason"] is None]
            centre = normalize(np.mean([vector(o) for o in others], axis=0)) if others else None
            distances.append(np.inf if centre is None else float(np.linalg.norm(vector(sha) - centre)))
        owners[sha] = names[int(np.argmin(distances))]
    return owners


def sync_database(
    data_dir: str | Path, database_dir: str | Path, pipeline: FacePipeline
) -> tuple[FaceDatabase, EnrollmentReport]:
    """Bring `database_dir` in line with the photos of `data_dir` (read only) and return the database and report.

    Unchanged photos are not recomputed; a database made by another model or weights, corrupt or of another
    version is rebuilt (so is one whose checksum no longer matches: changed names or vectors). A missing data_dir
    gives an empty database without touching the saved one. Progress is checkpointed every ENROLL_CHECKPOINT_PHOTOS
    examined photos, so a killed sync resumes. Failing to save is a warning and `report.save_error` (the file and
    why): the database is still returned.
    """
    embedder = pipeline.embedder
    data_dir, database_dir = Path(data_dir), Path(database_dir)
    path = database_dir / DATABASE_FILE
    report = EnrollmentReport(data_dir=str(data_dir), database=str(path), fingerprint=embedder.model_id)
    if not data_dir.is_dir():
        log.warning("%s: data folder not found; no one is enrolled (the saved database is kept)", data_dir)
        database = _empty_database(embedder)
        report.threshold = database.threshold
        return database, report

    for temp in remove_stale_temps(database_dir, DATABASE_FILES):
        log.info("%s: removed a temp file left by an interrupted run", temp)
    stored, report.rebuilt = _load_stored(path, embedder.model_id)
    resumed_results, resumed_vectors = _read_checkpoints(database_dir, embedder.model_id, embedder.dim)
    old_results = {**stored.manifest["results"], **resumed_results}
    layout = scan_data_folder(data_dir, skip=database_dir)
    people, loose = layout.people, layout.loose
    _report_unreadable_entries(data_dir, layout, report)
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
            return sha in stored.rows or sha in resumed_vectors
        # "no face" may change with another detector; an undecodable file will not
        return result["reason"] != NO_FACE or result["detector"] == pipeline.detector.kind

    pending: dict[str, Path] = {}
    for photo in photos:
        if not reusable(photo["sha256"]):
            pending.setdefault(photo["sha256"], data_dir / photo["path"])
    checkpoint = _Checkpoint(database_dir, embedder.model_id, embedder.dim)
    new_results, new_vectors = _examine_in_parts(pending, pipeline, checkpoint)
    report.examined, report.embedded = len(new_results), len(new_vectors)
    report.reused = len({p["sha256"] for p in photos} - set(pending))
    report.resumed = len(({p["sha256"] for p in photos} & set(resumed_results)) - set(pending))
    results = {sha: old_results[sha] for sha in {p["sha256"] for p in photos} if sha not in new_results}
    results.update(new_results)
    report.pruned = len(set(old_results) - set(results))

    def vector(sha: str) -> np.ndarray:
        if sha in new_vectors:
            return new_vectors[sha]
        return resumed_vectors[sha] if sha in resumed_vectors else stored.embeddings[stored.rows[sha]]

    scale = embedder.distance_scale
    far = calibration(embedder.name).verify_threshold * scale
    names, centroids, counts, used = _enroll_people(data_dir, people, photos, results, vector, report, far)
    names, centroids, counts = _quality(report, names, centroids, counts, used, far)
    database = FaceDatabase(names, centroids, embedder.model_id, counts, distance_scale=scale, model=embedder.name,
                            dim=embedder.dim)
    report.threshold = round(database.threshold, 4)
    _warn_if_emptied(stored.manifest, data_dir, names)

    embedded = sorted(sha for sha, result in results.items() if result["reason"] is None)
    manifest = {
        "format": DATABASE_FORMAT,
        "version": DATABASE_VERSION,
        "fingerprint": embedder.model_id,
        "model": embedder.name,
        "dim": embedder.dim,
        "distance_scale": scale,
        "data_dir": str(data_dir.resolve()),
        "photos": photos,
        "results": dict(sorted(results.items())),
        "embedded": embedded,
        "people": [{"name": n, "photos": k} for n, k in zip(names, counts, strict=True)],
    }
    previous = {key: value for key, value in stored.manifest.items() if key not in ("written", "checksum")}
    if report.rebuilt or previous != manifest or "checksum" not in stored.manifest:
        embeddings = np.stack([vector(sha) for sha in embedded]) if embedded else np.zeros((0, embedder.dim))
        written = {**manifest, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            _write_database(path, written, embeddings, centroids)
            report.saved = True
        except OSError as error:
            report.save_error = f"{path}: could not save the database ({error.strerror or error})"
            log.warning("%s; using it in memory this time", report.save_error)
    if report.save_error is None:
        _clear_checkpoints(database_dir)
    problem = _write_report(database_dir, report)
    if problem:
        report.save_error = report.save_error or problem
        log.warning("%s", problem)
    return database, report


def _examine_in_parts(pending: dict[str, Path], pipeline: FacePipeline, checkpoint: _Checkpoint
                      ) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """`examine_photos`, ENROLL_CHECKPOINT_PHOTOS photos at a time, each part checkpointed as soon as it is done."""
    results: dict[str, dict[str, Any]] = {}
    vectors: dict[str, np.ndarray] = {}
    items = list(pending.items())
    bar = progress_bar(total=len(items), desc="enrolling", unit="photo") if items else None
    for start in range(0, len(items), ENROLL_CHECKPOINT_PHOTOS):
        part = dict(items[start : start + ENROLL_CHECKPOINT_PHOTOS])
        found, embedded = examine_photos(part, pipeline, desc=None)
        checkpoint.save(found, embedded)
        results.update(found)
        vectors.update(embedded)
        bar.update(len(part))
    if bar is not None:
        bar.close()
    return results, vectors


def _report_unreadable_entries(data_dir: Path, layout: DataLayout, report: EnrollmentReport) -> None:
    """Each entry of data/ that was skipped while listing it (hidden folder, not UTF-8, link loop, FIFO...): one
    report line and one warning naming it (bytes that are not UTF-8 escaped)."""
    for path, reason in layout.skipped:
        report.skipped.append({"path": display_path(path.relative_to(data_dir).as_posix()), "reason": reason})
        log.warning("%s: skipped, %s", display_path(path), reason)


def _empty_database(embedder) -> FaceDatabase:
    return FaceDatabase([], np.zeros((0, embedder.dim)), embedder.model_id, model=embedder.name, dim=embedder.dim)


def _warn_if_emptied(previous: dict[str, Any], data_dir: Path, names: list[str]) -> None:
    """A loud warning when a database built from another folder is about to lose everyone."""
    before, built_from = previous.get("people", []), previous.get("data_dir")
    if before and not names and built_from and built_from != str(data_dir.resolve()):
        log.warning("the database held %d people enrolled from %s; %s has nobody, so it is now EMPTY. "
                    "Run with --data_dir %s to enroll them again.", len(before), built_from, data_dir, built_from)


# --------------------------------------------------------------------------- PostgreSQL + pgvector galleries


def sync_postgres(
    data_dir: str | Path, url: str, pipeline: FacePipeline, rebuild: bool = False
) -> tuple[FaceDatabase, dict[str, Any]]:
    """Enroll the people of `data_dir` into the shared PostgreSQL gallery at `url` (only THIS folder's people are
    added, updated or pruned; others' are never touched) and return the whole gallery and the sync's report.

    `rebuild` drops a gallery made by another model (else `pg_gallery.GalleryError`). Photos are detected and
    embedded by the same pipeline and face choice as the file backend.
    """
    from facenet.pg_gallery import PgGallery, folder_photos

    data_dir = Path(data_dir)
    layout = scan_data_folder(data_dir)
    people, loose = layout.people, layout.loose
    for path, reason in layout.skipped:
        log.warning("%s: skipped, %s", display_path(path), reason)
    if loose:
        log.warning("%s: %d photo(s) directly in the data folder ignored", data_dir, len(loose))

    def examine(pending: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
        return examine_photos({sha: data_dir / rel for sha, rel in pending.items()}, pipeline)

    def retry(result: dict[str, Any]) -> bool:  # "no face" may change with another detector
        return result.get("reason") == NO_FACE and result.get("detector") != pipeline.detector.kind

    with PgGallery(url) as gallery:
        report = gallery.sync(folder_photos(data_dir, people, file_sha256), examine, pipeline.model_id,
                              pipeline.embedder.dim, rebuild=rebuild, retry=retry)
        database = _from_postgres(gallery, pipeline)
    return database, report


def load_postgres(url: str, pipeline: FacePipeline) -> FaceDatabase:
    """The shared gallery at `url` for reading only (a recognition client never prunes or writes)."""
    from facenet.pg_gallery import PgGallery

    with PgGallery(url) as gallery:
        return _from_postgres(gallery, pipeline)


def _from_postgres(gallery, pipeline: FacePipeline) -> FaceDatabase:
    names, centroids, counts = gallery.load(pipeline.model_id, pipeline.embedder.dim)
    embedder = pipeline.embedder
    return FaceDatabase(names, centroids, embedder.model_id, counts, distance_scale=embedder.distance_scale,
                        model=embedder.name, dim=embedder.dim)
