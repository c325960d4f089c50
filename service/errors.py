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
    """The body is not JSON, or a field cannot be read at all (a malformed `conn_str`)."""

    status_code = 400


class Forbidden(ScoringError):
    status_code = 403  # an identity not allowed to batch, or a storage account outside the allowlist


class NotFound(ScoringError):
    """No such key, container or file; another identity's key is "not found" too, so ids reveal nothing."""

    status_code = 404


class RequestTimeout(ScoringError):
    status_code = 408  # a body that pauses or trickles past its time bounds


class PayloadTooLarge(ScoringError):
    """A body or a key blob over its size bound, refused before it is read or inflated."""

    status_code = 413


class Unprocessable(ScoringError):
    status_code = 422  # well-formed JSON or bytes that are not a valid request, key or ciphertext


class Conflict(ScoringError):
    """A state that a retry cannot change until the caller acts (the key limit of an identity)."""

    status_code = 409


class Gone(ScoringError):
    status_code = 410  # a public key past KEY_TTL_DAYS: upload it again


class StorageUnavailable(ScoringError):
    """The key store (Blob Storage) cannot be reached or answered an unexpected status."""

    status_code = 502


class ServiceUnavailable(ScoringError):
    status_code = 503  # busy (queues full), or a worker died during the request; retry later


class ScoringTimeout(ScoringError):
    """Not scored within SCORING_TIMEOUT_MS, waiting for a worker included."""

    status_code = 504


class ModelUnavailable(ServiceUnavailable):
    """No model is loaded (still starting, or it failed to load)."""


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
