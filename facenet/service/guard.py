"""Cross-site protection of the service, keys or not: an ASGI middleware that refuses DNS-rebinding requests (a Host
header naming another host while the service listens on loopback: 421), refuses writes sent by another origin's
page (POST, PUT, PATCH or DELETE whose Origin is not the service's own, its Host or a proxy's X-Forwarded-Host,
or whose Sec-Fetch-Site says cross-site: 403; a browser cannot add X-Forwarded-Host to a cross-origin request
without a CORS preflight, which the service never grants), and adds security headers to every answer (a self-only
Content-Security-Policy, no framing, nosniff)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
PAGE_POLICY = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
               "connect-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; "
               "form-action 'self'; frame-ancestors 'none'")
"""The Content-Security-Policy of the page and the API: only the service's own files run and load."""
DOCS_POLICY = "frame-ancestors 'none'; object-src 'none'; base-uri 'none'"
"""/docs and /redoc (Swagger UI and ReDoc start from inline scripts): no framing, nothing else restricted."""
DOCS_PATHS = ("/docs", "/redoc")
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]

Send = Callable[[dict[str, Any]], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """True for localhost and every loopback IP (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hostname(host_header: str) -> str:
    """The host of a Host header (no port; IPv6 without brackets), lower case."""
    host_header = host_header.strip().lower()
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


class OriginGuard:
    """ASGI middleware: the Host and Origin checks and the security headers (see the module docstring).
    `host`: the address the service listens on (serve --host); None: no Host check (an app not bound yet)."""

    def __init__(self, app: Callable, host: str | None = None) -> None:
        self.app, self.host = app, host
        self.check_host = host is not None and is_loopback(host)

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        policy = DOCS_POLICY if scope.get("path", "").startswith(DOCS_PATHS) else PAGE_POLICY
        extra = [*SECURITY_HEADERS, (b"content-security-policy", policy.encode())]

        async def secured(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        problem = self._problem(scope.get("method", "GET"), headers)
        if problem is None:
            await self.app(scope, receive, secured)
            return
        status, message = problem
        body = json.dumps({"detail": message}).encode()
        await secured({"type": "http.response.start", "status": status,
                       "headers": [(b"content-type", b"application/json"),
                                   (b"content-length", str(len(body)).encode())]})
        await secured({"type": "http.response.body", "body": body})

    def _problem(self, method: str, headers: dict[str, str]) -> tuple[int, str] | None:
        """(status, one line) when the request must be refused, else None."""
        host_header = headers.get("host")
        if self.check_host and host_header is not None:
            name = _hostname(host_header)
            if not (is_loopback(name) or name == self.host.strip("[]").lower()):  # type: ignore[union-attr]
                return 421, (f"refused Host {host_header!r}: this service listens on {self.host} and answers only "
                             "to a loopback name (localhost, 127.0.0.1, [::1]) (DNS rebinding)")
        if method.upper() in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        own = (host_header, headers.get("x-forwarded-host", "").split(",")[0] or None)  # behind a reverse proxy too
        if origin is not None and not any(_same_origin(origin, host) for host in own):
            return 403, (f"refused a cross-origin {method.upper()} from {origin!r}: only the service's own page "
                         "may change the gallery")
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return 403, (f"refused a {headers['sec-fetch-site']} {method.upper()} (Sec-Fetch-Site): only the "
                         "service's own page may change the gallery")
        return None


def _same_origin(origin: str, host_header: str | None) -> bool:
    """True when `origin` (scheme://host[:port]) is the service's own: http(s) with the request's Host."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and host_header is not None
            and parts.netloc.lower() == host_header.strip().lower())
