"""Swap videos: people replacing each other in one place in front of a fixed camera, with no empty frame between
them (strangers among them), and how right a recogniser's labels are on them. Used by tests/test_tracking_swaps.py
and bench/bench_swaps.py.

A video is 640x480: one background (a wall), and each person's photo (a 250x250 LFW crop: the face ~45% of it)
scaled to `side` px at nearly the same spot, drifting and breathing a little, with sensor noise, so that no two
frames are equal. Person k's frames are k * frames_each ... (k + 1) * frames_each - 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SIZE = (640, 480)
SETTLE = 5
"""Frames of each person not judged: a new person must be named right from their 6th frame on."""


def wall(rng: np.random.Generator) -> np.ndarray:
    """A smooth random texture, RGB 640x480."""
    small = rng.integers(40, 200, (12, 16, 3)).astype(np.uint8)
    return cv2.resize(small, SIZE, interpolation=cv2.INTER_CUBIC)


def swap_frames(photos: list[np.ndarray], frames_each: int, seed: int = 0, side: int = 220) -> list[np.ndarray]:
    """Every frame of the video: each RGB photo in turn for `frames_each` frames at one spot (jittered)."""
    rng = np.random.default_rng(seed)
    width, height = SIZE
    scene = wall(rng)
    spot_x, spot_y = (width - side) // 2 + int(rng.integers(-80, 80)), (height - side) // 2
    frames = []
    for photo in photos:
        dx, dy = rng.uniform(-1.5, 1.5, 2)
        for i in range(frames_each):
            size = int(side * (1 + 0.04 * np.sin(i / 4)))
            x = int(np.clip(spot_x + dx * i, 0, width - size))
            y = int(np.clip(spot_y + dy * i, 0, height - size))
            frame = scene.copy()
            frame[y: y + size, x: x + size] = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA)
            noisy = frame.astype(np.float32) + rng.normal(0, 5, frame.shape)
            frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return frames


@dataclass(frozen=True)
class Judged:
    """How a run labelled a swap video, from the SETTLE+1-th frame of each person on."""

    frames: int
    right: int
    stranger_named: int
    wrong_name: int
    """Frames of an enrolled person named as someone else."""
    late: list[int]
    """Per person, the first frame (counted from their first) from which their label stayed right (frames_each
    when it never did)."""

    @property
    def right_share(self) -> float:
        return self.right / max(1, self.frames)


def judge(labels: list[str | None], truth: list[str], frames_each: int, unknown: str) -> Judged:
    """Judge one label per frame (None: no face found) against who is shown (`truth`, per person)."""
    frames = right = stranger_named = wrong_name = 0
    late = []
    for k, who in enumerate(truth):
        own = labels[k * frames_each: (k + 1) * frames_each]
        settled = len(own)
        while settled > 0 and own[settled - 1] == who:
            settled -= 1
        late.append(settled)
        for label in own[SETTLE:]:
            frames += 1
            right += label == who
            stranger_named += who == unknown and label not in (None, unknown)
            wrong_name += who != unknown and label not in (None, unknown, who)
    return Judged(frames, right, stranger_named, wrong_name, late)
