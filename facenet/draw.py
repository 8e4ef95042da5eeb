"""Annotating frames (a box, the name and the 0-100 match score per face; Unknown without one) and showing them
in a window.

Drawing happens on RGB arrays; the window converts to BGR at the OpenCV boundary. Labels are drawn with
a TrueType font through Pillow because OpenCV's Hershey fonts have no accented letters.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facenet.config import UNKNOWN
from facenet.text import printable

log = logging.getLogger(__name__)

KNOWN_RGB = (46, 204, 64)
UNKNOWN_RGB = (230, 40, 40)
TEXT_RGB = (255, 255, 255)
LABEL_FONTS = ("DejaVuSans.ttf", "Arial.ttf", "arial.ttf", "Helvetica.ttc")
"""Tried in order (Pillow searches the system font folders); Pillow's own font is the fallback."""

QUIT_KEYS = (ord("q"), ord("Q"), 27)


@dataclass(frozen=True)
class Label:
    """What is drawn for one face: its box (left, top, right, bottom) and the text parts."""

    box: tuple[int, int, int, int]
    name: str
    score: float | None


Rect = tuple[int, int, int, int]
"""A label's rectangle on the frame: (left, top, right, bottom), right/bottom exclusive."""


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in LABEL_FONTS:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def label_text(name: str, score: float | None) -> str:
    """"Name (score 84)": the 0-100 match score, 50 at the threshold. Just the name when there is no score, and just
    "Unknown" for an Unknown face (its score is that of the nearest enrolled person: meaningless on a stranger)."""
    if name == UNKNOWN or score is None or not np.isfinite(score):
        return printable(name)
    return f"{printable(name)} (score {score:.0f})"


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def layout_labels(boxes: Sequence[Rect], sizes: Sequence[tuple[int, int]], width: int, height: int) -> list[Rect]:
    """Where each face's label goes: under its box (above when the box touches the bottom), inside the frame, and
    moved down (else up) past labels already placed so that no two labels overlap where the frame has room.

    `sizes` are the labels' (width, height); labels are placed in the given order.
    """
    placed: list[Rect] = []
    for (left, top, _right, bottom), (w, h) in zip(boxes, sizes, strict=True):
        x = min(max(0, left), max(0, width - w))
        y0 = bottom if bottom + h <= height else max(0, top - h)
        candidates = [y0] + [r[3] for r in placed] + [r[1] - h for r in placed]
        candidates = sorted({min(max(0, y), max(0, height - h)) for y in candidates}, key=lambda y: (abs(y - y0), y))
        free = [y for y in candidates if not any(_overlaps((x, y, x + w, y + h), r) for r in placed)]
        y = free[0] if free else y0
        placed.append((x, y, x + w, y + h))
    return placed


def _label_patch(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, color: tuple, pad: int) -> np.ndarray:
    """The label as a small RGB image: text on a filled background."""
    x0, y0, x1, y1 = font.getbbox(text)
    patch = Image.new("RGB", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), color)
    ImageDraw.Draw(patch).text((pad - x0, pad - y0), text, font=font, fill=TEXT_RGB)
    return np.asarray(patch)


def annotate(image: np.ndarray, labels: Sequence[Label]) -> np.ndarray:
    """A copy of the RGB image with each face boxed (green: known, red: Unknown) and labelled.

    Boxes are drawn with OpenCV, labels rendered by Pillow into small patches only: ~0.5 ms per 640x480 frame.
    """
    canvas = np.ascontiguousarray(image).copy()
    height, width = canvas.shape[:2]
    stroke = max(2, round(min(height, width) / 250))
    font = _font(max(12, min(32, round(min(height, width) / 30))))
    colors = [UNKNOWN_RGB if label.name == UNKNOWN else KNOWN_RGB for label in labels]
    texts = [label_text(label.name, label.score) for label in labels]
    patches = [_label_patch(text, font, c, stroke) for text, c in zip(texts, colors, strict=True)]
    boxes = [tuple(int(v) for v in label.box) for label in labels]
    for (left, top, right, bottom), color in zip(boxes, colors, strict=True):
        cv2.rectangle(canvas, (left, top), (right - 1, bottom - 1), color, stroke)
    sizes = [(p.shape[1], p.shape[0]) for p in patches]
    for patch, (x, y, _, _) in zip(patches, layout_labels(boxes, sizes, width, height), strict=True):
        h, w = min(patch.shape[0], height - y), min(patch.shape[1], width - x)
        if h > 0 and w > 0:
            canvas[y : y + h, x : x + w] = patch[:h, :w]
    return canvas


def display_problem() -> str | None:
    """Why no window can be shown here (None when one can): no $DISPLAY on Linux, or a GUI-less OpenCV."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display ($DISPLAY is not set)"
    return None


class Window:
    """An OpenCV window showing RGB frames; `show` returns False once the user pressed q/Esc or closed it."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.failed = False

    @classmethod
    def open(cls, title: str) -> tuple[Window | None, str | None]:
        """A window, or None and the one-line reason there is no display."""
        problem = display_problem()
        if problem:
            return None, problem
        try:
            cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)
        except cv2.error as error:
            return None, f"cannot open a window ({str(error).strip().splitlines()[-1]})"
        return cls(title), None

    def show(self, image: np.ndarray) -> bool:
        """Show one RGB frame; False when the user asked to stop (q, Esc, window closed).

        A window that fails (e.g. the display went away) is reported once, sets `failed` and shows nothing more.
        """
        if self.failed:
            return True
        try:
            cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            key = cv2.waitKey(1) & 0xFF
            closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error as error:
            log.warning("window %r failed (%s); going on without it", self.title, str(error).strip().splitlines()[-1])
            self.failed = True
            return True
        return key not in QUIT_KEYS and not closed

    def close(self) -> None:
        if self.failed:
            return
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass
