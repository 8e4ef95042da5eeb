"""Make a test video from real photos: each photo upscaled and padded to WxH, shown for N frames (mp4v).

    python bench/make_video.py OUT.mp4 PHOTO_OR_FOLDER... [--frames-per-photo 10] [--size 640x480] [--fps 25]
                               [--limit 30]

Used by bench/bench_video.py; also handy for trying `python main.py -t False -wc False --input OUT.mp4`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facenet.images import list_images, load_image  # noqa: E402


def fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The RGB photo scaled to fit width x height (aspect kept) and centred on black."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = resized
    return canvas


def make_video(
    photos: Iterable[str | Path],
    out: str | Path,
    frames_per_photo: int = 10,
    size: tuple[int, int] = (640, 480),
    fps: float = 25.0,
) -> int:
    """Write the video; returns the number of frames written."""
    width, height = size
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"{out}: cannot write an mp4v video here")
    frames = 0
    try:
        for photo in photos:
            frame = cv2.cvtColor(fit(load_image(photo), width, height), cv2.COLOR_RGB2BGR)
            for _ in range(frames_per_photo):
                writer.write(frame)
                frames += 1
    finally:
        writer.release()
    return frames


def expand(paths: Iterable[str]) -> list[Path]:
    found: list[Path] = []
    for path in map(Path, paths):
        found.extend(list_images(path) if path.is_dir() else [path])
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("photos", nargs="+")
    parser.add_argument("--frames-per-photo", type=int, default=10)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--limit", type=int, default=None, help="use at most this many photos")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    photos = expand(args.photos)[: args.limit]
    frames = make_video(photos, args.out, args.frames_per_photo, (width, height), args.fps)
    print(f"{args.out}: {frames} frames from {len(photos)} photos, {width}x{height} at {args.fps:g} fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
