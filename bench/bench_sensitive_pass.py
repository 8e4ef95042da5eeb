"""How many photos rely on the detector's sensitive pass (YuNet at YUNET_FALLBACK_SCORE instead of the normal
score): the photos in which the normal pass finds no face and the sensitive one finds one.

    python bench/bench_sensitive_pass.py [FOLDER ...]   # default: ../shared/faces/{people,lfw_dev,misc}

Prints the number of readable images and each sensitive-only photo with its best score and box. Enrollment leaves
such a face out unless it matches the person's normally detected photos (facenet/gallery/enroll.py::_confirm_sensitive).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facenet.detect.yunet import YUNET_FALLBACK_SCORE, YuNetDetector  # noqa: E402
from facenet.images import ImageError, list_images, load_image  # noqa: E402

SHARED = ROOT.parent / "shared" / "faces"


def main(folders: list[Path]) -> None:
    detector = YuNetDetector()
    readable, sensitive_only = 0, []
    for path in (p for folder in folders for p in list_images(folder)):
        try:
            image = load_image(path)
        except ImageError:
            continue
        readable += 1
        if not detector.detect(image):
            found = detector.detect(image, score_threshold=YUNET_FALLBACK_SCORE)
            if found:
                sensitive_only.append((path, found[0].score, found[0].box))
    print(f"images {readable}, found only by the sensitive pass {len(sensitive_only)}")
    for path, score, box in sensitive_only:
        print(f"  {path}: score {score:.2f}, box {box}")


if __name__ == "__main__":
    main([Path(a) for a in sys.argv[1:]] or [SHARED / "people", SHARED / "lfw_dev", SHARED / "misc"])
