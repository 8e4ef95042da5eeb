"""The enrollment core every gallery backend shares, so that the same data folder gives the same people,
centroids, report and names whatever stores them: hashing photos (cached by size + mtime), examining new ones
(detect + embed, the largest face), the retry rule, duplicates (a photo in two people's folders stays with the one
it matches), the sensitive-pass confirmation, leaving likely-mislabeled photos out, and the one centroid rule."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facenet.files import file_sha256
from facenet.gallery.report import EnrollmentReport
from facenet.images import display_path, scan_data_folder
from facenet.models.vectors import normalize, unit_distance

if TYPE_CHECKING:
    from facenet.pipeline import FacePipeline

log = logging.getLogger(__name__)

NO_FACE = "no face"

ENROLL_CHUNK = 256
"""Enrollment chips embedded per batch: bounds memory when thousands of photos are new."""

Vector = Callable[[str], np.ndarray]
"""sha256 of a usable photo -> its embedding."""


def centroid(vectors: np.ndarray) -> np.ndarray:
    """The one centroid rule: the normalised mean of a person's distinct usable photo vectors."""
    return normalize(np.asarray(vectors, np.float32).mean(axis=0))


def reusable(result: dict[str, Any] | None, detector: str) -> bool:
    """Whether a stored result stands: a failure to find a face is retried with another detector (it may find
    one); an embedded photo or an undecodable file is final."""
    if result is None:
        return False
    return result["reason"] != NO_FACE or result.get("detector") == detector


def read_folder(data_dir: Path, report: EnrollmentReport, skip: Path | None = None) -> list[tuple[str, list[Path]]]:
    """The people of a data folder and their photo files; each entry skipped while listing it (hidden folder, not
    UTF-8, link loop, FIFO...) and each photo lying directly in it get a report line and a warning."""
    layout = scan_data_folder(data_dir, skip=skip)
    for path, reason in layout.skipped:
        report.skipped.append({"path": display_path(path.relative_to(data_dir).as_posix()), "reason": reason})
        log.warning("%s: skipped, %s", display_path(path), reason)
    if layout.loose:
        report.ignored = [p.name for p in layout.loose]
        log.warning("%s: %d photo(s) directly in the data folder ignored; put them in %s/<person name>/",
                    data_dir, len(layout.loose), data_dir)
    return layout.people


def enroll(
    data_dir: Path,
    people: Sequence[str],
    photos: list[dict[str, Any]],
    results: dict[str, dict[str, Any]],
    vector: Vector,
    report: EnrollmentReport,
    far: float,
) -> tuple[list[str], np.ndarray, list[int]]:
    """Names, centroids and photo counts of the people of one folder (`photos`: {"path", "person", "sha256"} in
    folder order; `results` by sha256), filling the report's people, skipped, duplicates, several-faces,
    far-from-own and mislabeled sections. `far`: the verify threshold (photos farther from their person's others
    are reported; a face only the sensitive pass found must lie within it)."""
    names, centroids, counts, used = _enroll_people(data_dir, list(people), photos, results, vector, report, far)
    return leave_out_mislabeled(report, names, centroids, counts, used, far)


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


def nearest_other(vectors: np.ndarray, person: np.ndarray, centroids: np.ndarray, wanted: np.ndarray,
                  chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(index, distance) of each wanted photo's nearest centroid other than its own person's (`person`: its row of
    `centroids`, -1 when it has none; photos not wanted: 0, 2.0), in chunks: a folder of 100k one-photo people must
    not make a 100k x 100k matrix (one-photo people are never checked)."""
    nearest, other = np.zeros(len(vectors), int), np.full(len(vectors), 2.0)
    rows = np.flatnonzero(wanted)
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        similarity = vectors[part] @ centroids.T
        owned = np.flatnonzero(person[part] >= 0)
        similarity[owned, person[part][owned]] = -np.inf
        nearest[part] = similarity.argmax(axis=1)
        other[part] = unit_distance(similarity[np.arange(len(part)), nearest[part]])
    return nearest, other


def leave_out_mislabeled(
    report: EnrollmentReport,
    names: list[str],
    centroids: np.ndarray,
    counts: list[int],
    used: list[tuple[str, int, np.ndarray]],
    far: float,
) -> tuple[list[str], np.ndarray, list[int]]:
    """Flag photos nearer another person than their own (leave-one-out centroid: likely mislabeled) or farther than
    `far` from their person's other photos; mislabeled photos leave their person's centroid (as docs/recognition.md
    promises).

    Returns names, centroids and photo counts without the mislabeled photos.
    """
    if not used:
        return names, centroids, counts
    person = np.array([p for _, p, _ in used])
    vectors = np.stack([v for _, _, v in used]).astype(np.float32)
    sums = np.zeros((len(names), vectors.shape[1]), np.float64)
    np.add.at(sums, person, vectors)
    own = np.linalg.norm(vectors - normalize(sums[person] - vectors), axis=1)
    nearest, other = nearest_other(vectors, person, centroids, np.asarray(counts)[person] >= 2)
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
            centroids[p] = centroid(vectors[mine])
            counts[p] = int(mine.sum())
            report.people[names[p]] = [used[i][0] for i in np.flatnonzero(mine)]
        else:  # a person whose every photo looks mislabeled keeps them all
            for entry in report.mislabeled:
                if entry["person"] == names[p]:
                    entry["excluded"] = False
    return names, centroids, counts


def hash_photos(
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
    people: list[str],
    photos: list[dict[str, Any]],
    results: dict[str, dict[str, Any]],
    vector,
    report: EnrollmentReport,
    far: float,
) -> tuple[list[str], np.ndarray, list[int], list[tuple[str, int, np.ndarray]]]:
    """Names, centroids (normalised mean of each person's distinct usable photos), photo counts, and the
    (path, person index, embedding) of every photo used; fills the report's per-person sections.

    A byte-identical copy of a photo already seen (in any person's folder) is listed as a duplicate and counts once.
    """
    names, centroids, counts, used = [], [], [], []
    by_person: dict[str, list[dict[str, Any]]] = {name: [] for name in people}
    for photo in photos:
        by_person[photo["person"]].append(photo)
    owners = _owners_of_shared_photos(by_person, results, vector)
    first_seen: dict[str, str] = {}
    for photo in (p for name in people for p in by_person[name] if owners.get(p["sha256"]) == name):
        first_seen.setdefault(photo["sha256"], photo["path"])  # a photo in several people's folders: its owner's
    for name in people:
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
            if result.get("faces", 1) > 1:
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
        centroids.append(centroid(vectors))
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
    centre = centroid(np.stack([vector(sha) for sha in sure])) if sure else None
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
            centre = centroid(np.stack([vector(o) for o in others])) if others else None
            distances.append(np.inf if centre is None else float(np.linalg.norm(vector(sha) - centre)))
        owners[sha] = names[int(np.argmin(distances))]
    return owners
