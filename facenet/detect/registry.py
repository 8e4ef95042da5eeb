"""Detectors by name: the one factory the pipeline, the CLI and the benches use."""

from __future__ import annotations

from facenet.config import DEFAULT_DETECTOR, DETECTORS
from facenet.detect.dlib import DlibDetector
from facenet.detect.face import Detector
from facenet.detect.yunet import YuNetFaces


def make_detector(kind: str = DEFAULT_DETECTOR) -> Detector:
    """The detector called `kind` (one of DETECTORS)."""
    if kind not in DETECTORS:
        raise ValueError(f"unknown detector {kind!r}; choose one of {', '.join(DETECTORS)}")
    return YuNetFaces() if kind == "yunet" else DlibDetector(kind)
