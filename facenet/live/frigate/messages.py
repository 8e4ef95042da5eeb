"""Frigate's `<prefix>/events` MQTT messages, read as its documentation describes them (docs/docs/integrations/mqtt.md):
`{"type": "new" | "update" | "end", "before": {...}, "after": {"id", "camera", "label", "sub_label", "top_score",
"start_time", "end_time", "box", "has_snapshot", "false_positive", ...}}`; `sub_label` is null, a name (Frigate up
to 0.12) or `[name, score]` (0.13 on)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

TYPES = ("new", "update", "end")
EVENT_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
"""What a Frigate event id looks like (`1607123955.475377-mxklsc`): anything else is refused, as it becomes part of
URLs and snapshot file names."""
CAMERA = re.compile(r"[A-Za-z0-9_-]{1,100}")
"""Frigate's camera names (its config allows letters, digits, `_` and `-`)."""

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class FrigateEvent:
    """One message of `frigate/events`: its type and the tracked object as it is after it (`after`)."""

    type: str
    id: str
    camera: str
    label: str
    start_time: float
    sub_label: str | None = None
    sub_label_score: float | None = None
    """The score Frigate holds for `sub_label` (0-1); None when it has none (set by hand, or Frigate < 0.13)."""
    box: Box | None = None
    """The object's box in the camera's detect resolution (what `latest.jpg` is served at): x1, y1, x2, y2."""
    false_positive: bool = False


def parse_event(payload: bytes | str) -> FrigateEvent:
    """The event of one `frigate/events` message; ValueError (one line) when it is not one."""
    try:
        message = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"not JSON ({error})") from None
    after = message.get("after") if isinstance(message, dict) else None
    if not isinstance(after, dict) or message.get("type") not in TYPES:
        raise ValueError("not a Frigate event: no type new/update/end with an `after` object")
    event_id, camera, label = after.get("id"), after.get("camera"), after.get("label")
    if not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
        raise ValueError(f"Frigate event id {str(event_id)[:40]!r} is not [A-Za-z0-9._-]{{1,100}}")
    if not isinstance(camera, str) or not CAMERA.fullmatch(camera) or not isinstance(label, str):
        raise ValueError(f"Frigate event {event_id}: no camera name [A-Za-z0-9_-] or no label")
    name, score = _sub_label(after.get("sub_label"))
    return FrigateEvent(message["type"], event_id, camera, label, _number(after.get("start_time")) or 0.0, name,
                        score, _box(after.get("box")), after.get("false_positive") is True)


def _sub_label(value: object) -> tuple[str | None, float | None]:
    """(name, score) of `sub_label`: null, "name" or ["name", score]."""
    if isinstance(value, str) and value:
        return value, None
    if isinstance(value, list) and value and isinstance(value[0], str) and value[0]:
        return value[0], _number(value[1]) if len(value) > 1 else None
    return None, None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _box(value: object) -> Box | None:
    if not isinstance(value, list) or len(value) != 4:
        return None
    numbers = [_number(v) for v in value]
    if any(n is None for n in numbers):
        return None
    x1, y1, x2, y2 = (int(n) for n in numbers)  # type: ignore[arg-type]
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None
