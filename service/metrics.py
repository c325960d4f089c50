"""The service's Prometheus metrics, in one registry per app: all of it on METRICS_PORT (for a
scraper, off the public network), all but the series labelled with an identity on `GET /metrics`
(any authenticated caller would otherwise see who else uses the service, and how much).

Scoring runs in worker processes, so what it costs there (engine time, key-cache hits and size)
comes back with each outcome and is recorded here, in the web process. Request counts and
latencies come from `service.http.tracking`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Metric

from service.v1.protocol import KEYS_ROUTE, ROUND_ROUTE_TEMPLATES, SCORING_ROUTES, parse_v1_path, round_of
from service.workers.outcome import ScoringOutcome

ROUTES = {"/", "/ready", "/score", "/metrics", "/swagger.json", "/docs", "/v1/models",
          "/v1/model", "/v1/keys", "/v1/score", "/v1/score/batch"}
MODEL_ROUTES = {"", KEYS_ROUTE, *SCORING_ROUTES}  # below /v1/models/{name}[/versions/{version}]; "": the model
KEY_ROUTE = "/keys/{key_id}"
# Refusals an operator alerts on: no or bad credentials, not allowed, too slow a client, over quota.
REFUSALS = {401, 403, 408, 429}
OTHER_IDENTITY = "other"
IDENTITY_LABEL = "identity"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)


def route_label(path: str) -> str:
    """A bounded label for a request path: the route's template, or `other`."""
    if path in ROUTES:
        return path
    parsed = parse_v1_path(path)
    if parsed is None:
        return "other"
    prefix = ("/v1" if parsed.name is None else "/v1/models/{name}" if parsed.version is None
              else "/v1/models/{name}/versions/{version}")
    if parsed.name is not None and parsed.route in MODEL_ROUTES:
        return prefix + (f"/{parsed.route}" if parsed.route else "")
    round_route = round_of(parsed.route)
    if parsed.name is not None and round_route is not None:
        return f"{prefix}/{ROUND_ROUTE_TEMPLATES[round_route.kind]}"
    if parsed.route.startswith(f"{KEYS_ROUTE}/") and parsed.route.count("/") == 1:
        return prefix + KEY_ROUTE
    return "other"


class WithoutIdentities:
    """A view of a registry without its samples labelled `identity` (their metric's HELP and TYPE stay),
    for `generate_latest`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():  # new objects at each collection: ours to change
            family.samples = [sample for sample in family.samples if IDENTITY_LABEL not in sample.labels]
            yield family


class Metrics:
    def __init__(self, identities: Iterable[str] = ()) -> None:
        # Identities named in the settings get their own label; any other (Entra object ids) is `other`.
        self._identities = frozenset(identities)
        self.registry = CollectorRegistry()
        self.without_identities = WithoutIdentities(self.registry)
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
                              [IDENTITY_LABEL], registry=self.registry)
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

    def track_pool(self, queued: Callable[[], float], running: Callable[[], float]) -> None:
        self.queue_depth.set_function(queued)
        self.in_flight.set_function(running)

    def record_scoring(self, engine: str, outcome: ScoringOutcome) -> None:
        self._labelled(self.engine_time, engine).observe(outcome.engine_seconds)
        self._labelled(self.key_cache, "hit" if outcome.keys_cached else "miss").inc()
        self._labelled(self.key_cache_bytes, str(outcome.worker), engine).set(outcome.key_cache_bytes)

    def record_images(self, identity: str, images: int) -> None:
        self._labelled(self.images, identity if identity in self._identities else OTHER_IDENTITY).inc(images)
