"""Reading any photo as an RGB uint8 array, and listing the photos of a folder."""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_IMAGE_SIDE = 4096
"""Larger photos are downscaled on load so that a huge file cannot exhaust memory."""

MAX_IMAGE_PIXELS = 160_000_000
"""JPEGs declaring more pixels are refused before decoding (a JPEG decodes straight at reduced size; this stays
under Pillow's own bomb limit, so this message is the one that fires)."""

MAX_DECODED_PIXELS = 50_000_000
"""Other formats (PNG, GIF, TIFF, WebP...) decode whole before being scaled down: above this many declared pixels
(about 150 MB of RGB) they are refused before decoding, so a small file cannot expand to gigabytes."""

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)


class ImageError(ValueError):
    """A photo that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: 16-bit and float are rescaled, transparency is composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(img, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        img = Image.fromarray(((array - low) * scale).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF orientations that swap width and height when the photo is turned upright."""


def load_image(path: str | Path, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """Decode a photo to an (H, W, 3) uint8 RGB array, upright per its EXIF orientation.

    Photos larger than `max_side` are downscaled (JPEGs decode directly at reduced size),
    so a huge file cannot exhaust memory. Raises ImageError naming the file otherwise.
    """
    return load_image_scaled(path, max_side)[0]


def load_image_scaled(path: str | Path, max_side: int = MAX_IMAGE_SIDE) -> tuple[np.ndarray, tuple[float, float]]:
    """`load_image`, plus the (x, y) factors mapping its pixels back to the file's own upright pixels
    (above 1 when a huge photo was downscaled), so boxes can be reported in the file's coordinates."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageError(path, "empty file (0 bytes)")
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except OSError as error:
        raise ImageError(path, f"cannot read ({error.strerror or error})") from None
    return _decode(path, path, max_side)


def _decode(
    file: Path | io.BytesIO, name: str | Path, max_side: int
) -> tuple[np.ndarray, tuple[float, float]]:
    """Decode an opened-by-Pillow source (a path or bytes) as `load_image_scaled` does; errors name `name`."""
    path = name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                width, height = img.size
                limit = MAX_IMAGE_PIXELS if img.format == "JPEG" else MAX_DECODED_PIXELS
                if width * height > limit:
                    raise ImageError(path, _too_large(f"{width}x{height} pixels", width * height, limit, img.format))
                if max(width, height) > max_side:
                    img.draft("RGB", (max_side, max_side))
                    img.thumbnail((max_side, max_side))
                scale = (width / img.size[0], height / img.size[1])
                if img.getexif().get(EXIF_ORIENTATION, 1) in TRANSPOSING_ORIENTATIONS:
                    scale = scale[::-1]
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img)
                rgb.load()
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not a readable image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as error:  # above Pillow's own limit: refused while reading the header
        declared = re.search(r"\((\d+) pixels\)", str(error))
        pixels = int(declared.group(1)) if declared else 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise ImageError(path, _too_large(None, pixels, min(MAX_IMAGE_PIXELS, MAX_DECODED_PIXELS), None)) from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageError(path, f"cannot decode image ({error})") from None
    return np.asarray(rgb, dtype=np.uint8), scale


def _too_large(size: str | None, pixels: int, limit: int, kind: str | None) -> str:
    """The one line refusing a photo by its declared size (`size`: "WxH pixels", when known)."""
    which = "MAX_IMAGE_PIXELS" if kind == "JPEG" else "MAX_DECODED_PIXELS"
    declared = f"{size} ({pixels / 1e6:.0f} Mpx)" if size else f"{pixels / 1e6:.0f} Mpx"
    return (f"image too large: {declared} declared, the limit is {limit / 1e6:.0f} Mpx "
            f"for {kind or 'this format'} ({which} in facenet/images.py); refused before decoding")


def decode_image_scaled(data: bytes, name: str = "image bytes", max_side: int = MAX_IMAGE_SIDE
                        ) -> tuple[np.ndarray, tuple[float, float]]:
    """`load_image_scaled` for a photo held in memory (an upload, bytes): ImageError naming `name`."""
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    return _decode(io.BytesIO(bytes(data)), name, max_side)


def decode_image(data: bytes, name: str = "image bytes", max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """Decode the content of an image file (JPEG, PNG, ... bytes) like `load_image`; ImageError naming `name`."""
    return decode_image_scaled(data, name, max_side)[0]


def image_format(data: bytes) -> str | None:
    """The file extension (".jpg", ".png", ...) of an encoded photo's format, None when it is not one we read."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            kind = (img.format or "").lower()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    extension = {"jpeg": ".jpg", "tiff": ".tif"}.get(kind, f".{kind}")
    return extension if extension in IMAGE_EXTENSIONS else None


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """A PIL image (any mode) as an (H, W, 3) uint8 RGB array."""
    return np.asarray(_to_rgb(img), dtype=np.uint8)


def to_rgb(image: object, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """Any accepted image as RGB uint8 (H, W, 3): a path (str or Path), bytes of an image file, a PIL image, or an
    (H, W, 3) uint8 RGB / (H, W) uint8 grey array. ImageError for an unreadable file; TypeError/ValueError otherwise."""
    if isinstance(image, np.ndarray):
        if image.ndim == 2 and image.dtype == np.uint8:
            return np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {image.dtype} {image.shape}")
        return image
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image), max_side=max_side)
    if isinstance(image, (str, Path)):
        if isinstance(image, str) and not image:
            raise ValueError("an image path must not be empty")
        return load_image(image, max_side)
    raise TypeError(
        "an image must be a path, bytes of an image file, a PIL.Image or an RGB uint8 array, "
        f"not {type(image).__name__}"
    )


def is_image_file(path: str | Path) -> bool:
    """True for a regular file whose extension is an image format we read."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file() and not path.name.startswith(".")


def list_images(folder: str | Path) -> list[Path]:
    """All image files below `folder`, recursively, in a stable sorted order; other files are ignored."""
    return sorted(p for p in Path(folder).rglob("*") if is_image_file(p))


def display_path(path: str | Path) -> str:
    """A path as printable UTF-8 text: bytes that are not UTF-8 (an old Latin-1 file name) shown as \\xNN escapes."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a surrogate-escaped byte of a non-UTF-8 name
        return False
    return True


SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO (named pipe), not a photo; never opened"), (stat.S_ISSOCK, "a socket"),
                 (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def entry_problem(path: Path) -> str | None:
    """Why an entry of the data folder cannot be enrolled (None when it can be read): a name that is not UTF-8,
    a symlink loop, a dangling symlink, a FIFO, socket or device (checked with stat, never opened)."""
    if not _utf8(path.name):
        return "the name is not valid UTF-8 (rename it)"
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "dangling symlink (its target is missing)" if path.is_symlink() else "vanished"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symlink loop"
        return f"unreadable: {error.strerror or error}"
    return next((reason for test, reason in SPECIAL_FILES if test(mode)), None)


@dataclass
class DataLayout:
    """The enrollment layout of a data folder: (person, photos) per subfolder, photos lying loose in the folder
    itself, and every entry that was skipped with its reason (hidden folders, links that lead nowhere, FIFOs...)."""

    people: list[tuple[str, list[Path]]] = field(default_factory=list)
    loose: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def person_name(text: str) -> str:
    """A person's name in its one Unicode form (NFC), whatever wrote it: a folder copied from a Mac (decomposed,
    NFD), typed on Linux, sent to the service. The store, the gallery and the command line compare names by it."""
    return unicodedata.normalize("NFC", text)


def person_folder(data_dir: str | Path, name: str) -> Path | None:
    """The folder data_dir/<name>/ of a person, whatever Unicode form its name has on disk; None if there is none."""
    data_dir, name = Path(data_dir), person_name(name)
    exact = data_dir / name
    if exact.is_dir():
        return exact
    try:
        entries = sorted(data_dir.iterdir())
    except OSError:
        return None
    return next((e for e in entries if _utf8(e.name) and person_name(e.name) == name and e.is_dir()), None)


def _person_photos(folder: Path, skipped: list[tuple[Path, str]]) -> list[Path]:
    """The photos below a person's folder (subfolders searched, symlinked subfolders not followed); entries that
    cannot be read are added to `skipped`, other files are ignored."""
    photos = []
    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        skipped.append((folder, f"unreadable folder: {error.strerror or error}"))
        return photos
    for entry in entries:
        if entry.name.startswith("."):
            if entry.is_dir() and not entry.is_symlink():
                skipped.append((entry, "hidden folder (its name starts with a dot)"))
            continue
        problem = entry_problem(entry)
        if problem:
            skipped.append((entry, problem))
        elif entry.is_dir():
            if not entry.is_symlink():
                photos.extend(_person_photos(entry, skipped))
        elif is_image_file(entry):
            photos.append(entry)
    return sorted(photos)


def scan_data_folder(data_dir: str | Path, skip: str | Path | None = None) -> DataLayout:
    """The enrollment layout `data_dir/<person name>/**/photo`, person names NFC-normalised (the same name typed on
    macOS or Linux). `skip` (e.g. a database folder kept inside data_dir) is left out silently; hidden person
    folders, names that are not UTF-8, symlink loops, dangling symlinks and FIFOs are listed in `skipped`."""
    skip_path = Path(skip).resolve() if skip is not None else None
    layout = DataLayout()
    for entry in sorted(Path(data_dir).iterdir()):
        problem = entry_problem(entry)
        if problem is None and entry.resolve() == skip_path:
            continue
        if problem is None and entry.name.startswith("."):
            if entry.is_dir():
                problem = "hidden folder (its name starts with a dot): not enrolled"
            elif entry.suffix.lower() in IMAGE_EXTENSIONS:
                problem = "hidden photo (its name starts with a dot)"
            else:
                continue
        if problem:
            layout.skipped.append((entry, problem))
        elif entry.is_dir():
            name = person_name(entry.name)
            layout.people.append((name, _person_photos(entry, layout.skipped)))
        elif is_image_file(entry):
            layout.loose.append(entry)
    return layout


def list_people(
    data_dir: str | Path, skip: str | Path | None = None
) -> tuple[list[tuple[str, list[Path]]], list[Path]]:
    """`scan_data_folder`'s people and loose photos (callers that do not report skipped entries)."""
    layout = scan_data_folder(data_dir, skip)
    return layout.people, layout.loose
