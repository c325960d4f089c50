"""Bounds on request heads, which uvicorn's httptools protocol does not have: a size and a deadline.

uvicorn (0.54, httptools) closes a connection that stays idle `timeout_keep_alive` seconds *after
an answer*, but it accepts a request head of any size, and a connection that never completes its
first request head (idle from the start, or trickling header bytes) stays open for ever. This
protocol adds both bounds:

- *Size.* A head over `MAX_HEADER_BYTES` is answered 431 (JSON `{"message"}`) and the connection
  closed. The head is measured as parsed once complete (request target and header fields), and in
  bytes received while it is incomplete, so a head that never ends cannot grow the parser's buffer.
- *Time.* A connection whose next request head is not complete within `HEADER_TIMEOUT_S` of the
  connection being made or of the previous answer is closed, without an answer.

Bodies are bounded (in size and time) by `BoundedBodies`, once the head has been accepted.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# Per header field: ": " between name and value, CRLF after it (as on the wire).
_FIELD_OVERHEAD = 4


class _HeadTooLarge(Exception):
    """Raised from a parser callback: it stops the parser before the request reaches the app."""


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus the head bounds; `with_head_bounds` sets the class attributes."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 16 * 1024

    # Per-connection state of the head being received ("in head": before it is complete).
    _in_head = True
    _head_bytes = 0
    _head_too_large = False
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)  # checked below only if the head is still incomplete after it
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_header_bytes and not self.transport.is_closing():
            self._refuse_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_deadline()
        if self._parsed_head_bytes() > self.max_header_bytes:
            self._head_too_large = True
            raise _HeadTooLarge  # stops the parser; uvicorn logs a warning and calls `send_400_response`
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0  # what comes next is the next request's head
        if self.cycle is not None and self.cycle.response_complete and not self.transport.is_closing():
            self._arm_head_deadline()  # answered before its body was in: the deadline runs from now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_head and not self.transport.is_closing():
            self._arm_head_deadline()

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def _parsed_head_bytes(self) -> int:
        # uvicorn has collected the request target and the header fields by now.
        return len(self.url) + sum(len(name) + len(value) + _FIELD_OVERHEAD for name, value in self.headers)

    def _refuse_head(self) -> None:
        body = json.dumps({"message": f"request head over the limit of {self.max_header_bytes} bytes"}).encode()
        lines = [STATUS_LINE[431]]
        lines.extend(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers)
        lines.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                     % len(body))
        self.transport.write(b"".join(lines) + body)
        self.transport.close()

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()


def with_head_bounds(header_timeout_s: float, max_header_bytes: int) -> type[BoundedHeadProtocol]:
    """The protocol class to give uvicorn (`http=`), with its bounds."""
    return type("BoundedHeadProtocol", (BoundedHeadProtocol,),
                {"header_timeout_s": header_timeout_s, "max_header_bytes": max_header_bytes})
