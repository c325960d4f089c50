"""Requests whose body is announced but never sent, over a raw socket: a server that answers them
has decided without reading the body (one that waited for it would time out instead)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

ANSWER_TIMEOUT_S = 60


def send_without_body(url: str, method: str, path: str, headers: dict[str, str], chunked: bool = False) -> bytes:
    """Announce a 1 GB body (or an endless chunked one), send only its first bytes, return the raw answer."""
    parts = urlsplit(url)
    framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(10**9)}
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", "Content-Type: application/octet-stream",
             *(f"{name}: {value}" for name, value in {**framing, **headers}.items())]
    first_bytes = b"1000\r\n" + b"x" * 16 if chunked else b"x" * 16
    with socket.create_connection((parts.hostname, parts.port), timeout=ANSWER_TIMEOUT_S) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + first_bytes)
        answer = b""
        while b"\r\n\r\n" not in answer or not _complete(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])
