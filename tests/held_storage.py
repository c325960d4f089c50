"""`HeldStorage`: a blob endpoint on loopback that holds the service's storage requests until the test
releases them, so a scoring stays in flight (in a worker, on its key lookup) for exactly as long as a
test needs, whatever the speed of the machine or of the engine.

Every request line is recorded, so a test also sees which key ids the workers looked up, and waits
for the lookups it needs (`wait_for`) instead of for an assumed time.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

from bench.processes import azurite_connection_string

# Bound on waiting for a lookup on a loaded machine; never a measure of speed.
WAIT_S = 300


class HeldStorage:
    """Holds every request until `release()`; then answers 404 BlobNotFound, or, given the `upstream`
    Azurite connection string, relays each request there. `hold()` holds the requests that arrive
    from then on again, until the next `release()`. As a context manager it closes on exit (which
    releases every request still held)."""

    def __init__(self, upstream: str | None = None) -> None:
        endpoint = urlsplit(upstream.split("BlobEndpoint=")[1]) if upstream else None
        self.upstream = (endpoint.hostname, endpoint.port) if endpoint else None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.request_lines: list[str] = []
        self.relayed_bytes = 0  # bytes of upstream's answers relayed to the service, headers included
        self.seen = threading.Condition()
        self._gates = [threading.Event()]  # the last one is the gate new requests wait on
        threading.Thread(target=self._serve, daemon=True).start()

    def connection_string(self) -> str:
        return azurite_connection_string(self.port)

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        try:
            with connection, connection.makefile("rb") as reader:
                while line := reader.readline():
                    with self.seen:
                        self.request_lines.append(line.decode("latin-1").strip())
                        gate = self._gates[-1]
                        self.seen.notify_all()
                    head = [line]
                    while (header := reader.readline()) not in (b"\r\n", b""):
                        if not header.lower().startswith(b"connection:"):
                            head.append(header)
                    gate.wait()  # released by `release()` or `close()`; a daemon thread, never waited for
                    if self.upstream is None:
                        connection.sendall(b"HTTP/1.1 404 The specified blob does not exist.\r\n"
                                           b"x-ms-error-code: BlobNotFound\r\nContent-Length: 0\r\n\r\n")
                        continue
                    with socket.create_connection(self.upstream, timeout=WAIT_S) as upstream:  # HEAD/GET only
                        upstream.sendall(b"".join(head) + b"Connection: close\r\n\r\n")
                        while chunk := upstream.recv(65536):
                            with self.seen:  # counted before the service can have read it
                                self.relayed_bytes += len(chunk)
                            connection.sendall(chunk)
                    return
        except OSError:  # the service side went away (a killed worker, a stopped service)
            return

    def count(self, text: str) -> int:
        """How many request lines so far contain `text` (a key id, say)."""
        with self.seen:
            return sum(text in line for line in self.request_lines)

    def wait_for(self, text: str, count: int = 1) -> None:
        """Wait until `count` request lines in all contain `text`; fail after WAIT_S."""
        with self.seen:
            reached = self.seen.wait_for(lambda: sum(text in line for line in self.request_lines) >= count, WAIT_S)
            assert reached, (f"storage never saw {count} request(s) naming {text} within {WAIT_S} s; "
                             f"it saw {self.request_lines}")

    def hold(self) -> None:
        """Hold the requests that arrive from now on, until the next `release()`."""
        with self.seen:
            if self._gates[-1].is_set():
                self._gates.append(threading.Event())

    def release(self) -> None:
        """Let every held request (and the ones to come, until `hold()`) through."""
        with self.seen:
            self._gates[-1].set()

    def close(self) -> None:
        with self.seen:
            for gate in self._gates:
                gate.set()
        self.listener.close()

    def __enter__(self) -> HeldStorage:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
