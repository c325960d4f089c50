"""A small kept-alive HTTP/1.1 connection for `ScoringClient`: a socket and httptools' parser.

A general HTTP client spends as much Python per 30 KB request on loopback as the service's own
work on a single image; this connection sends the request line, headers and body in one `sendall`
on a TCP_NODELAY socket (so neither Nagle nor delayed ACKs hold a part back) and parses the reply
with httptools (llhttp, the parser uvicorn uses), not `http.client`, whose header parsing goes
through the `email` package. One connection serves one thread's requests in turn.
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

import httptools

Verify = bool | str | os.PathLike[str] | ssl.SSLContext

# What a kept-alive connection the server has meanwhile closed looks like on the next request.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
          ssl.SSLEOFError, ssl.SSLZeroReturnError)


class Headers(dict[str, str]):
    """A response's headers by lower-case name (a repeated header's values joined by ", "); lookups
    ignore case."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(name.lower(), default)


@dataclass(frozen=True)
class Response:
    status_code: int
    headers: Headers
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
        if method == "HEAD":
            raise ValueError("HEAD requests are not supported: their responses are read by their headers' length")
        if body or method != "GET":
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
            response, keep_alive = _read_response(self._socket)
        except BaseException:
            self.close()
            raise
        if not keep_alive:
            self.close()
        return response


class _ResponseParts:
    """httptools' callbacks: the parts of one response as they are parsed."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers = Headers()
        self.body: list[bytes] = []
        self.headers_done = self.complete = self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # read here: the parser resets for a next message


def _read_response(sock: socket.socket) -> tuple[Response, bool]:
    """One response (never to a HEAD request: its length is not what its headers say) and whether the
    connection stays open. A connection closed before any byte is `RemoteDisconnected` (stale, see
    `Connection`); a response that ends early or does not parse is an `http.client.HTTPException`."""
    parts = _ResponseParts()
    received = False
    while not parts.complete:
        data = sock.recv(1 << 16)
        if not data:
            if not received:
                raise http.client.RemoteDisconnected("the server closed the connection without a response")
            if parts.headers_done and "content-length" not in parts.headers \
                    and "chunked" not in parts.headers.get("transfer-encoding", "").lower():
                break  # a body that ends where the connection does
            raise http.client.IncompleteRead(b"".join(parts.body))
        received = True
        try:
            parts.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise http.client.HTTPException(f"malformed response: {exc}") from None
    return Response(parts.parser.get_status_code(), parts.headers, b"".join(parts.body)), parts.keep_alive
