"""OpenAPI descriptions the routes share."""

from __future__ import annotations

from typing import Any


def image_body(*fields: str) -> dict[str, Any]:
    """OpenAPI description of a photo body: multipart files, or base64 strings in JSON (or raw image bytes)."""
    binary = {"type": "object", "required": list(fields),
              "properties": {f: {"type": "string", "format": "binary"} for f in fields}}
    text = {"type": "object", "required": list(fields),
            "properties": {f: {"type": "string", "description": "base64 or a data: URI"} for f in fields}}
    content = {"multipart/form-data": {"schema": binary}, "application/json": {"schema": text}}
    if len(fields) == 1:
        content["image/jpeg"] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}
