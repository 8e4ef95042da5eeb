"""One JSON form of a recognised face: the CLI's line, the service's /recognize face and camera track, and the event
record all carry the same name, distance and score (same rounding) and, where they have one, the same box."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from facenet.cli.recognize_output import emit_results
from facenet.live.events import EVENT_KEYS, event_record
from facenet.live.tracking import TrackEvent
from facenet.recognize import Recognition

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from facenet.service.app import create_app  # noqa: E402
from facenet.service.cameras import _track  # noqa: E402

POINTS = ((30.25, 50.5), (70.75, 50.0), (50.0, 70.0), (35.0, 90.0), (65.0, 90.0))


class OneFaceStore:
    """The service's store, reduced to a recognizer that always finds `face`."""

    def __init__(self, face: Recognition) -> None:
        self.face = face

    def recognize(self, rgb: np.ndarray, collect: bool = False) -> list[Recognition]:
        return [self.face]


def _photo() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((160, 200, 3), 128, np.uint8)).save(out, format="JPEG")
    return out.getvalue()


@pytest.mark.parametrize(("name", "distance", "score"), [
    ("Ada Lovelace", np.float32(0.312345678), 84.2567),  # a numpy distance: rounded to a plain float everywhere
    ("Unknown", None, float("nan")),  # nobody enrolled / no number: null everywhere
])
def test_a_face_renders_the_same_core_fields_in_cli_json_service_json_and_events(capsys, name, distance, score):
    box = (10, 20, 90, 110)
    plain = Recognition(box, name, distance, score, POINTS)
    tracked = Recognition(box, name, distance, score, POINTS, track=3)

    emit_results([tracked], "door", 120)
    cli = json.loads(capsys.readouterr().out)
    response = TestClient(create_app(OneFaceStore(plain))).post(
        "/api/v1/recognize", files={"file": ("p.jpg", _photo(), "image/jpeg")})
    assert response.status_code == 200, response.text
    service = response.json()["faces"][0]
    camera = _track(tracked.face_record())
    event = event_record(TrackEvent("named", "door", 3, 1.0e9, 120, name, distance, score, 1.0e9), None)

    core = ("name", "distance", "score")
    assert {k: cli[k] for k in core} == {k: service[k] for k in core} == {k: camera[k] for k in core} \
        == {k: event[k] for k in core} == {k: plain.face_record()[k] for k in core}
    assert cli["box"] == service["box"] == camera["box"] == list(box)
    assert cli["track"] == camera["track"] == event["track"] == 3
    if distance is not None:
        assert cli["distance"] == 0.3123 and cli["score"] == 84.3
    # each surface keeps its own documented keys
    assert list(cli) == ["source", "frame", "box", "name", "distance", "score", "track"]
    assert list(service) == ["box", "landmarks", "name", "distance", "score"]
    assert service["landmarks"][0] == [30.2, 50.5]
    assert list(camera) == ["track", "name", "box", "distance", "score"]
    assert list(plain.face_record()) == ["box", "name", "distance", "score"]  # "track" only where tracking named it
    assert tuple(event) == EVENT_KEYS
