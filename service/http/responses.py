"""Error answers: always JSON `{"message": ...}`, with the headers their status calls for."""

from __future__ import annotations

from fastapi.responses import JSONResponse

RETRY_AFTER_S = 5


def error_response(status_code: int, message: str, *, close: bool = False) -> JSONResponse:
    """`{"message"}` with `Retry-After` on 503; `close` ends the connection after the answer, for
    answers sent before the request body was read (the unread rest must not be parsed as a request)."""
    headers = {}
    if status_code == 503:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    if close:
        headers["Connection"] = "close"
    return JSONResponse({"message": message}, status_code=status_code, headers=headers or None)
