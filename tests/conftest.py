"""Shared fixtures: the real pretrained embedder and detector, and the photos in tests/data."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
MISC = DATA / "misc"
PEOPLE = DATA / "people"


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    """A weights folder holding the converted pretrained model (converted once per test session)."""
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="session")
def embedder(weights_dir):
    from facenet.embed import Embedder
    from facenet.model import build_embedder

    return Embedder(build_embedder("dlib_resnet", weights_dir))


@pytest.fixture(scope="session")
def detector():
    from facenet.faces import FaceDetector

    return FaceDetector("hog")
