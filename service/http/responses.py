"""Error answers: always JSON `{"message": ...}`, with the headers their status calls for."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import JSONResponse

RETRY_AFTER_S = 5


def error_response(status_code: int, message: str, *, close: bool = False, retry_after: int | None = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """`{"message"}` with `Retry-After` on 503 (and wherever `retry_after` is given, e.g. 429);
    `close` ends the connection after the answer, for answers sent before the request body was read
    (the unread rest must not be parsed as a request)."""
    all_headers = dict(headers or {})
    if retry_after is None and status_code == 503:
        retry_after = RETRY_AFTER_S
    if retry_after is not None:
        all_headers["Retry-After"] = str(retry_after)
    if close:
        all_headers["Connection"] = "close"
    return JSONResponse({"message": message}, status_code=status_code, headers=all_headers or None)
