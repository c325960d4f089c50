"""Metering in images per identity: RATE_LIMIT in the `limits` notation, counted in images.

A linear model's scores give the model away to whoever may query enough chosen inputs (about one
per feature plus one), so what an identity may spend is counted in what it learns: images, not
requests. A single image costs 1, a batch what its header says. Counters live in memory, or in
Redis (`RATE_LIMIT_STORAGE_URI=redis://...`) so that every replica draws from the same quota.
The sliding-window counter keeps two integers per window and identity whatever the cost, where a
moving window would keep one entry per image. Its bound, exactly: the weighted count it tests is at
least the current clock-aligned window's own count, so each such window admits at most the limit's
amount N; an interval of the window's length straddles two of them, so it may see up to 2N, and m
windows in a row at most (m + 1) N. `python -m bench.quota_window`: at `100/minute`, a caller that
waits until 1.5 s before a window ends gets 198 in its best 60 s, and 1,000 in 10 windows.

Images are charged once a request has its worker slot (`Scoring`): a request refused as busy or
timed out in the queue costs nothing, one the worker answers costs its images, 422 included.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Forbidden, ScoringError, ServiceUnavailable
from service.http.auth import Identity
from service.http.responses import error_response
from service.settings import Settings


class TooManyImages(ScoringError):
    """429: the identity's image quota is spent; `retry_after` is when the window frees enough."""

    status_code = 429

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ImageQuota:
    """Charges images to identities; raises `TooManyImages` when a limit would be passed."""

    def __init__(self, settings: Settings) -> None:
        self._limits: list[RateLimitItem] = parse_many(settings.rate_limit) if settings.rate_limit else []
        storage = storage_from_string(settings.rate_limit_storage_uri, wrap_exceptions=True)
        self._limiter = SlidingWindowCounterRateLimiter(storage)

    async def require_available(self, identity: Identity) -> None:
        """Refuse (429) before the body is read when the identity has not one image left: an
        identity over its quota cannot make the service receive and hold its bodies."""
        await self._run(self._test, identity.namespace, 1)

    async def charge(self, identity: Identity, images: int) -> None:
        """Count `images` against the identity's limits."""
        await self._run(self._charge, identity.namespace, images)

    async def _run(self, step: Callable[[str, int], None], who: str, images: int) -> None:
        """`step(who, images)` off the event loop; fails closed (503) if the counters are unreachable."""
        if not self._limits:
            return
        try:
            await run_in_threadpool(step, who, images)
        except StorageError:
            raise ServiceUnavailable("the quota counters cannot be reached; try again later") from None

    def _test(self, who: str, images: int) -> None:
        # Every limit first, so a request refused by the daily limit does not eat the hourly one.
        for limit in self._limits:
            if not self._limiter.test(limit, who, cost=images):
                self._refuse(limit, who, images)

    def _charge(self, who: str, images: int) -> None:
        self._test(who, images)
        for limit in self._limits:
            if not self._limiter.hit(limit, who, cost=images):  # another replica got there first
                self._refuse(limit, who, images)

    def _refuse(self, limit: RateLimitItem, who: str, images: int) -> None:
        if images > limit.amount:
            raise TooManyImages(f"{images} images exceed the quota of {limit} images; send fewer per request",
                                retry_after=limit.get_expiry())
        reset_at, remaining = self._limiter.get_window_stats(limit, who)
        wait = max(1, math.ceil(reset_at - time.time()))
        raise TooManyImages(f"image quota of {limit} used up ({remaining} left, {images} asked); "
                            f"retry in {wait} s", retry_after=wait)


def require_batch_permission(identity: Identity) -> None:
    """Batches are for identities in BATCH_IDENTITIES: one batch of chosen images reveals the model."""
    if not identity.may_batch:
        raise Forbidden(f"identity '{identity.name}' may not use batch requests (BATCH_IDENTITIES)")


class Admission:
    """ASGI middleware, between authentication and the body bounds: a scoring request whose identity
    may not batch, or has not one image of quota left, is refused from its headers alone, so it
    cannot make the service receive and hold its body. The route charges the images it declares."""

    def __init__(self, app: ASGIApp, quota: ImageQuota, scoring: Callable[[str], str | None]) -> None:
        """`scoring(path)`: "single" or "batch" for a scoring path, None for any other."""
        self.app, self.quota, self.scoring = app, quota, scoring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = self.scoring(scope["path"]) if scope["type"] == "http" else None
        if kind is not None:
            identity: Identity = scope["state"]["identity"]
            try:
                if kind == "batch":
                    require_batch_permission(identity)
                await self.quota.require_available(identity)
            except ScoringError as error:
                response = error_response(error.status_code, error.message, close=True,
                                          retry_after=error.retry_after)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
