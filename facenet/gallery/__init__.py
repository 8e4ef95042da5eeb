"""Galleries: the people enrolled from a data folder, behind one `Gallery` protocol with two backends, a folder of
files (`file.FileGallery`, the default) and PostgreSQL + pgvector (`pg.PgGallery`, shared by several machines).
Both enroll through one core (`enroll`), report alike (`report`), and give the same lookup index (`index`, over
`search`) with the same thresholds (`thresholds`): one data folder gives the same people, centroids and names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from facenet.gallery.file import FileGallery
from facenet.gallery.index import FaceDatabase
from facenet.gallery.pg import PgGallery
from facenet.gallery.report import EnrollmentReport, SharedSync

if TYPE_CHECKING:
    from facenet.pipeline import FacePipeline
    from facenet.unknowns.store import Retention, UnknownStore

__all__ = ["EnrollmentReport", "FaceDatabase", "FileGallery", "Gallery", "GalleryOptions", "PgGallery", "SharedSync",
           "is_url", "open_gallery"]


class Gallery(Protocol):
    """Where enrolled people live: synced with a data folder, loaded as a lookup index, closed when done."""

    where: str
    """The file or (password-free) address of the gallery, for messages."""

    def sync(self, data_dir: str | Path, pipeline: FacePipeline) -> EnrollmentReport:
        """Make the gallery's people of `data_dir` follow its photos; the report of what it did."""
        ...

    def load(self, pipeline: FacePipeline) -> FaceDatabase:
        """The enrolled people as the lookup index for `pipeline` (read only)."""
        ...

    def unknowns(self, retention: Retention | None = None) -> UnknownStore:
        """The store of unknown faces that lives with this gallery (facenet.unknowns)."""
        ...

    def remove_person(self, name: str) -> bool:
        """Drop a person whose folder is gone before the next sync (a shared gallery keeps them otherwise); whether
        anyone was removed."""
        ...

    def close(self) -> None:
        """Release the connection, if any."""
        ...

    def __enter__(self) -> Gallery: ...

    def __exit__(self, *exc: object) -> None: ...


def is_url(target: str | Path) -> bool:
    """Whether a gallery location is a PostgreSQL address (URL or key=value conninfo) rather than a folder."""
    text = str(target).strip()
    return text.startswith(("postgresql://", "postgres://")) or (
        "=" in text and any(text.startswith(key) for key in ("host=", "dbname=", "user=", "port=", "service=")))


@dataclass(frozen=True)
class GalleryOptions:
    """Where a gallery lives, as the command line, the service and the API name it."""

    database_dir: Path = Path("database")
    """The file gallery's folder (faces.npz, the enrollment report); with `database_url`, the local folder that
    keeps the shared gallery's photo-hash cache (photo_hashes.json)."""
    database_url: str | None = None
    """A PostgreSQL URL or conninfo: the gallery shared by several machines, instead of the folder's."""
    rebuild: bool = False
    """Let a sync drop a shared gallery made by another model (its every site's people) to enroll with this one;
    without it that sync is refused (GalleryError)."""

    @classmethod
    def at(cls, location: str | Path, cache_dir: str | Path) -> GalleryOptions:
        """The gallery at `location`: a PostgreSQL URL or conninfo (`is_url`; its hash cache in `cache_dir`), else
        the folder of a file gallery."""
        if is_url(location):
            return cls(database_dir=Path(cache_dir), database_url=str(location))
        return cls(database_dir=Path(location))


def open_gallery(options: GalleryOptions) -> FileGallery | PgGallery:
    """THE way to open a gallery: a PgGallery when `options.database_url` is set (GalleryError when unreachable),
    else the FileGallery of `options.database_dir`."""
    if options.database_url:
        return PgGallery(options.database_url, cache_dir=options.database_dir, rebuild=options.rebuild)
    return FileGallery(options.database_dir)
