"""Live recognition you can trust: on videos of real people replacing each other in one place (strangers among
them, no empty frame between), tracking names each person right from their 6th frame on, never names a stranger,
and is never worse than frame-by-frame recognition. The product's default pipeline (YuNet + fused), real photos of
LFW DevTrain people (tests/data/swap), the one frame loop (`FrameRecognizer`) as the CLI and cameras drive it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from swap_videos import judge, swap_frames

from facenet.config import UNKNOWN
from facenet.images import load_image
from facenet.live.frames import FrameRecognizer
from facenet.sources import Frame

SWAP = Path(__file__).parent / "data" / "swap"
FRAMES_EACH = 24
"""About a second per person: long enough for a track to gather all its samples before the next one steps in."""
FPS = 25.0


@pytest.fixture(scope="module")
def default_pipeline():
    from facenet.config import default_weights_dir
    from facenet.pipeline import FacePipeline

    return FacePipeline(weights_dir=default_weights_dir())


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, default_pipeline):
    """The 9 people enrolled with 2 photos each; the video order: their 3rd photos, every 4th person a stranger."""
    from facenet.gallery.file import sync_database

    root = tmp_path_factory.mktemp("swaps")
    people = sorted(p for p in (SWAP / "people").iterdir())
    for person in people:
        (root / "data" / person.name).mkdir(parents=True)
        for photo in sorted(person.iterdir())[:2]:
            shutil.copy2(photo, root / "data" / person.name)
    database, _ = sync_database(root / "data", root / "db", default_pipeline)
    strangers = iter(sorted((SWAP / "strangers").iterdir()))
    shown, truth = [], []
    for person in people:
        shown.append(sorted(person.iterdir())[2])
        truth.append(person.name)
        if len(truth) % 4 == 3:
            shown.append(next(strangers))
            truth.append(UNKNOWN)
    return database, [load_image(p) for p in shown], truth


def labels_of(recognizer: FrameRecognizer, frames) -> tuple[list[str | None], list]:
    """The largest face's label on each frame, and every event."""
    labels, events = [], []
    for i, image in enumerate(frames):
        recognized = recognizer.recognize(Frame("door", i, image), i / FPS)
        labels.append(recognized.faces[0].name if recognized.faces else None)
        events += recognized.events
    return labels, events + recognizer.finish()


@pytest.mark.parametrize(("side", "seed"), [(220, 0), (120, 1)], ids=["near", "far"])
def test_tracking_names_every_person_who_steps_in_and_never_a_stranger(default_pipeline, gallery, side, seed):
    database, photos, truth = gallery
    assert truth.count(UNKNOWN) == 3 and len(truth) == 12
    frames = swap_frames(photos, FRAMES_EACH, seed, side)
    tracked, events = labels_of(FrameRecognizer(default_pipeline, database, "door"), frames)
    plain, _ = labels_of(FrameRecognizer(default_pipeline, database, "door", track=False), frames)
    on, off = judge(tracked, truth, FRAMES_EACH, UNKNOWN), judge(plain, truth, FRAMES_EACH, UNKNOWN)

    assert on.stranger_named == 0 and on.wrong_name == 0
    assert on.right_share >= 0.95 and on.right_share >= off.right_share
    assert max(on.late) <= 5, f"someone was named right only from frame {max(on.late) + 1} of theirs on: {on.late}"
    # the events tell the same story: each person in turn named, and the one before them left first
    named = [e.name for e in events if e.kind == "named"]
    assert [name for i, name in enumerate(named) if i == 0 or named[i - 1] != name] == truth
    assert [e.kind for e in events].count("left") == [e.kind for e in events].count("appeared")
