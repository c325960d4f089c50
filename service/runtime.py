"""Worker processes that run the scoring contract off the web server's event loop.

EIServer holds the GIL for seconds per request and its native code aborts the process on bad
input, so scoring runs in a pool of `WORKER_COUNT` processes, each initialised once with
`contract.init_worker`. A worker that dies fails only the requests it was running; the pool is
replaced and the web process keeps serving.
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
from service.contract import SeedScoreRequest
from service.errors import ModelUnavailable, Unprocessable
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

    async def score(self, request: SeedScoreRequest) -> list[str]:
        if self.state is not RuntimeState.READY or self._pool is None:
            raise ModelUnavailable(self.failure or "the model is still loading")
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, contract.score, request)
        except BrokenProcessPool:
            self._replace(pool)
            raise Unprocessable(
                "the scoring worker stopped while processing this request; "
                "the ciphertext or the public keys are probably malformed") from None

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
