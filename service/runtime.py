"""Worker processes that run the scoring contract off the web server's event loop, within bounds.

Neither SEAL binding releases the GIL, EIServer holds it for seconds per request and its native
code aborts the process on bad input, so scoring runs in a pool of `WORKER_COUNT` processes, each
initialised once with `contract.init_worker`. At most `MAX_CONCURRENT` scorings run, at most
`MAX_QUEUE` wait (503 beyond), and none is waited for longer than `SCORING_TIMEOUT_MS` (504). A
worker that dies fails the requests the pool was running with a 503; the pool is replaced and the
web process keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import queue
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from enum import Enum
from multiprocessing.queues import Queue

from service import contract
from service.contract import ScoreOutcome, SeedScoreRequest
from service.errors import ModelUnavailable, ScoringTimeout, ServiceUnavailable
from service.settings import Settings

log = logging.getLogger(__name__)

WORKER_START_TIMEOUT_S = 300


class RuntimeState(str, Enum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"


class ScoringRuntime:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # spawn, not fork: the web process runs threads (event loop, storage clients) that fork would copy mid-state.
        self._context = multiprocessing.get_context("spawn")
        self._pool: ProcessPoolExecutor | None = None
        self._slots = asyncio.Semaphore(settings.max_concurrent or settings.worker_count)
        self.queued = 0
        self.running = 0
        self.state = RuntimeState.STARTING
        self.failure: str | None = None

    @property
    def worker_count(self) -> int:
        return self._settings.worker_count

    def _new_pool(self) -> tuple[ProcessPoolExecutor, Queue]:
        started: Queue = self._context.Queue()
        pool = ProcessPoolExecutor(max_workers=self._settings.worker_count, mp_context=self._context,
                                   initializer=contract.init_worker, initargs=(self._settings, started))
        return pool, started

    async def start(self) -> None:
        """Start every worker and wait until each has loaded the model; never raises."""
        loop = asyncio.get_running_loop()
        count = self._settings.worker_count
        try:
            self._pool, started = self._new_pool()
            # The pool spawns a process for each task submitted while none is idle: n tasks, n workers.
            spawned = [loop.run_in_executor(self._pool, os.getpid) for _ in range(count)]
            reports = [await loop.run_in_executor(None, started.get, True, WORKER_START_TIMEOUT_S)
                       for _ in range(count)]
            await asyncio.gather(*spawned)
        except queue.Empty:
            self._fail(f"the scoring workers did not start within {WORKER_START_TIMEOUT_S} s")
            return
        except BrokenProcessPool:
            self._fail("a scoring worker exited while loading the model; see the log above")
            return
        errors = [error for _, error in reports if error]
        if errors:
            self._fail(errors[0])
            return
        self.state = RuntimeState.READY
        log.info("ready: %d scoring worker(s), pids %s", count, sorted(pid for pid, _ in reports))

    def _fail(self, message: str) -> None:
        self.state, self.failure = RuntimeState.FAILED, message
        log.error("not ready: %s", message)

    async def score(self, request: SeedScoreRequest) -> ScoreOutcome:
        if self.state is not RuntimeState.READY or self._pool is None:
            raise ModelUnavailable(self.failure or "the model is still loading")
        if self.queued >= self._settings.max_queue and self._slots.locked():
            raise ServiceUnavailable(f"busy: {self.queued} requests are already waiting for a scoring worker")
        timeout_ms = self._settings.scoring_timeout_ms
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                self.queued += 1
                try:
                    await self._slots.acquire()
                finally:
                    self.queued -= 1
                return await self._run_and_release(request)
        except TimeoutError:
            raise ScoringTimeout(f"scoring did not finish within {timeout_ms} ms") from None

    async def _run_and_release(self, request: SeedScoreRequest) -> ScoreOutcome:
        """Run one scoring; its slot is released when the worker is done, even if the caller gave up."""
        pool = self._pool
        self.running += 1
        try:
            future = asyncio.get_running_loop().run_in_executor(pool, contract.score_measured, request)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _: self._release())
        try:
            return await asyncio.shield(future)
        except BrokenProcessPool:
            self._replace(pool)
            raise ServiceUnavailable(
                "the scoring worker stopped while processing this request and has been replaced; "
                "if it happens again, the ciphertext or the public keys are malformed") from None

    def _release(self) -> None:
        self.running -= 1
        self._slots.release()

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:
            log.error("a scoring worker died; starting a new pool")
            self._pool, _ = self._new_pool()
            broken.shutdown(wait=False, cancel_futures=True)

    async def stop(self) -> None:
        """Let in-flight scorings finish, then stop the workers."""
        if self._pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)
            self._pool = None
