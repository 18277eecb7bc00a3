"""Kubernetes API errors as typed exceptions carrying the server's own message."""

from __future__ import annotations

import json
from typing import Any


class KubeError(Exception):
    """An API request failed; ``status`` is the HTTP code, ``reason`` the Status reason."""

    def __init__(self, status: int, message: str, *, reason: str = "",
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.details = details or {}

    def __str__(self) -> str:
        return self.message


class BadRequest(KubeError):
    pass


class Unauthorized(KubeError):
    pass


class Forbidden(KubeError):
    pass


class NotFound(KubeError):
    pass


class AlreadyExists(KubeError):
    pass


class Conflict(KubeError):
    """A stale resourceVersion, or a server-side apply field conflict."""


class Gone(KubeError):
    """The requested resourceVersion is too old (watch history compacted)."""


class Invalid(KubeError):
    """The object failed validation (422); ``causes`` lists the fields."""

    @property
    def causes(self) -> list[dict[str, Any]]:
        causes = self.details.get("causes") or []
        return [c for c in causes if isinstance(c, dict)]


class UnsupportedMediaType(KubeError):
    pass


class TooManyRequests(KubeError):
    pass


class ServerError(KubeError):
    pass


class TransportError(KubeError):
    """The request never got an HTTP answer (connection refused, reset, timeout)."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message, reason="TransportError")


_BY_STATUS: dict[int, type[KubeError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 410: Gone,
    415: UnsupportedMediaType, 422: Invalid, 429: TooManyRequests,
}


def from_status(status: int, body: bytes | str) -> KubeError:
    """The exception for an HTTP error answer, using the Status object when there is one."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    message, reason = text.strip() or f"HTTP {status}", ""
    details: dict[str, Any] = {}
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("kind") == "Status":
        message = str(parsed.get("message") or message)
        reason = str(parsed.get("reason") or "")
        found = parsed.get("details")
        details = found if isinstance(found, dict) else {}
    if status == 409:
        cls: type[KubeError] = AlreadyExists if reason == "AlreadyExists" else Conflict
    elif status >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(status, KubeError)
    return cls(status, message, reason=reason, details=details)
