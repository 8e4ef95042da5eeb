"""The file gallery: one folder holding the enrollment database (data/<person>/ photos -> embeddings and centroids).

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

The file also keeps the per-photo results and vectors of the last few OTHER models it was synced with
(`other_models`, most recent first, at most KEPT_MODELS in all, each with a checksum of its vectors that the
manifest's own checksum covers), so that switching models back and forth (`--pretrained` and a gallery's
fine-tuned weights) embeds each photo once per model, not once per switch. A damaged section is dropped alone.

"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facenet.files import atomic_write, remove_stale_temps
from facenet.gallery.enroll import Vector, enroll, examine_photos, hash_photos, read_folder, reusable
from facenet.gallery.index import FaceDatabase
from facenet.gallery.report import EnrollmentReport
from facenet.gallery.thresholds import verify_threshold
from facenet.progress import progress_bar
from facenet.unknowns.file_store import FileUnknowns

if TYPE_CHECKING:
    from facenet.pipeline import FacePipeline
    from facenet.unknowns.store import Retention

log = logging.getLogger(__name__)

DATABASE_FILE = "faces.npz"
"""The database: one .npz file (no pickle) holding the embeddings, the centroids and a JSON manifest."""

DATABASE_FORMAT = "facenet-face-database"
DATABASE_VERSION = 2
"""Bumped when the layout changes: an older or newer file is rebuilt, never misread."""

ENROLLMENT_REPORT = "enrollment_report"
"""Stem of the report written beside the database (.json for programs, .txt for people)."""

ENROLL_CHECKPOINT_PHOTOS = 32
"""Enrollment saves its progress every this many newly examined photos (a small checkpoint part beside the
database), so a killed enrollment of thousands of photos resumes instead of starting over."""

KEPT_MODELS = 3
"""Models whose photo vectors the database file keeps (the one in use and the most recently used others): a model
switch back to one of them embeds nothing; the least recently used beyond that is dropped."""

OTHER_ARRAYS = "other_embeddings_{}"
"""Name of the array of the i-th other model's photo vectors in the database file."""

CHECKPOINT_PARTS = "faces.checkpoint.*.npz"
"""Names of those checkpoint parts (removed once the database itself is saved)."""


# --------------------------------------------------------------------------- storage


class _Section:
    """One other model's per-photo results and vectors, kept so that switching back to it embeds nothing."""

    def __init__(self, model_id: str, model: str, dim: int, results: dict[str, dict[str, Any]],
                 embedded: list[str], embeddings: np.ndarray) -> None:
        self.model_id, self.model, self.dim = model_id, model, dim
        self.results, self.embedded, self.embeddings = results, embedded, embeddings

    def entry(self, shas: set[str]) -> tuple[dict[str, Any], np.ndarray]:
        """Its manifest entry and vectors, limited to the photos `shas` still in the data folder (a photo that
        left is no one's business any more, whatever the model)."""
        rows = {sha: i for i, sha in enumerate(self.embedded)}
        embedded = [sha for sha in self.embedded if sha in shas]
        vectors = self.embeddings[[rows[sha] for sha in embedded]].reshape(-1, self.dim)
        entry = {"fingerprint": self.model_id, "model": self.model, "dim": self.dim,
                 "results": {sha: r for sha, r in sorted(self.results.items()) if sha in shas}, "embedded": embedded}
        return {**entry, "checksum": _checksum(entry, vectors)}, vectors


class _Stored:
    """The database as read from disk: manifest + per-photo embeddings (rows match manifest["embedded"]), and the
    other models' sections, most recent first."""

    def __init__(self, manifest: dict[str, Any], embeddings: np.ndarray, others: list[_Section] | None = None
                 ) -> None:
        self.manifest = manifest
        self.rows = {sha: i for i, sha in enumerate(manifest["embedded"])}
        self.embeddings = embeddings
        self.others = others or []

    @classmethod
    def empty(cls) -> _Stored:
        return cls({"photos": [], "results": {}, "embedded": [], "people": []}, np.zeros((0, 0), np.float32))

    def section(self) -> _Section | None:
        """The stored model's own results and vectors as a section (None when nothing is stored)."""
        if "fingerprint" not in self.manifest:
            return None
        m = self.manifest
        return _Section(m["fingerprint"], m["model"], m["dim"], m["results"], m["embedded"], self.embeddings)

    def switched_to(self, model_id: str) -> _Stored:
        """What the file holds for `model_id`: its kept section as the stored database (the folder's photo hashes
        shared), the model stored until now joining the others; empty results when no section is kept for it."""
        current = self.section()
        kept = next((o for o in self.others if o.model_id == model_id), None)
        others = [o for o in [current, *self.others] if o is not None and o is not kept]
        manifest = {key: value for key, value in self.manifest.items() if key != "other_models"}
        if kept is None:
            manifest = {**manifest, "results": {}, "embedded": []}
            manifest.pop("fingerprint", None)
            return _Stored(manifest, np.zeros((0, 0), np.float32), others)
        manifest = {**manifest, "fingerprint": kept.model_id, "model": kept.model, "dim": kept.dim,
                    "results": kept.results, "embedded": kept.embedded}
        return _Stored(manifest, kept.embeddings, others)


def _read(path: Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray, list[_Section]]:
    """Manifest, photo embeddings, centroids and other models' sections of a database file; ValueError when anything
    is off (a damaged other section is only left out, with a warning)."""
    with np.load(path, allow_pickle=False) as data:
        manifest = json.loads(data["manifest"].tobytes().decode("utf-8"))
        embeddings = data["embeddings"].astype(np.float32)
        centroids = data["centroids"].astype(np.float32)
        others = {key: data[key].astype(np.float32) for key in data.files if key.startswith(OTHER_ARRAYS[:-2])}
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
    return manifest, embeddings, centroids, _sections(path, manifest, others)


def _sections(path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> list[_Section]:
    """The other models' sections of a database file that check out; each damaged one is left out with a warning
    (its photos are embedded again when that model comes back)."""
    sections = []
    for i, entry in enumerate(manifest.get("other_models", [])):
        try:
            vectors = arrays[OTHER_ARRAYS.format(i)]
            if vectors.shape != (len(entry["embedded"]), entry["dim"]) or not np.isfinite(vectors).all():
                raise ValueError(f"{len(entry['embedded'])} vectors listed, {vectors.shape} stored")
            if entry["checksum"] != _checksum(entry, vectors):
                raise ValueError("checksum mismatch")
            if any(entry["results"][sha].get("reason") is not None for sha in entry["embedded"]):
                raise ValueError("a vector for a photo without a face")
            sections.append(_Section(entry["fingerprint"], entry["model"], entry["dim"], entry["results"],
                                     entry["embedded"], vectors))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            log.warning("%s: the kept vectors of model %s are unusable (%s); dropped", path,
                        entry.get("fingerprint") if isinstance(entry, dict) else "?", error)
    return sections


def read_database(database_dir: str | Path, model_id: str | None = None) -> FaceDatabase | None:
    """The saved database as it is (no sync); None, logged, when missing, unreadable or (with `model_id`) made by
    another model."""
    path = Path(database_dir) / DATABASE_FILE
    try:
        manifest, _, centroids, _ = _read(path)
    except FileNotFoundError:
        log.warning("%s: no database yet", path)
        return None
    except Exception as error:  # noqa: BLE001 - any unreadable file is reported, never a crash
        log.warning("%s: unreadable database (%s)", path, error)
        return None
    if model_id is not None and manifest["fingerprint"] != model_id:
        log.warning("%s: made by other weights (%s, not %s)", path, manifest["fingerprint"], model_id)
        return None
    people = manifest["people"]
    return FaceDatabase([p["name"] for p in people], centroids, manifest["fingerprint"], [p["photos"] for p in people],
                        distance_scale=float(manifest.get("distance_scale", 1.0)), model=manifest["model"],
                        dim=manifest["dim"])


def _load_stored(path: Path, model_id: str) -> tuple[_Stored, str | None]:
    """The stored database to reuse (for another model: the vectors kept for `model_id`, if any), or an empty one
    and why it was discarded."""
    if not path.exists():
        log.info("%s: no database yet; creating it", path)
        return _Stored.empty(), "no database yet"
    try:
        manifest, embeddings, _, others = _read(path)
    except Exception as error:  # noqa: BLE001 - corrupt, truncated, foreign or old: rebuild
        log.warning("%s: unreadable database (%s); rebuilding it", path, error)
        return _Stored.empty(), f"unreadable ({error})"
    stored = _Stored(manifest, embeddings, others)
    if manifest["fingerprint"] == model_id:  # the key keeps its 0.2 name; it holds the model id
        return stored, None
    switched = stored.switched_to(model_id)
    if "fingerprint" in switched.manifest:
        log.info("%s: made by other weights (%s); using the vectors kept for %s", path, manifest["fingerprint"],
                 model_id)
        return switched, None
    log.info("%s: made by other weights (%s); rebuilding it for %s (the vectors of %s are kept)", path,
             manifest["fingerprint"], model_id, manifest["fingerprint"])
    return switched, f"made by other weights ({manifest['fingerprint']}, now {model_id})"


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


def _write_npz(path: Path, manifest: dict[str, Any], covered: dict[str, np.ndarray] | None = None,
               **arrays: np.ndarray) -> None:
    """A manifest (JSON, with the checksum of itself and the arrays) and float32 arrays as one .npz, atomically.
    `covered`: more arrays, whose own checksums the manifest holds (so its checksum covers them too)."""
    arrays = {key: np.asarray(value, np.float32) for key, value in arrays.items()}
    manifest = {**manifest, "checksum": _checksum(manifest, *arrays.values())}
    extra = {key: np.asarray(value, np.float32) for key, value in (covered or {}).items()}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, manifest=np.frombuffer(json.dumps(manifest, ensure_ascii=False).encode("utf-8"),
                                                    np.uint8), **arrays, **extra)

    atomic_write(path, write)


def _write_database(path: Path, manifest: dict[str, Any], embeddings: np.ndarray, centroids: np.ndarray,
                    others: dict[str, np.ndarray]) -> None:
    dim = manifest["dim"]
    _write_npz(path, manifest, others, embeddings=np.asarray(embeddings, np.float32).reshape(-1, dim),
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


class _Known:
    """What earlier syncs left: the stored database and the checkpoints of an interrupted one."""

    def __init__(self, path: Path, database_dir: Path, model_id: str, dim: int, report: EnrollmentReport) -> None:
        self.stored, report.rebuilt = _load_stored(path, model_id)
        self.resumed_results, self.resumed_vectors = _read_checkpoints(database_dir, model_id, dim)
        self.results = {**self.stored.manifest["results"], **self.resumed_results}

    def stands(self, sha: str, detector: str) -> bool:
        """Whether a photo's earlier result can be reused (an embedded photo needs its vector too)."""
        result = self.results.get(sha)
        if result is not None and result["reason"] is None:
            return sha in self.stored.rows or sha in self.resumed_vectors
        return reusable(result, detector)

    def vector(self, sha: str) -> np.ndarray:
        if sha in self.resumed_vectors:
            return self.resumed_vectors[sha]
        return self.stored.embeddings[self.stored.rows[sha]]


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
        report.set_thresholds(database)
        return database, report
    for temp in remove_stale_temps(database_dir, DATABASE_FILES):
        log.info("%s: removed a temp file left by an interrupted run", temp)
    known = _Known(path, database_dir, embedder.model_id, embedder.dim, report)
    people = read_folder(data_dir, report, skip=database_dir)
    photos = hash_photos(data_dir, people, {p["path"]: p for p in known.stored.manifest["photos"]}, report)
    results, vector = _examine_new(data_dir, database_dir, photos, known, pipeline, report)
    names, centroids, counts = enroll(data_dir, [name for name, _ in people], photos, results, vector, report,
                                      verify_threshold(pipeline))
    database = FaceDatabase(names, centroids, embedder.model_id, counts, distance_scale=embedder.distance_scale,
                            model=embedder.name, dim=embedder.dim)
    report.set_thresholds(database)
    _warn_if_emptied(known.stored.manifest, data_dir, names)
    _save(database_dir, database, centroids, data_dir, photos, results, vector, known.stored, report)
    return database, report


def _examine_new(data_dir: Path, database_dir: Path, photos: list[dict[str, Any]], known: _Known,
                 pipeline: FacePipeline, report: EnrollmentReport) -> tuple[dict[str, dict[str, Any]], Vector]:
    """Examine the photos without a reusable result (checkpointed in parts); every photo's result and a vector
    lookup; the report's examined, embedded, reused, resumed and pruned counts."""
    embedder = pipeline.embedder
    pending: dict[str, Path] = {}
    for photo in photos:
        if not known.stands(photo["sha256"], pipeline.detector.kind):
            pending.setdefault(photo["sha256"], data_dir / photo["path"])
    checkpoint = _Checkpoint(database_dir, embedder.model_id, embedder.dim)
    new_results, new_vectors = _examine_in_parts(pending, pipeline, checkpoint)
    shas = {p["sha256"] for p in photos}
    report.examined, report.embedded = len(new_results), len(new_vectors)
    report.reused = len(shas - set(pending))
    report.resumed = len((shas & set(known.resumed_results)) - set(pending))
    results = {sha: known.results[sha] for sha in shas if sha not in new_results}
    results.update(new_results)
    report.pruned = len(set(known.results) - set(results))

    def vector(sha: str) -> np.ndarray:
        return new_vectors[sha] if sha in new_vectors else known.vector(sha)

    return results, vector


def _save(database_dir: Path, database: FaceDatabase, centroids: np.ndarray, data_dir: Path,
          photos: list[dict[str, Any]], results: dict[str, dict[str, Any]], vector: Vector, stored: _Stored,
          report: EnrollmentReport) -> None:
    """Write the database when anything changed (atomically), then the report; failures go to report.save_error.
    `centroids`: the float32 ones (a big `database` holds them in float16)."""
    path = database_dir / DATABASE_FILE
    embedded = sorted(sha for sha, result in results.items() if result["reason"] is None)
    manifest = {
        "format": DATABASE_FORMAT,
        "version": DATABASE_VERSION,
        "fingerprint": database.model_id,  # the key keeps its 0.2 name; it holds the model id
        "model": database.model,
        "dim": database.dim,
        "distance_scale": database.distance_scale,
        "data_dir": str(data_dir.resolve()),
        "photos": photos,
        "results": dict(sorted(results.items())),
        "embedded": embedded,
        "people": [{"name": n, "photos": int(k)} for n, k in zip(database.names, database.photo_counts,
                                                                 strict=True)],
    }
    others = _other_models(stored, database.model_id, {photo["sha256"] for photo in photos})
    if others:
        manifest["other_models"] = [entry for entry, _ in others]
    previous = {key: value for key, value in stored.manifest.items() if key not in ("written", "checksum")}
    if report.rebuilt or previous != manifest or "checksum" not in stored.manifest:
        embeddings = np.stack([vector(sha) for sha in embedded]) if embedded else np.zeros((0, database.dim))
        written = {**manifest, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        arrays = {OTHER_ARRAYS.format(i): vectors for i, (_, vectors) in enumerate(others)}
        try:
            _write_database(path, written, embeddings, centroids, arrays)
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


def _other_models(stored: _Stored, model_id: str, shas: set[str]) -> list[tuple[dict[str, Any], np.ndarray]]:
    """The manifest entries and vectors of the other models to keep beside `model_id`'s: the most recently used,
    KEPT_MODELS in all, each limited to the photos still in the data folder."""
    others = [o for o in stored.others if o.model_id != model_id][: KEPT_MODELS - 1]
    return [section.entry(shas) for section in others]


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


def _empty_database(embedder) -> FaceDatabase:
    return FaceDatabase([], np.zeros((0, embedder.dim)), embedder.model_id, model=embedder.name, dim=embedder.dim)


def _warn_if_emptied(previous: dict[str, Any], data_dir: Path, names: list[str]) -> None:
    """A loud warning when a database built from another folder is about to lose everyone."""
    before, built_from = previous.get("people", []), previous.get("data_dir")
    if before and not names and built_from and built_from != str(data_dir.resolve()):
        log.warning("the database held %d people enrolled from %s; %s has nobody, so it is now EMPTY. "
                    "Run with --data_dir %s to enroll them again.", len(before), built_from, data_dir, built_from)




class FileGallery:
    """The `Gallery` of one folder (`faces.npz` + the enrollment report): private to this machine."""

    def __init__(self, database_dir: str | Path) -> None:
        self.database_dir = Path(database_dir)
        self.where = str(self.database_dir / DATABASE_FILE)
        self._synced: FaceDatabase | None = None

    def sync(self, data_dir: str | Path, pipeline: FacePipeline) -> EnrollmentReport:
        """Make the folder follow `data_dir` (see `sync_database`); the report of what it did."""
        self._synced, report = sync_database(data_dir, self.database_dir, pipeline)
        return report

    def load(self, pipeline: FacePipeline) -> FaceDatabase:
        """The lookup index for `pipeline`: the last sync's, else the saved one (empty when missing, unreadable or
        made by another model: a sync rebuilds it)."""
        if self._synced is not None and self._synced.model_id == pipeline.model_id:
            database = self._synced
        else:
            database = read_database(self.database_dir, pipeline.model_id) or _empty_database(pipeline.embedder)
        database.negatives = self.unknowns().negatives(pipeline.model_id)
        return database

    def remove_person(self, name: str) -> bool:
        """Nothing to do (False): the next sync drops everyone whose folder left the data folder."""
        return False

    def unknowns(self, retention: Retention | None = None) -> FileUnknowns:
        """The store of unknown faces kept beside this gallery (`database_dir/unknowns/`)."""
        return FileUnknowns(self.database_dir, retention)

    def close(self) -> None:
        """Nothing to release: every write is already complete on disk."""

    def __enter__(self) -> FileGallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
