"""What the peer APIs (CompreFace's in facenet/service/compreface.py, DeepStack's in deepstack.py) share: a route
class that answers every refusal in the peer's own error shape, a detected face's probability on a 0-1 scale, the
faces of a photo a request asks for, and the similarity of a 0-100 score.

A peer's `similarity` or `confidence` is the service's 0-100 score / 100: 0.5 exactly at the calibrated threshold.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from facenet.detect.dlib import HOG_THRESHOLD, fit_shape
from facenet.detect.face import Face
from facenet.detect.yunet import YUNET_SCORE_THRESHOLD

if TYPE_CHECKING:
    from facenet.service.store import GalleryStore

ACCEPTED = {"hog": HOG_THRESHOLD, "cnn": 0.0}
"""The lowest score each dlib detector accepts: a margin, not a probability (YuNet's score is one already)."""

BELOW_THRESHOLD = 0.4999
"""The highest similarity of someone the service does not name: 0.5 and above always means "named"."""


def refusing_route(render: Callable[[Exception], Response | None]) -> type[APIRoute]:
    """A route class whose handler answers `render(error)` for an exception it raises (parameters, key checks and
    the store's refusals included), or lets the exception through when `render` gives None."""

    class PeerRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
            handler = super().get_route_handler()

            async def answer(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as error:
                    response = render(error)
                    if response is None:
                        raise
                    return response

            return answer

    return PeerRoute


def probability(score: float, detector: str) -> float:
    """How sure the detector is that a face is one, 0-1: YuNet's own score; dlib's HOG and CNN detectors give an
    unbounded margin instead, mapped so that their acceptance threshold reads as YuNet's (0.85), nearing 1 as the
    margin grows (a face any of them returns is at least 0.85: a client's 0.8 never drops one)."""
    if detector not in ACCEPTED:
        return round(min(max(float(score), 0.0), 1.0), 4)
    margin = max(0.0, float(score) - ACCEPTED[detector])
    return round(1.0 - (1.0 - YUNET_SCORE_THRESHOLD) * math.exp(-margin), 4)


def similarity(score: float | None, named: bool = True) -> float:
    """A 0-100 score as a 0-1 similarity (0 without one); someone not `named` stays below 0.5 (BELOW_THRESHOLD)."""
    value = 0.0 if score is None or not math.isfinite(score) else round(float(score) / 100, 4)
    return value if named else min(value, BELOW_THRESHOLD)


@dataclass(frozen=True)
class Wanted:
    """Which faces of a photo a request wants: the `limit` largest (0: all), those the detector is at least
    `min_probability` sure of, or with `detect` False the whole photo as one face (a photo that is a face crop)."""

    limit: int = 0
    min_probability: float = 0.0
    detect: bool = True


@dataclass(frozen=True)
class Found:
    """The faces of a photo with their probabilities, and how long detection took (ms)."""

    faces: list[Face]
    probabilities: list[float]
    detect_ms: float


def photo_faces(store: GalleryStore, rgb: np.ndarray, wanted: Wanted) -> Found:
    """The faces of an RGB photo that `wanted` asks for, largest first, with the landmarks the model needs."""
    started = time.perf_counter()
    if not wanted.detect:
        height, width = rgb.shape[:2]
        box = (0, 0, width, height)
        faces = store.pipeline.complete(rgb, [Face(box, 1.0, shape=fit_shape(rgb, box))])
        return Found(faces, [1.0], _ms(started))
    kind = store.pipeline.detector.kind
    found = [(f, probability(f.score, kind)) for f in store.detect(rgb)]
    found = [(f, p) for f, p in found if p >= wanted.min_probability]
    found = found[:wanted.limit] if wanted.limit else found
    return Found([f for f, _ in found], [p for _, p in found], _ms(started))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def scaled_box(box: tuple[int, ...], scale: tuple[float, float]) -> tuple[int, int, int, int]:
    """A box (left, top, right, bottom) in the uploaded photo's own pixels (as the service's own API gives it)."""
    sx, sy = scale
    left, top, right, bottom = box
    return round(left * sx), round(top * sy), round(right * sx), round(bottom * sy)
