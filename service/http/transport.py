"""HTTP Strict Transport Security where the service itself serves HTTPS (`TLS_CERT_FILE`).

A browser that has seen the header once goes to https:// by itself for a year, so it never again
sends an API key (the demo page's, say) over plain HTTP first. The app adds this layer only when
uvicorn serves TLS: over plain HTTP the header means nothing to browsers, and where a proxy
terminates TLS (Caddy, the Ingress), the proxy sends it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# One year, this host only: includeSubDomains would bind every name under the parent domain, which the
# service does not know it owns; no preload (a browser-vendor list that is slow to leave).
HSTS = (b"strict-transport-security", b"max-age=31536000")


class StrictTransportSecurity:
    """ASGI middleware: `Strict-Transport-Security` on every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), HSTS]}
            await send(message)

        await self.app(scope, receive, send_with_hsts)
