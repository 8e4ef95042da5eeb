"""The few routes of Frigate's HTTP API that facenet uses (docs/docs/integrations/api.md of Frigate):

- `GET /api/version`: plain text; what tells a Frigate API from anything else at the URL;
- `GET /api/events/<id>/snapshot.jpg?crop=1&h=500`: the tracked object's best snapshot so far, cropped to it
  (`height=500` too: Frigate >= 0.14 reads `height`, older ones `h`; each ignores the other); 404 when there is none;
- `GET /api/<camera>/latest.jpg`: the camera's newest frame, at its detect resolution;
- `POST /api/events/<id>/sub_label` `{"subLabel": name, "subLabelScore": 0-1}`: names the event.

Use Frigate's internal port 5000 (no login): port 8971 wants a session.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from urllib.parse import quote, urlsplit

from facenet.redact import mask_url

DEFAULT_PORT = 5000
TIMEOUT_S = 10.0
"""The longest one request may take."""
SNAPSHOT_HEIGHT = 500
SUB_LABEL_MAX = 100
"""Frigate refuses longer sub labels."""


class FrigateError(OSError):
    """Frigate (its API or its MQTT broker) cannot be reached, or answered something else than expected: one line."""


class FrigateApi:
    """A Frigate instance's HTTP API at `url` (`http(s)://host[:port][/path]`); ValueError for another URL."""

    def __init__(self, url: str, timeout: float = TIMEOUT_S) -> None:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port, parts = None, parts._replace(netloc="")
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.query:
            raise ValueError(f"{mask_url(url)}: a Frigate URL is http(s)://host[:port] (its API, port {DEFAULT_PORT})")
        self.base, self.timeout = url.rstrip("/"), timeout
        self.host = parts.hostname
        self.where = f"{parts.hostname}:{port or (443 if parts.scheme == 'https' else 80)}"

    def version(self) -> str:
        """Frigate's version; FrigateError when nothing answers there, or not Frigate's API."""
        data = self._request("GET", "/api/version")
        if data is None:
            raise FrigateError(f"{self.base} answered 404 to /api/version: not Frigate's API (its port is "
                               f"{DEFAULT_PORT})")
        return data.decode("utf-8", "replace").strip()[:80]

    def snapshot(self, event_id: str) -> bytes | None:
        """The event's snapshot, cropped to the object, 500 px high; None when Frigate has none (404)."""
        query = f"crop=1&h={SNAPSHOT_HEIGHT}&height={SNAPSHOT_HEIGHT}"
        return self._request("GET", f"/api/events/{quote(event_id, safe='')}/snapshot.jpg?{query}")

    def latest(self, camera: str) -> bytes | None:
        """The camera's newest frame (its detect resolution); None when Frigate has none (404)."""
        return self._request("GET", f"/api/{quote(camera, safe='')}/latest.jpg")

    def set_sub_label(self, event_id: str, name: str, score: float) -> bool:
        """Name the event `name` with `score` (0-1]; False when Frigate has no such event (any more: 404),
        FrigateError when it does not take it."""
        body = json.dumps({"subLabel": name, "subLabelScore": score}).encode()
        return self._request("POST", f"/api/events/{quote(event_id, safe='')}/sub_label", body) is not None

    def _request(self, method: str, path: str, body: bytes | None = None) -> bytes | None:
        """The answer's body; None for a 404; FrigateError for no answer or another error status."""
        request = urllib.request.Request(self.base + path, data=body, method=method,
                                         headers={"Content-Type": "application/json"} if body else {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310 - http(s) only
                return answer.read()
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise FrigateError(f"Frigate {self.where}: {method} {path.split('?')[0]} answered HTTP {error.code} "
                               f"{error.reason}") from None
        except (OSError, ValueError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", None) or error
            raise FrigateError(f"Frigate at {mask_url(self.base)} unreachable ({reason})") from None
