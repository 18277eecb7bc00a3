"""API errors as the Kubernetes ``Status`` objects real clients parse."""

from __future__ import annotations

from typing import Any

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
}


class ApiError(Exception):
    def __init__(self, code: int, message: str, *, reason: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # "" is the real server's unknown reason, which its Status omits (an error it
        # did not classify); None takes the code's usual reason.
        self.reason = REASONS.get(code, "Unknown") if reason is None else reason
        self.details = details

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if not self.reason:
            del out["reason"]
        if self.details:
            out["details"] = self.details
        return out


def not_found(qualified: str, name: str, *, group: str = "", kind: str = "") -> ApiError:
    return ApiError(404, f'{qualified} "{name}" not found',
                    details={"name": name, "group": group, "kind": kind or qualified})


def already_exists(qualified: str, name: str, *, group: str = "", kind: str = "") -> ApiError:
    return ApiError(409, f'{qualified} "{name}" already exists', reason="AlreadyExists",
                    details={"name": name, "group": group, "kind": kind or qualified})


def conflict(qualified: str, name: str, *, group: str = "", kind: str = "") -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        details={"name": name, "group": group, "kind": kind or qualified},
    )


def invalid(qualified_kind: str, name: str, causes: list[tuple[str, str, str]],
            *, group: str = "", kind: str = "") -> ApiError:
    """422 with causes given as (type, field, message)."""
    texts = [f"{field}: {message}" if field else message for _, field, message in causes]
    body = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return ApiError(
        422, f'{qualified_kind} "{name}" is invalid: {body}',
        details={"name": name, "group": group, "kind": kind,
                 "causes": [{"reason": t, "message": m, "field": f} for t, f, m in causes]},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)
