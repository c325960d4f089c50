"""What one scoring produced and what producing it cost, as a worker answers it.

Both protocols' scorings end the same way: the public keys are looked up, the scoring is dropped
if its request was already answered 504 (`deadline.check`), and the homomorphic evaluation is
timed. The web process records the cost in its metrics (`service.metrics`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.workers import deadline


@dataclass(frozen=True)
class ScoringOutcome:
    reply: Any  # what the route sends: base64 ciphertexts (`/score`) or a binary reply (`/v1`)
    engine_seconds: float
    keys_cached: bool
    key_cache_bytes: int
    worker: int


def evaluate_timed(evaluate: Callable[[], Any], *, keys_cached: bool,
                   key_cache_bytes: Callable[[], int]) -> ScoringOutcome:
    """`evaluate()` timed, unless nobody waits for its answer any more."""
    deadline.check()
    started = time.perf_counter()
    reply = evaluate()
    return ScoringOutcome(reply=reply, engine_seconds=time.perf_counter() - started, keys_cached=keys_cached,
                          key_cache_bytes=key_cache_bytes(), worker=os.getpid())
