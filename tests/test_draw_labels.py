"""Labels: any name can be drawn (control characters), the score is shown, labels of crowded photos never overlap."""

from __future__ import annotations

from pathlib import Path

import pytest

from facenet import config
from facenet.detect.yunet import YuNetDetector
from facenet.draw import KNOWN_RGB, Label, annotate, label_text, layout_labels, printable
from facenet.images import load_image

MISC = Path(__file__).parent / "data" / "misc"


def _intersect(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("name", ["Ada\nLovelace", "Ada\rLovelace", "Tab\tName", "\u202eevil", "\x00", "Zoë\u2028Ñ"])
def test_any_name_is_drawn(name):
    image = load_image(MISC / "two_people.jpg")
    out = annotate(image, [Label((100, 50, 300, 250), name, 80.0), Label((600, 60, 800, 260), config.UNKNOWN, None)])
    label = out[251:270, 100:180]
    assert (label == KNOWN_RGB).all(axis=-1).mean() > 0.3
    assert "\n" not in label_text(name, 80.0) and "\r" not in label_text(name, 80.0)


def test_printable_keeps_ordinary_names():
    assert printable("Zoë Ñúñez-O'Brien 李") == "Zoë Ñúñez-O'Brien 李"
    assert printable("Ada\nLovelace") == "Ada Lovelace"


def test_layout_moves_labels_apart():
    boxes = [(10, 10, 60, 60), (20, 12, 70, 62), (15, 8, 65, 58)]  # three faces almost on top of each other
    rects = layout_labels(boxes, [(80, 20)] * 3, 400, 300)
    assert all(not _intersect(a, b) for i, a in enumerate(rects) for b in rects[i + 1 :])
    assert rects[0] == (10, 60, 90, 80)  # the first label stays right under its box
    assert all(r[0] >= 0 and r[2] <= 400 and r[1] >= 0 and r[3] <= 300 for r in rects)


def test_crowded_photo_labels_do_not_overlap():
    """On the crowded photo of tests/data (7 faces): a missing photo fails, never skips."""
    image = load_image(MISC / "2008_007676.jpg")
    faces = YuNetDetector().detect(image)
    assert len(faces) >= 5
    height, width = image.shape[:2]
    sizes = [(160, 22)] * len(faces)  # wide labels: "Someone Long (score 84)"
    rects = layout_labels([f.box for f in faces], sizes, width, height)
    assert all(not _intersect(a, b) for i, a in enumerate(rects) for b in rects[i + 1 :])
    out = annotate(image, [Label(f.box, "Someone Long", 84.0) for f in faces])
    assert out.shape == image.shape
