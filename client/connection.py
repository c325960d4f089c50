"""A small kept-alive HTTP/1.1 connection for `ScoringClient`, on the standard library.

httpx spends about half a millisecond of Python per 30 KB request on loopback, as much as the
service's own work on a single image; this connection sends the request line, headers and body
in one `sendall` on a TCP_NODELAY socket (so neither Nagle nor delayed ACKs hold a part back) and
lets `http.client.HTTPResponse` parse the reply. One connection serves one thread's requests in turn.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

Verify = bool | str | os.PathLike[str] | ssl.SSLContext

# What a kept-alive connection the server has meanwhile closed looks like on the next request.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
          ssl.SSLEOFError, ssl.SSLZeroReturnError)


@dataclass(frozen=True)
class Response:
    status_code: int
    headers: http.client.HTTPMessage  # case-insensitive `get`
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (`ValueError` when it is not)."""
        return json.loads(self.content)


def ssl_context(verify: Verify) -> ssl.SSLContext:
    """The TLS context httpx would make of `verify`: system CAs, none (no checks), a CA file or folder, or as given."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is True:
        return ssl.create_default_context()
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    path = Path(verify)
    return ssl.create_default_context(capath=path) if path.is_dir() else ssl.create_default_context(cafile=path)


class Connection:
    """Requests to one base URL (http or https, optionally with a path prefix) over one kept-alive socket.

    A kept-alive connection may have been closed by the server while idle (uvicorn drops it after
    a few seconds); the request then fails on send or with no status line, and is sent once more on
    a fresh connection. That is safe only because every request its user makes is idempotent:
    `GET /v1/model`, `POST /v1/keys` (the key's id is its hash) and scoring posts, which change nothing.
    Any other failure closes the socket and propagates (`OSError`, including timeouts and TLS
    errors, or `http.client.HTTPException`).
    """

    def __init__(self, url: str, timeout: float, verify: Verify = True,
                 headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._tls = ssl_context(verify) if parts.scheme == "https" else None
        host = f"[{self._host}]" if ":" in self._host else self._host
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        self._head = "".join(f"{name}: {value}\r\n" for name, value in
                             {"Host": host, "User-Agent": "encrypted-scoring-client", **(headers or {})}.items())
        self._socket: socket.socket | None = None

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self._host, self._port), timeout=self._timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
        except BaseException:
            sock.close()
            raise
        return sock

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                while_waiting: Callable[[], object] | None = None) -> Response:
        """Send a request and read its response. `while_waiting` runs after the request is sent and
        before its response is read (the caller's work overlaps the server's), again if the request
        is sent once more on a fresh connection."""
        head = f"{method} {self._prefix}{path} HTTP/1.1\r\n{self._head}"
        head += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        if body or method not in ("GET", "HEAD"):
            head += f"Content-Length: {len(body)}\r\n"
        message = (head + "\r\n").encode("latin-1") + body
        reused = self._socket is not None
        try:
            return self._exchange(method, message, while_waiting)
        except _STALE:
            self.close()
            if not reused:
                raise
        return self._exchange(method, message, while_waiting)

    def _exchange(self, method: str, message: bytes, while_waiting: Callable[[], object] | None) -> Response:
        if self._socket is None:
            self._socket = self._connect()
        try:
            self._socket.sendall(message)
            if while_waiting is not None:
                while_waiting()
            response = http.client.HTTPResponse(self._socket, method=method)
            response.begin()
            content = response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return Response(response.status, response.headers, content)
