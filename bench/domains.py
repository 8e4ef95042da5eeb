"""Shifted domains of LFW photos for the training benchmarks: surgical masks, a cheap camera, low light.

Each domain maps a clean RGB photo (and its subject's 5 YuNet points) to a degraded copy:

- `mask`: a surgical mask drawn from the five landmarks: from just below the eyes (over the nose bridge) to below
  the chin, as wide as the cheeks, in one of a few mask colours with pleats, shading and ear loops; random per
  photo (seeded by its name) so the model cannot learn one exact mask;
- `camera`: grayscale, shrunk so the face is ~30 px wide and blown back up, blurred, JPEG quality 30;
- `lowlight`: dark (gamma 2.2, gain 0.35), colour cast, sensor noise, JPEG quality 60.

`make_domain(name, lfw_dir)` writes the domain copy of every lfw_dev photo once (same layout) under
bench/results/domains/<name>/ and returns that folder.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
LFW_DEV = ROOT.parent / "shared" / "faces" / "lfw_dev"
RESULTS = ROOT / "bench" / "results" / "domains"

MASK_COLOURS = ((170, 205, 230), (235, 238, 240), (40, 42, 48), (120, 170, 210), (200, 220, 215))
"""Surgical light blue, white, black, darker blue, pale green (RGB)."""


def _rng(path: Path) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(path.name.encode()).digest()[:8], "little"))


def mask(image: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`image` with a surgical mask over nose and mouth, placed from YuNet's 5 points (right eye, left eye, nose,
    right and left mouth corners)."""
    eyes, mouth = points[:2].mean(axis=0), points[3:].mean(axis=0)
    down = mouth - eyes
    across = points[1] - points[0]
    width = float(np.linalg.norm(across))
    if width < 2 or np.linalg.norm(down) < 2:
        return image
    unit_x, unit_y = across / width, down / np.linalg.norm(down)
    height = float(np.linalg.norm(down))
    top = eyes + down * rng.uniform(0.22, 0.32)
    chin = eyes + down * rng.uniform(1.8, 2.0)
    half_top, half_mid = width * rng.uniform(0.95, 1.1), width * rng.uniform(1.15, 1.3)
    mid = eyes + down * 1.1
    outline = [top - unit_x * half_top, top + unit_x * half_top * 0.35, top + unit_x * half_top,
               mid + unit_x * half_mid]
    for angle in np.linspace(0, np.pi, 9):  # the chin: half an ellipse
        outline.append(mid + unit_x * half_mid * np.cos(angle) + unit_y * (chin - mid) @ unit_y * np.sin(angle))
    outline.append(mid - unit_x * half_mid)
    polygon = np.round(np.array(outline)).astype(np.int32)
    colour = np.array(MASK_COLOURS[rng.integers(len(MASK_COLOURS))], np.float32) * rng.uniform(0.85, 1.1)
    layer = np.zeros_like(image, np.float32)
    cv2.fillPoly(layer, [polygon], colour.clip(0, 255).tolist(), lineType=cv2.LINE_AA)
    alpha = np.zeros(image.shape[:2], np.float32)
    cv2.fillPoly(alpha, [polygon], 1.0, lineType=cv2.LINE_AA)
    shade = np.clip(1.0 - 0.25 * np.abs(np.arange(image.shape[1]) - mid[0]) / max(half_mid, 1), 0.7, 1.0)
    layer *= shade[None, :, None]
    for k in range(3):  # pleats
        y = mid + unit_y * height * (k - 1) * 0.28
        a, b = np.round(y - unit_x * half_mid * 0.9).astype(int), np.round(y + unit_x * half_mid * 0.9).astype(int)
        cv2.line(layer, tuple(a.tolist()), tuple(b.tolist()), (colour * 0.8).clip(0, 255).tolist(), 1, cv2.LINE_AA)
    out = image.astype(np.float32) * (1 - alpha[..., None]) + layer * alpha[..., None]
    for side in (-1, 1):  # ear loops
        start = top + unit_x * side * half_top
        end = start + unit_x * side * width * 0.45 - unit_y * height * 0.2
        cv2.line(out, tuple(np.round(start).astype(int).tolist()), tuple(np.round(end).astype(int).tolist()),
                 (colour * 0.9).clip(0, 255).tolist(), 1, cv2.LINE_AA)
    return out.clip(0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(out.getvalue())).convert("RGB"))


def camera(image: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grayscale, the face shrunk to ~30 px wide (eye distance ~12 px) and back, blurred, JPEG quality 30."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    eye_distance = max(float(np.linalg.norm(points[1] - points[0])), 1.0)
    factor = min(1.0, rng.uniform(11.0, 13.0) / eye_distance)
    height, width = grey.shape
    small = cv2.resize(grey, (max(8, round(width * factor)), max(8, round(height * factor))),
                       interpolation=cv2.INTER_AREA)
    back = cv2.GaussianBlur(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR), (0, 0), 1.0)
    return _jpeg(np.repeat(back[..., None], 3, axis=2), 30)


def lowlight(image: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Under-exposed: gamma 2.2 darkening, gain ~0.35, a warm or cold cast, sensor noise, JPEG quality 60."""
    x = (image.astype(np.float32) / 255.0) ** 2.2 * rng.uniform(0.12, 0.2)
    x = x ** (1 / 2.2) * 255.0 * np.array([1.0, 1.0, 1.0]) * rng.uniform(0.85, 1.15, size=3)
    x += rng.normal(0, 7.0, size=x.shape)
    return _jpeg(x.clip(0, 255).astype(np.uint8), 60)


DOMAINS: dict[str, Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]] = {
    "mask": mask, "camera": camera, "lowlight": lowlight}


def subject_points(detector, image: np.ndarray) -> np.ndarray | None:
    """YuNet's 5 points of the face nearest the centre (the LFW face choice), or None."""
    from facenet.pipeline import nearest_centre

    faces = detector.detect(image) or detector.detect(image, sensitive=True)
    return nearest_centre(faces, image).points if faces else None


def make_domain(name: str, lfw_dir: Path = LFW_DEV, root: Path = RESULTS) -> Path:
    """The `name` copy of every lfw_dev photo (same layout, PNG-free: JPEG quality 95 unless the domain sets it),
    made once; photos without a detected face are copied unchanged."""
    from facenet.detect.registry import make_detector
    from facenet.images import load_image

    folder = root / name
    detector = None
    for photo in sorted(lfw_dir.rglob("*.jpg")):
        target = folder / photo.relative_to(lfw_dir)
        if target.exists():
            continue
        detector = detector or make_detector("yunet")
        image = load_image(photo)
        points = subject_points(detector, image)
        out = image if points is None else DOMAINS[name](image, points, _rng(photo))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        Image.fromarray(out).save(tmp, format="JPEG", quality=95)
        tmp.replace(target)
    return folder
