"""facenet: face recognition that installs with one command and works offline (TensorFlow 2 / Keras 3).

The public API (see `facenet.api`): `verify`, `Gallery`, `detect_faces`, `embed_faces`, `embed_face`, `load_image`,
`face_pipeline` (the shared `FacePipeline`), `fine_tune` (training, as `-t True`); `Gallery.recognize` returns
`Recognition`s. TensorFlow loads on first use, not on import.
"""

from facenet.quiet import quiet_tensorflow_env

quiet_tensorflow_env()  # before anything imports TensorFlow: its C++ INFO lines are not the library's to print

from facenet.api import (  # noqa: E402 - the public names, re-exported
    Gallery,
    ImageError,
    NoFaceError,
    Recognition,
    Verification,
    detect_faces,
    embed_face,
    embed_faces,
    face_pipeline,
    fine_tune,
    load_image,
    verify,
)

__version__ = "0.3.0"
"""The package's version, its one place: pyproject.toml reads it (`pip show facenet`), `facenet --version` prints it."""

__all__ = ["Gallery", "ImageError", "NoFaceError", "Recognition", "Verification", "detect_faces", "embed_face",
           "embed_faces", "face_pipeline", "fine_tune", "load_image", "verify"]
