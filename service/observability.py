"""Metrics, request ids and access logs: what an operator sees of the service.

Prometheus metrics live in one registry per app (`GET /metrics`). Scoring runs in worker
processes, so what it costs there (engine time, key-cache hits and size) comes back with each
result and is recorded here, in the web process. Every request gets an id (the caller's
`x-request-id`, else a new one) that is echoed, with `x-ms-client-request-id`, as Azure ML's
inference server does, and that stands in the JSON access-log line.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.contract import ScoreOutcome
from service.native_scoring import NativeOutcome

log = logging.getLogger("service.access")

ROUTES = {"/", "/ready", "/score", "/metrics", "/swagger.json", "/docs",
          "/v1/model", "/v1/keys", "/v1/score", "/v1/score/batch"}
KEY_ROUTE = "/v1/keys/{key_id}"
# Refusals an operator alerts on: no or bad credentials, not allowed, too slow a client, over quota.
REFUSALS = {401, 403, 408, 429}
OTHER_IDENTITY = "other"
MAX_ID_LENGTH = 100
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)


def route_label(path: str) -> str:
    """A bounded label for a request path: the route's template, or `other`."""
    if path in ROUTES:
        return path
    return KEY_ROUTE if path.startswith("/v1/keys/") else "other"


class Metrics:
    def __init__(self, identities: Iterable[str] = ()) -> None:
        # Identities named in the settings get their own label; any other (Entra object ids) is `other`.
        self._identities = frozenset(identities)
        self.registry = CollectorRegistry()
        self.requests = Counter("scoring_http_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("scoring_http_request_duration_seconds", "HTTP request latency by route",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.engine_time = Histogram("scoring_engine_duration_seconds", "Homomorphic evaluation time per request",
                                     ["engine"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.key_cache = Counter("scoring_key_cache_lookups", "Public-key lookups by result (hit or miss)",
                                 ["result"], registry=self.registry)
        self.key_cache_bytes = Gauge("scoring_key_cache_bytes", "Prepared public keys held, per worker and engine",
                                     ["worker", "engine"], registry=self.registry)
        self.refusals = Counter("scoring_http_refusals", "Requests refused with 401, 403, 408 or 429",
                                ["status"], registry=self.registry)
        self.images = Counter("scoring_images", "Images scored, per identity (configured ones; else other)",
                              ["identity"], registry=self.registry)
        self.queue_depth = Gauge("scoring_queue_depth", "Scorings waiting for a worker", registry=self.registry)
        self.in_flight = Gauge("scoring_in_flight", "Scorings running in workers", registry=self.registry)
        # Labelled series by (metric, label values), each looked up with `labels()` once rather than
        # on every request; bounded, as label values are (routes, statuses, workers, known identities).
        self._series: dict[tuple[object, tuple[str, ...]], Counter | Gauge | Histogram] = {}

    def _labelled(self, metric: Counter | Gauge | Histogram, *labels: str) -> Any:
        """`metric.labels(*labels)`, cached."""
        key = (metric, labels)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = metric.labels(*labels)
        return found

    def record_request(self, route: str, status: int, seconds: float) -> None:
        self._labelled(self.requests, route, str(status)).inc()
        self._labelled(self.latency, route).observe(seconds)
        if status in REFUSALS:
            self._labelled(self.refusals, str(status)).inc()

    def track_runtime(self, queued: Callable[[], float], running: Callable[[], float]) -> None:
        self.queue_depth.set_function(queued)
        self.in_flight.set_function(running)

    def record_scoring(self, engine: str, outcome: ScoreOutcome | NativeOutcome) -> None:
        self._labelled(self.engine_time, engine).observe(outcome.engine_seconds)
        self._labelled(self.key_cache, "hit" if outcome.keys_cached else "miss").inc()
        self._labelled(self.key_cache_bytes, str(outcome.worker), engine).set(outcome.key_cache_bytes)

    def record_images(self, identity: str, images: int) -> None:
        self._labelled(self.images, identity if identity in self._identities else OTHER_IDENTITY).inc(images)


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
