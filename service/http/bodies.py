"""Request bodies under bounds, decided before a route sees them.

A route that calls `request.body()` has already buffered the whole body: by then a flood of large
uploads has cost its memory, and a client that trickles or stalls has held it for as long as it
liked. So this middleware decides from the headers alone first: a request on an open path (no
identity: health probes, the demo's files) may not have a body at all, so nobody unauthenticated
reserves a byte; an identified one's declared size is checked against the route's limit, then
reserved in a byte budget shared by every body the process holds, queued or in a worker
(`MAX_QUEUE_BYTES`), of which one identity may hold only its fair share (`service.fair_share`,
`MAX_IDENTITY_SHARE`). It then reads the body itself under time bounds (`BODY_TIMEOUT_S` without a
byte, and a floor on the average rate, `BODY_MIN_BYTES_PER_S`), checks a v1 body's header as
soon as its first bytes arrive (what that check returns is the route's `body_head(request)`: the
header is parsed once), and only then runs the route with the body replayed. Answers given before
the body is read close the connection, so the unread rest is never parsed.

While the route runs, the middleware watches the connection: a client that goes away cancels its
request, so work still waiting for a worker is dropped instead of scored for nobody. A client
that goes away is an INFO line and status 499 in the metrics and access log, not an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge, RequestTimeout, ScoringError
from service.fair_share import FairShare
from service.http.responses import error_response

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; recorded, never sent
_HEAD_KEY = "body_head"


@dataclass(frozen=True)
class BodyRule:
    """What a route accepts: at most `limit` bytes; `check_head(first bytes, total size)` raises a
    `ScoringError` when the first `head_size` bytes show the body cannot be valid, and otherwise
    returns the parsed head, which the route reads with `body_head`."""

    limit: int
    head_size: int = 0
    check_head: Callable[[bytes, int], Any] | None = None


class BodyMetrics:
    """What the bounds did, in the app's Prometheus registry."""

    def __init__(self, registry: CollectorRegistry, budget: FairShare) -> None:
        self.reserved = Gauge("scoring_body_bytes_reserved", "Request-body bytes reserved (MAX_QUEUE_BYTES)",
                              registry=registry)
        self.reserved.set_function(lambda: budget.held)
        self.refused = Counter("scoring_bodies_refused", "Requests refused by the body bounds, by reason",
                               ["reason"], registry=registry)
        self.client_gone = Counter("scoring_client_gone", "Requests whose client went away, by stage",
                                   ["stage"], registry=registry)


class _ClientGone(Exception):
    def __init__(self, received: int) -> None:
        super().__init__(received)
        self.received = received


def _declared_size(scope: Scope) -> tuple[bool, bytes | None]:
    """(whether the request has a body, its Content-Length header if any)."""
    length, chunked = None, False
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            chunked = True
    return chunked or (length is not None and length != b"0"), length


class BoundedBodies:
    """ASGI middleware: the bounds above, for every request that has a body."""

    def __init__(self, app: ASGIApp, *, default_limit: int, rule_for: Callable[[str], BodyRule | None],
                 budget: FairShare, metrics: BodyMetrics, stall_timeout_s: float, min_bytes_per_s: int) -> None:
        self.app, self.default_limit, self.rule_for = app, default_limit, rule_for
        self.budget, self.metrics = budget, metrics
        self.stall_timeout_s, self.min_bytes_per_s = stall_timeout_s, min_bytes_per_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        has_body, declared = _declared_size(scope) if scope["type"] == "http" else (False, None)
        if not has_body:
            await self.app(scope, receive, send)
            return
        identity = scope.get("state", {}).get("identity")
        if identity is None:  # an open path (health, demo files, open docs): nothing there reads a body
            await self._refuse(scope, receive, send, PayloadTooLarge(f"{scope['path']} takes no request body"),
                               "open_path")
            return
        rule = self.rule_for(scope["path"]) or BodyRule(self.default_limit)
        limit = min(rule.limit, self.budget.limit)
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, receive, send, PayloadTooLarge(f"request body over the limit of {limit} bytes"),
                               "too_large")
            return
        size = int(declared) if declared is not None else None
        reservation = limit if size is None else size  # chunked: the most it may grow to
        owner = identity.name
        if not self.budget.take(owner, reservation):
            self.metrics.refused.labels("queue_bytes").inc()
            mine = self.budget.held_by(owner)
            whose = f"{mine} of them yours (your share: {self.budget.allowance(owner)})" if mine else "none yours"
            await error_response(503, f"busy: {self.budget.held} bytes of requests are already waiting, {whose}; "
                                      "retry later", close=True)(scope, receive, send)
            return
        try:
            try:
                body = await self._read(scope, receive, rule, size, limit)
            except _ClientGone as gone:
                self.metrics.client_gone.labels("body").inc()
                log.info("client went away after %d of %s body bytes of %s %s; nothing was scored",
                         gone.received, size if size is not None else "?", scope["method"], scope["path"])
                await self._record_gone(scope, receive, send)
                return
            except ScoringError as exc:
                reason = {408: "body_timeout", 413: "too_large"}.get(exc.status_code, "malformed_head")
                await self._refuse(scope, receive, send, exc, reason)
                return
            await self._run_watched(scope, receive, send, body)
        finally:
            self.budget.give_back(owner, reservation)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, error: ScoringError, reason: str) -> None:
        self.metrics.refused.labels(reason).inc()
        if error.status_code == 408:
            log.info("%s %s: %s", scope["method"], scope["path"], error.message)
        await error_response(error.status_code, error.message, close=True)(scope, receive, send)

    async def _read(self, scope: Scope, receive: Receive, rule: BodyRule, size: int | None, limit: int) -> bytearray:
        """The whole body, within the time bounds; the head is checked as soon as it is in.

        Read into one bytearray (of the declared size when there is one) that the routes use as it
        is: no list of chunks to join, so a body costs its size once, not twice, at its end.
        """
        expected = size if size is not None else limit
        deadline = time.monotonic() + self.stall_timeout_s + expected / self.min_bytes_per_s
        body = bytearray(size) if size is not None else bytearray()
        received = 0
        head_checked = rule.check_head is None
        while True:
            wait = min(self.stall_timeout_s, deadline - time.monotonic())
            try:
                if wait <= 0:
                    raise TimeoutError
                async with asyncio.timeout(wait):  # a timer, where wait_for would also make a task
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"request body too slow: {received} of {expected} bytes received; a body must not pause "
                    f"for {self.stall_timeout_s:g} s and must arrive at {self.min_bytes_per_s} bytes/s or "
                    "faster") from None
            if message["type"] == "http.disconnect":
                raise _ClientGone(received)
            chunk = message.get("body", b"")
            if received + len(chunk) > (size if size is not None else limit):
                raise PayloadTooLarge(f"request body over the limit of {limit} bytes")
            if size is None:
                body += chunk
            else:
                body[received : received + len(chunk)] = chunk
            received += len(chunk)
            more = message.get("more_body", False)
            # A chunked body declares no size: its head is checked once its size is known, at the end.
            if not head_checked and (not more or (size is not None and received >= rule.head_size)):
                head = rule.check_head(bytes(body[: rule.head_size]), size if size is not None else received)
                scope.setdefault("state", {})[_HEAD_KEY] = head
                head_checked = True
            if not more:
                return body

    async def _run_watched(self, scope: Scope, receive: Receive, send: Send, body: bytearray) -> None:
        """Run the route with `body`, in this task; cancel it if the client goes away before it is answered.

        The route runs here rather than in a task of its own: one task fewer per request, and the
        route starts without waiting for the event loop's next turn."""
        delivered, answered = False, False
        gone = asyncio.Event()
        route = asyncio.current_task()
        assert route is not None  # an ASGI app runs in a task

        async def replay() -> Message:
            nonlocal delivered, body
            if not delivered:
                delivered, message = True, {"type": "http.request", "body": body, "more_body": False}
                body = bytearray()  # the route holds it now; do not keep a second reference
                return message
            await gone.wait()
            return {"type": "http.disconnect"}

        async def tracked_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        def client_left(watch: asyncio.Future) -> None:
            if not answered and not watch.cancelled():
                gone.set()
                route.cancel()

        # With the body read, the server's receive() returns only once the client has gone away
        # (or the answer is complete).
        watch = asyncio.ensure_future(receive())
        watch.add_done_callback(client_left)
        try:
            await self.app(scope, replay, tracked_send)
            return
        except asyncio.CancelledError:
            if not gone.is_set():
                raise  # cancelled from outside (the server stopping): not ours to absorb
            route.uncancel()
        finally:
            watch.remove_done_callback(client_left)
            watch.cancel()
        self.metrics.client_gone.labels("waiting").inc()
        log.info("client went away before its answer to %s %s; its request was dropped", scope["method"],
                 scope["path"])
        await self._record_gone(scope, receive, send)

    @staticmethod
    async def _record_gone(scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 499 for the access log and metrics; the server drops it, the client being gone."""
        await error_response(CLIENT_CLOSED_REQUEST, "client closed the request")(scope, receive, send)


def body_head(request: Request) -> Any:
    """What the route's `BodyRule.check_head` returned for this request's body; None if it had no body."""
    return request.scope.get("state", {}).get(_HEAD_KEY)


async def read_body(request: Request) -> bytearray:
    """The body as `BoundedBodies` read it, without the copy `request.body()` would make (it joins
    chunks into new bytes); for routes whose bodies are large."""
    message = await request.receive()
    return message["body"]
