"""What one sync of a gallery with a data folder did and found: the same report for every backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facenet.gallery.thresholds import GALLERY_FAR
from facenet.text import one_line

if TYPE_CHECKING:
    from facenet.gallery.index import FaceDatabase


@dataclass(frozen=True)
class SharedSync:
    """One sync of a shared PostgreSQL gallery: the facts only that backend knows (the keys `--enroll --json`
    prints). `people` and `photos` count THIS folder's; `gallery_people` the whole gallery's enrolled people."""

    gallery: str
    """The password-free address of the gallery."""
    model_id: str
    people: int
    photos: int
    examined: int
    embedded: int
    reused: int
    pruned: int
    skipped: list[dict[str, str]]
    not_enrolled: list[str]
    index: str | None
    """"ivfflat", "ivfflat (built)", "ivfflat (rebuilt)", "hnsw" or None (an exact scan)."""
    examine_s: float
    touched: int
    """People rows whose centroid or photo count changed."""
    write_s: float
    index_s: float
    seconds: float
    gallery_people: int


@dataclass
class EnrollmentReport:
    """What one sync did and found; paths are relative to data_dir."""

    data_dir: str
    database: str
    fingerprint: str = ""
    """The model id (`<model>:<weights fingerprint>`) that embedded the photos (the key keeps its 0.2 name)."""
    threshold: float = float("nan")
    """The default threshold of a person with the gallery's median photo count."""
    thresholds_by_photos: dict[str, float] = field(default_factory=dict)
    """{photo count: default threshold} for the fewest and the most photos anyone has, when they differ: each person's
    threshold follows their own photo count (a 1-photo person's is looser than a 5-photo person's)."""
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
    shared: SharedSync | None = None
    """What only a shared PostgreSQL gallery knows about this sync (None for a file gallery)."""

    def set_thresholds(self, database: FaceDatabase) -> None:
        """The default threshold and its extremes by photo count, from the gallery just enrolled."""
        self.threshold = round(database.threshold, 4)
        counts = database.photo_counts
        if len(counts) and counts.min() != counts.max():
            self.thresholds_by_photos = {str(int(counts[i])): round(float(database.thresholds[i]), 4)
                                         for i in (int(counts.argmin()), int(counts.argmax()))}

    def _threshold_text(self) -> str:
        """"0.623", or by photo count: "0.623 for people with 2 photos to 0.610 with 4"."""
        if not self.thresholds_by_photos:
            return f"{self.threshold:.3f}"
        (few, loose), (many, tight) = self.thresholds_by_photos.items()
        return f"{loose:.3f} for people with {few} photo{'s' if few != '1' else ''} to {tight:.3f} with {many}"

    def to_dict(self) -> dict[str, Any]:
        """The report every backend gives, as JSON (what enrollment_report.json holds)."""
        return {key: value for key, value in asdict(self).items() if key != "shared"}

    def to_json(self) -> dict[str, Any]:
        """The sync as the commands and the service show it: a file gallery's report; for a shared gallery its
        facts under the keys `--enroll --json` always printed, plus "enrollment", the report every backend gives."""
        if self.shared is None:
            return self.to_dict()
        return {**asdict(self.shared), "enrollment": self.to_dict()}

    def to_text(self) -> str:
        used = sum(len(paths) for paths in self.people.values())
        excluded = sum(1 for m in self.mislabeled if m.get("excluded"))
        files = used + len(self.skipped) + len(self.duplicates) + excluded
        lines = [
            f"Enrollment: {len(self.people)} people, {used} of {files} photos used ({len(self.skipped)} skipped, "
            f"{len(self.duplicates)} duplicates, {excluded} left out as likely mislabeled); {self.examined} photos "
            f"examined now, {self.reused} reused, {self.pruned} pruned -> {self.database}",
            f"Default threshold {self._threshold_text()} (at most {GALLERY_FAR:.0%} of strangers named)",
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
        return "\n".join(one_line(line) for line in lines)  # a newline in a folder name cannot make a fake line
