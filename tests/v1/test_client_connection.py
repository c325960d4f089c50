"""`client.connection`: one write per request, and one retry only when a kept-alive connection went stale."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable

import pytest

from client.connection import Connection

Handler = Callable[["Server", socket.socket, int], None]


def _read_request(conn: socket.socket) -> bytes:
    """One request's head and body, read by its Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length")), 0)
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def _reply(conn: socket.socket, body: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


class Server:
    """A loopback server for `connections` connections in turn, each served by
    handler(server, connection, its number)."""

    def __init__(self, handler: Handler, connections: int) -> None:
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/prefix/"
        self._thread = threading.Thread(target=self._serve, args=(handler, connections), daemon=True)
        self._thread.start()

    def _serve(self, handler: Handler, connections: int) -> None:
        with self._listener:
            for number in range(connections):
                conn, _ = self._listener.accept()
                with conn:
                    handler(self, conn, number)

    def record(self, conn: socket.socket) -> bytes:
        request = _read_request(conn)
        self.requests.append(request)
        return request

    def finish(self) -> list[bytes]:
        """The requests seen, once every connection is served."""
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()
        return self.requests


def test_a_connection_is_kept_alive_and_the_request_is_one_message() -> None:
    def keep_alive(server: Server, conn: socket.socket, _: int) -> None:
        for _ in range(2):
            _reply(conn, server.record(conn)[-3:])

    server = Server(keep_alive, connections=1)
    connection = Connection(server.url, timeout=10, headers={"Authorization": "Bearer k"})
    response = connection.request("POST", "/v1/score", b"abc", {"Content-Type": "application/octet-stream"})
    assert response.content == b"abc"
    assert connection.request("GET", "/v1/model").status_code == 200
    connection.close()
    first, second = server.finish()
    assert first.startswith(b"POST /prefix/v1/score HTTP/1.1\r\n") and first.endswith(b"\r\n\r\nabc")
    assert b"\r\nAuthorization: Bearer k\r\n" in first and b"\r\nContent-Length: 3\r\n" in first
    assert second.startswith(b"GET /prefix/v1/model HTTP/1.1\r\n") and b"Content-Length" not in second


def test_a_kept_alive_connection_the_server_closed_is_replaced_once() -> None:
    def one_then_close(server: Server, conn: socket.socket, number: int) -> None:
        server.record(conn)
        _reply(conn, b"%d" % number)

    server = Server(one_then_close, connections=2)
    connection = Connection(server.url, timeout=10)
    assert connection.request("POST", "/v1/score", b"x").content == b"0"
    assert connection.request("POST", "/v1/score", b"y").content == b"1"  # sent again on connection 1
    connection.close()
    assert [request[-1:] for request in server.finish()] == [b"x", b"y"]


def test_a_fresh_connection_is_not_retried() -> None:
    def hang_up(server: Server, conn: socket.socket, _: int) -> None:
        server.record(conn)

    server = Server(hang_up, connections=1)
    connection = Connection(server.url, timeout=10)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        connection.request("POST", "/v1/score", b"x")
    connection.close()
    assert len(server.finish()) == 1


def test_while_waiting_runs_between_the_request_sent_and_the_response_read() -> None:
    """The server answers only once `while_waiting` has run, and `while_waiting` sees the request arrived."""
    waited = threading.Event()

    def answer_after_the_wait(server: Server, conn: socket.socket, _: int) -> None:
        server.record(conn)
        assert waited.wait(timeout=30)
        _reply(conn, b"ok")

    server = Server(answer_after_the_wait, connections=1)
    connection = Connection(server.url, timeout=30)
    seen: list[int] = []

    def while_waiting() -> None:
        for _ in range(3000):  # the request is on its way: the server records it without our help
            if server.requests:
                break
            threading.Event().wait(0.01)
        seen.append(len(server.requests))
        waited.set()

    assert connection.request("POST", "/v1/score", b"x", while_waiting=while_waiting).content == b"ok"
    connection.close()
    assert seen == [1] and len(server.finish()) == 1


def _one_answer(raw: bytes, close: bool = True) -> Handler:
    """A handler that answers one request with `raw` bytes (in two writes), then hangs up if `close`."""
    def answer(server: Server, conn: socket.socket, _: int) -> None:
        server.record(conn)
        middle = len(raw) // 2
        conn.sendall(raw[:middle])
        conn.sendall(raw[middle:])
        if not close:
            server.record(conn)  # the client's next request on the same connection
            _reply(conn, b"again")
    return answer


def test_responses_are_read_by_length_by_chunks_or_to_the_close() -> None:
    cases = [
        (b"HTTP/1.1 201 Created\r\nX-Engine-Ms: 1.5\r\nvary: a\r\nVary: b\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n", b"hello"),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello", b"hello"),
    ]
    for raw, body in cases:
        server = Server(_one_answer(raw), connections=1)
        connection = Connection(server.url, timeout=10)
        response = connection.request("POST", "/v1/score", b"x")
        assert response.content == body
        if response.status_code == 201:
            assert response.headers["x-engine-ms"] == response.headers.get("X-ENGINE-MS") == "1.5"
            assert response.headers["vary"] == "a, b" and "Vary" in response.headers
        connection.close()
        server.finish()


def test_a_response_that_asks_for_close_closes_and_a_kept_alive_one_does_not() -> None:
    server = Server(_one_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close=False), connections=1)
    connection = Connection(server.url, timeout=10)
    assert connection.request("POST", "/v1/score", b"x").content == b"ok"
    assert connection.request("POST", "/v1/score", b"y").content == b"again"  # the same connection
    connection.close()
    assert len(server.finish()) == 2
    server = Server(_one_answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"), connections=1)
    connection = Connection(server.url, timeout=10)
    assert connection.request("POST", "/v1/score", b"x").content == b"ok"
    assert connection._socket is None  # noqa: SLF001 - the server said it closes
    assert len(server.finish()) == 1


@pytest.mark.parametrize("raw, error", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", http.client.IncompleteRead),
    (b"SMTP ready\r\n\r\n", http.client.HTTPException),
])
def test_a_truncated_or_malformed_response_is_an_http_error(raw: bytes, error: type[Exception]) -> None:
    server = Server(_one_answer(raw), connections=1)
    connection = Connection(server.url, timeout=10)
    with pytest.raises(error):
        connection.request("POST", "/v1/score", b"x")
    assert connection._socket is None  # noqa: SLF001
    server.finish()
