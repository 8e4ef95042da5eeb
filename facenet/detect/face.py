"""The `Face` record, the box convention and the `Detector` protocol every detector follows.

Box convention, everywhere in the package: `(left, top, right, bottom)` in integer pixels of the
image given, right/bottom exclusive (like PIL and dlib rectangles' width = right - left).
Faces are returned largest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import dlib

Box = tuple[int, int, int, int]


@dataclass(frozen=True, repr=False)
class Face:
    """One detected face: its box and detector score, and the landmarks each chip is aligned with.

    `shape`: dlib's 5-point landmarks (eye corners, nose bottom) for the dlib chip; `points`: (5, 2) float32 in
    YuNet's order (right eye, left eye, nose tip, right and left mouth corners) for the SFace chip. A detector fills
    what it finds; `FacePipeline` adds what its model's chips need. Its repr shows numbers only (the landmarks as
    (x, y) pairs), never a dlib object's address.
    """

    box: Box
    score: float
    shape: dlib.full_object_detection | None = None
    points: np.ndarray | None = None

    @property
    def landmarks(self) -> np.ndarray:
        """dlib's 5 landmarks as a (5, 2) float32 array."""
        return np.array([(p.x, p.y) for p in self.shape.parts()], dtype=np.float32)

    @property
    def area(self) -> int:
        left, top, right, bottom = self.box
        return max(0, right - left) * max(0, bottom - top)

    def __repr__(self) -> str:
        """`Face(box=(l, t, r, b), score=0.9731, shape=((x, y), …), points=((x, y), …))`: plain numbers."""
        box = tuple(int(v) for v in self.box)
        shape = None if self.shape is None else tuple((int(p.x), int(p.y)) for p in self.shape.parts())
        points = None if self.points is None else tuple(
            (round(float(x), 2), round(float(y), 2)) for x, y in np.asarray(self.points).reshape(-1, 2))
        return f"Face(box={box}, score={round(float(self.score), 4)}, shape={shape}, points={points})"


class Detector(Protocol):
    """What `FacePipeline` needs of a detector: its kind (one of DETECTORS) and every face of an RGB image."""

    kind: str

    def detect(self, image: np.ndarray, max_side: int | None = None, sensitive: bool = False) -> list[Face]:
        """Every face, largest first; `max_side` detects on a downscaled copy, `sensitive` is the fallback pass."""
        ...
