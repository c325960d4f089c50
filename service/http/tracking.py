"""Request ids and the access log: one line and one metrics record per request.

Every request gets an id (the caller's `x-request-id`, else a new one) that is echoed, with
`x-ms-client-request-id`, as Azure ML's inference server does, and that stands in the access-log line.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics, route_label

log = logging.getLogger("service.access")

MAX_ID_LENGTH = 100


def _request_ids(scope: Scope) -> tuple[str, str]:
    """The caller's `x-request-id` and `x-ms-client-request-id` (empty if absent), in one pass."""
    request_id = client_request_id = b""
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            request_id = value
        elif key == b"x-ms-client-request-id":
            client_request_id = value
    return (request_id[:MAX_ID_LENGTH].decode("latin-1"), client_request_id[:MAX_ID_LENGTH].decode("latin-1"))


class RequestTracking:
    """ASGI middleware: request id in and out, one JSON access-log line and metrics per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, client_request_id = _request_ids(scope)
        request_id = request_id or str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        route = route_label(scope["path"])
        started = time.perf_counter()
        status = 500

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                if client_request_id:
                    headers.append((b"x-ms-client-request-id", client_request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_ids)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.record_request(route, status, elapsed)
            if log.isEnabledFor(logging.INFO):  # the line's fields are not built for a level that drops it
                log.info("%s %s %d", scope["method"], scope["path"], status, extra={
                    "request_id": request_id, "client_request_id": client_request_id or None,
                    "method": scope["method"], "path": scope["path"], "status": status,
                    "duration_ms": round(elapsed * 1000, 3)})
