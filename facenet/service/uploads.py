"""Getting photos out of a request, and the request-size limit.

A photo comes as a multipart form field, as base64 (or a `data:` URI) in a JSON object under the same field name,
or, for one-photo endpoints, as the raw body (Content-Type image/*). A body larger than the limit is refused with
413 before it is read whole (by Content-Length, or while streaming when there is none).
Photos are decoded a few at a time (`decode_photo`).
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request

from facenet.images import decode_image_scaled

MiB = 1 << 20
MAX_DECODES = 2
"""Photos the service decodes at once (each may hold up to ~150 MB while it decodes); more requests wait."""
_decodes = threading.BoundedSemaphore(MAX_DECODES)


def decode_photo(data: bytes, name: str) -> tuple[np.ndarray, tuple[float, float]]:
    """`decode_image_scaled` of an uploaded photo, at most MAX_DECODES at a time across the service."""
    with _decodes:
        return decode_image_scaled(data, name)


class UploadError(ValueError):
    """A request whose photo cannot be taken out of it; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def read_photos(request: Request, fields: tuple[str, ...], limit: int) -> dict[str, tuple[bytes, str]]:
    """{field: (bytes, name for messages)} for every field, from multipart, JSON base64 or a raw image body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return await _from_form(request, fields, limit)
    if kind == "application/json":
        return _from_json(await request.body(), fields)
    if kind.startswith("image/") or kind == "application/octet-stream":
        if len(fields) != 1:
            raise UploadError(f"this endpoint takes {len(fields)} photos: send multipart or JSON", 415)
        return {fields[0]: (await request.body(), "request body")}
    wanted = ", ".join(repr(f) for f in fields)
    raise UploadError(f"send multipart/form-data with field(s) {wanted}, JSON with base64 field(s) {wanted}"
                      + (", or the raw image bytes (Content-Type image/*)" if len(fields) == 1 else ""), 415)


async def _from_form(request: Request, fields: tuple[str, ...], limit: int) -> dict[str, tuple[bytes, str]]:
    async with request.form(max_part_size=limit, max_files=len(fields) + 2) as form:
        found = {}
        for field in fields:
            value = form.get(field)
            if not isinstance(value, UploadFile):
                raise UploadError(f"multipart field {field!r} with a photo file is missing")
            found[field] = (await value.read(), value.filename or field)
        return found


def _from_json(body: bytes, fields: tuple[str, ...]) -> dict[str, tuple[bytes, str]]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise UploadError("the body is not valid JSON") from None
    except RecursionError:
        raise UploadError("the JSON body is nested too deeply: send an object of base64 photo fields") from None
    if not isinstance(document, dict):
        raise UploadError("the JSON body must be an object")
    return {field: (_base64(document.get(field), field), field) for field in fields}


def _base64(value: Any, field: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise UploadError(f"JSON field {field!r} with a base64 photo is missing")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise UploadError(f"JSON field {field!r} is not valid base64") from None


class BodyTooLarge(Exception):
    """Raised from `receive` when the streamed body passes the limit."""


Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: 413 with a JSON message for a body above `limit` bytes; `shape(path, message)` gives the
    JSON body for a path (the peer APIs' own error shapes; default: {"detail": message})."""

    def __init__(self, app: Callable, limit: int, shape: Callable[[str, str], dict[str, Any]] | None = None) -> None:
        self.app, self.limit = app, limit
        self.shape = shape or (lambda _path, message: {"detail": message})

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(send, int(length), scope.get("path", ""))
            return
        received, started = 0, False

        async def limited() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLarge
            return message

        async def watched(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, watched)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, received, scope.get("path", ""))

    async def _refuse(self, send: Send, size: int, path: str) -> None:
        message = (f"request body too large: {size / MiB:.1f} MiB or more, the limit is {self.limit / MiB:.1f} MiB "
                   "(--max_upload_mb)")
        body = json.dumps(self.shape(path, message)).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
