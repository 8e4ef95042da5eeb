"""facenet: face recognition that installs with one command and works offline (TensorFlow 2 / Keras 3).

The public API (see `facenet.api`): `verify`, `Gallery`, `detect_faces`, `embed_faces`, `embed_face`, `load_image`,
`face_pipeline` (the shared `FacePipeline`), `fine_tune` (training, as `-t True`). TensorFlow loads on first use,
not on import.
"""

from facenet.api import (
    Gallery,
    ImageError,
    Match,
    NoFaceError,
    Verification,
    detect_faces,
    embed_face,
    embed_faces,
    face_pipeline,
    fine_tune,
    load_image,
    verify,
)

__version__ = "0.2.0"

__all__ = ["Gallery", "ImageError", "Match", "NoFaceError", "Verification", "detect_faces", "embed_face",
           "embed_faces", "face_pipeline", "fine_tune", "load_image", "verify"]
