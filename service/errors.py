"""Errors that carry their HTTP status, so every layer can fail with a message and never a trace.

They are raised in worker processes too, so each keeps the plain one-argument constructor that
pickling needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class ScoringError(Exception):
    """Base class: `message` is safe to return to the client (no credentials, no internals)."""

    status_code = 500
    retry_after: int | None = None  # seconds for a Retry-After header, where the status calls for one

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ScoringError):
    status_code = 400


class Forbidden(ScoringError):
    status_code = 403


class NotFound(ScoringError):
    status_code = 404


class RequestTimeout(ScoringError):
    status_code = 408


class PayloadTooLarge(ScoringError):
    status_code = 413


class Unprocessable(ScoringError):
    status_code = 422


class StorageUnavailable(ScoringError):
    status_code = 502


class ServiceUnavailable(ScoringError):
    status_code = 503


class ScoringTimeout(ScoringError):
    status_code = 504


def describe_validation_errors(errors: Iterable[Mapping[str, Any]]) -> ScoringError:
    """Turn pydantic/FastAPI validation errors into one readable error.

    Body that is not JSON at all is a 400; JSON with missing, ill-typed or invalid fields is a 422.
    """
    errors = list(errors)
    if any(error.get("type") == "json_invalid" for error in errors):
        return BadRequest("request body is not valid JSON")
    parts = []
    for error in errors[:5]:
        location = ".".join(str(item) for item in error.get("loc", ()) if item != "body") or "body"
        # Our own validators' messages are complete sentences; drop pydantic's "Value error, " prefix.
        message = str(error.get("ctx", {}).get("error") or error.get("msg", "invalid"))
        parts.append(f"{location}: {message}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return Unprocessable("invalid request: " + "; ".join(parts))


class ModelUnavailable(ServiceUnavailable):
    """No model is loaded (still starting, or it failed to load)."""


class Conflict(ScoringError):
    status_code = 409


class Gone(ScoringError):
    status_code = 410
