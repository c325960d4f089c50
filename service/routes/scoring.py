"""The one scoring step both protocols' handlers share: quota, a worker, timing, headers, metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from service.http.auth import Identity
from service.http.metering import ImageQuota
from service.metrics import Metrics
from service.workers.outcome import ScoringOutcome
from service.workers.pool import WorkerPool


class Scoring:
    def __init__(self, pool: WorkerPool, quota: ImageQuota, metrics: Metrics) -> None:
        self._pool, self._quota, self._metrics = pool, quota, metrics

    async def __call__(self, identity: Identity, images: int, engine: str, function: Callable[..., ScoringOutcome],
                       *args: Any) -> tuple[Any, dict[str, str]]:
        """Run `function(*args)` in a worker for `identity`, charging `images` once the request has a
        worker's slot (so a 503 busy or a 504 in the queue costs nothing, and whatever the worker
        answers, 422 included, costs the images), and record it; returns the reply and the timing
        headers (as Azure ML's inference server: `x-ms-run-fn-exec-ms`, the time spent running the
        scoring function; `x-engine-ms`, the homomorphic evaluation's)."""
        started = time.perf_counter()
        outcome = await self._pool.run(identity.name, function, *args,
                                       admitted=lambda: self._quota.charge(identity, images))
        headers = {"x-ms-run-fn-exec-ms": f"{(time.perf_counter() - started) * 1000:.3f}",
                   "x-engine-ms": f"{outcome.engine_seconds * 1000:.3f}"}
        self._metrics.record_scoring(engine, outcome)
        self._metrics.record_images(identity.name, images)
        return outcome.reply, headers
