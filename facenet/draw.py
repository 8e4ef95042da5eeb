"""Annotating frames (a box, the name and the distance per face) and showing them in a window.

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
    distance: float | None


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in LABEL_FONTS:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def label_text(name: str, distance: float | None) -> str:
    """"Name 0.31" (or just the name when there is no distance, e.g. an empty database)."""
    if distance is None or not np.isfinite(distance):
        return name
    return f"{name} {distance:.2f}"


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
    for label in labels:
        left, top, right, bottom = (int(v) for v in label.box)
        color = UNKNOWN_RGB if label.name == UNKNOWN else KNOWN_RGB
        cv2.rectangle(canvas, (left, top), (right - 1, bottom - 1), color, stroke)
        patch = _label_patch(label_text(label.name, label.distance), font, color, stroke)
        patch_h, patch_w = patch.shape[:2]
        # Under the box, or above it when the box touches the bottom edge; clipped to the frame.
        y = bottom if bottom + patch_h <= height else max(0, top - patch_h)
        x = min(max(0, left), max(0, width - patch_w))
        h, w = min(patch_h, height - y), min(patch_w, width - x)
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
