"""Worker processes that run the scoring contract off the web server's event loop, within bounds.

Neither SEAL binding releases the GIL, EIServer holds it for seconds per request and its native
code aborts the process on bad input, so scoring runs in `WORKER_COUNT` worker processes, each
initialised once with `contract.init_worker` and given one request at a time. At most
`MAX_CONCURRENT` scorings run, at most `MAX_QUEUE` wait (503 beyond), and none is waited for longer
than `SCORING_TIMEOUT_MS` (504). A worker that dies fails only the request it was running (503);
a new worker takes its place and the web process keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

from service import contract, worker_deadline
from service.contract import ScoreOutcome, SeedScoreRequest
from service.errors import ModelUnavailable, ScoringTimeout, ServiceUnavailable
from service.settings import Settings

log = logging.getLogger(__name__)

WORKER_START_TIMEOUT_S = 300

T = TypeVar("T")


class RuntimeState(str, Enum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"


class ScoringRuntime:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # spawn, not fork: the web process runs threads (event loop, storage clients) that fork would copy mid-state.
        self._context = multiprocessing.get_context("spawn")
        # One single-process pool per worker, each given one scoring at a time: a worker that dies
        # breaks its own pool only, so only the request it was running fails.
        self._workers: list[ProcessPoolExecutor] = []
        self._idle: asyncio.Queue[int] = asyncio.Queue()
        self._slots = asyncio.Semaphore(min(settings.max_concurrent or settings.worker_count, settings.worker_count))
        self.queued = 0
        self.running = 0
        self.state = RuntimeState.STARTING
        self.failure: str | None = None
        self.native_description: dict | None = None

    @property
    def worker_count(self) -> int:
        return self._settings.worker_count

    def _new_worker(self) -> tuple[ProcessPoolExecutor, Future]:
        """A single-process pool, started now (not on the first request), and its start-up report."""
        worker = ProcessPoolExecutor(max_workers=1, mp_context=self._context,
                                     initializer=contract.init_worker, initargs=(self._settings,))
        return worker, worker.submit(contract.worker_report)

    async def start(self) -> None:
        """Start every worker and wait until each has loaded the model; never raises."""
        count = self._settings.worker_count
        started = [self._new_worker() for _ in range(count)]
        self._workers = [worker for worker, _ in started]
        try:
            async with asyncio.timeout(WORKER_START_TIMEOUT_S):
                reports = await asyncio.gather(*(asyncio.wrap_future(report) for _, report in started))
        except TimeoutError:
            self._fail(f"the scoring workers did not start within {WORKER_START_TIMEOUT_S} s; see the log above")
            return
        except BrokenProcessPool:
            self._fail("a scoring worker exited while loading the model; see the log above")
            return
        errors = [report.error for report in reports if report.error]
        if errors:
            self._fail(errors[0])
            return
        self.native_description = reports[0].native_description
        for index in range(count):
            self._idle.put_nowait(index)
        self.state = RuntimeState.READY
        log.info("ready: %d scoring worker(s), pids %s", count, sorted(report.pid for report in reports))

    def _fail(self, message: str) -> None:
        self.state, self.failure = RuntimeState.FAILED, message
        log.error("not ready: %s", message)

    async def score(self, request: SeedScoreRequest) -> ScoreOutcome:
        return await self.run(contract.score_measured, request)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in an idle worker, within the queue and time bounds."""
        if self.state is not RuntimeState.READY:
            raise ModelUnavailable(self.failure or "the model is still loading")
        if self.queued >= self._settings.max_queue and self._slots.locked():
            raise ServiceUnavailable(f"busy: {self.queued} requests are already waiting for a scoring worker")
        timeout_ms = self._settings.scoring_timeout_ms
        deadline = time.monotonic() + timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                self.queued += 1
                try:
                    await self._slots.acquire()
                finally:
                    self.queued -= 1
                return await self._run_and_release(worker_deadline.call_before, (deadline, function, *args))
        except TimeoutError:
            raise ScoringTimeout(f"scoring did not finish within {timeout_ms} ms") from None

    async def _run_and_release(self, function: Callable[..., T], args: tuple) -> T:
        """Run one scoring on an idle worker; the worker and the slot are given back when it is done,
        even if the caller gave up waiting."""
        self.running += 1
        try:
            index = await self._idle.get()
            worker = self._workers[index]
            future = asyncio.get_running_loop().run_in_executor(worker, function, *args)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda done: self._finished(index, worker, done))
        try:
            return await asyncio.shield(future)
        except BrokenProcessPool:
            raise ServiceUnavailable(
                "the scoring worker stopped while processing this request and has been replaced; "
                "if it happens again, the request or the public keys are malformed") from None

    def _finished(self, index: int, worker: ProcessPoolExecutor, done: asyncio.Future) -> None:
        if not done.cancelled() and isinstance(done.exception(), BrokenProcessPool):
            log.error("scoring worker %d died; starting a new one", index)
            self._workers[index], _ = self._new_worker()
            worker.shutdown(wait=False, cancel_futures=True)
        self._idle.put_nowait(index)
        self._release()

    def _release(self) -> None:
        self.running -= 1
        self._slots.release()

    async def stop(self) -> None:
        """Let in-flight scorings finish, then stop the workers."""
        workers, self._workers = self._workers, []
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, worker.shutdown, True) for worker in workers))
