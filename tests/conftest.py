"""Shared fixtures: the real pretrained dlib embedder, the HOG detector, the face pipeline made of both, and the
photos in tests/data.

The expectations of the tests were calibrated on dlib + HOG, so the fixtures name them explicitly (the library's
defaults are YuNet + the fused model).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facenet.config import PRETRAINED_FILE

DATA = Path(__file__).parent / "data"
MISC = DATA / "misc"
PEOPLE = DATA / "people"


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    """A weights folder holding the converted pretrained model (converted once per test session)."""
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="session")
def embedder(weights_dir):
    """The pretrained dlib ResNet twin as an `Embedder` (chips in as {"dlib": (N, 150, 150, 3)})."""
    from facenet.models.build import build_embedder
    from facenet.models.embed import Embedder

    return Embedder(build_embedder("dlib", weights_dir), "dlib")


@pytest.fixture
def weights(tmp_path, embedder, weights_dir) -> Path:
    """A fresh weights folder holding the converted pretrained dlib model (copied, not converted again)."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in (PRETRAINED_FILE, PRETRAINED_FILE + ".json"):
        shutil.copy(weights_dir / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def detector():
    """dlib's HOG detector (with its 5-point landmarks)."""
    from facenet.detect.dlib import DlibDetector

    return DlibDetector("hog")


@pytest.fixture(scope="session")
def pipeline(detector, embedder):
    """HOG + dlib as one `FacePipeline`: what enrollment, recognition, training and evaluation run through."""
    from facenet.pipeline import FacePipeline

    return FacePipeline(detector, embedder)
