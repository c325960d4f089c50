"""When the caller of a scoring gives up, in the worker process that runs it.

The web process answers 504 after `SCORING_TIMEOUT_MS`; a scoring already handed to a worker cannot
be interrupted without killing the worker, but it can stop before its expensive step (the
homomorphic evaluation, after the keys are fetched) once nobody waits for it. Deadlines are
`time.monotonic()` values, and CLOCK_MONOTONIC is the same clock in every process of the machine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from service.errors import ScoringTimeout

log = logging.getLogger(__name__)

T = TypeVar("T")

_deadline: float | None = None


def call_before(deadline: float, function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in the worker, with `deadline` known to `check()`."""
    global _deadline
    _deadline = deadline
    try:
        return function(*args)
    finally:
        _deadline = None


def check() -> None:
    """Raise `ScoringTimeout` if the request has already been answered 504: skip what follows."""
    if _deadline is not None and time.monotonic() > _deadline:
        log.info("scoring dropped before evaluation: its request was already answered 504")
        raise ScoringTimeout("scoring dropped: its request had already timed out")
