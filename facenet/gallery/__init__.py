"""Galleries: the people enrolled from a data folder, behind one `Gallery` protocol with two backends, a folder of
files (`file.FileGallery`, the default) and PostgreSQL + pgvector (`pg.PgGallery`, shared by several machines).
Both enroll through one core (`enroll`), report alike (`report`), and give the same lookup index (`index`, over
`search`) with the same thresholds (`thresholds`): one data folder gives the same people, centroids and names."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from facenet.gallery.file import FileGallery
from facenet.gallery.index import FaceDatabase
from facenet.gallery.pg import PgGallery
from facenet.gallery.report import EnrollmentReport

if TYPE_CHECKING:
    from facenet.pipeline import FacePipeline

__all__ = ["EnrollmentReport", "FaceDatabase", "FileGallery", "Gallery", "PgGallery", "is_url", "open_gallery"]


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

    def close(self) -> None:
        """Release the connection, if any."""
        ...


def is_url(target: str | Path) -> bool:
    """Whether a gallery location is a PostgreSQL address (URL or key=value conninfo) rather than a folder."""
    text = str(target).strip()
    return text.startswith(("postgresql://", "postgres://")) or (
        "=" in text and any(text.startswith(key) for key in ("host=", "dbname=", "user=", "port=", "service=")))


def open_gallery(target: str | Path) -> FileGallery | PgGallery:
    """The gallery at `target`: a PostgreSQL URL or conninfo opens a PgGallery (GalleryError when unreachable),
    anything else is the folder of a FileGallery."""
    return PgGallery(str(target)) if is_url(target) else FileGallery(target)
