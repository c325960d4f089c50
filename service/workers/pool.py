"""The pool of worker processes that run scorings off the web server's event loop, within bounds.

Neither SEAL binding releases the GIL, EIServer holds it for seconds per request and its native
code aborts the process on bad input, so scoring runs in `WORKER_COUNT` worker processes
(`service.workers.channel`), each set up once by the app's `WorkerProgram` and given one call at a
time. At most `MAX_CONCURRENT` scorings run, at most `MAX_QUEUE` wait (503 beyond), and none is
waited for longer than `SCORING_TIMEOUT_MS` (504); waiting identities are served in turn, each within
its share of the queue (`service.workers.turns`). A worker that dies fails only the call it was
running (503); a new worker takes its place and the web process keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any, TypeVar

from service.errors import ModelUnavailable, ScoringTimeout, ServiceUnavailable
from service.fair_share import FairShare
from service.settings import Settings
from service.workers import deadline as worker_deadline
from service.workers.channel import Worker, WorkerDied, WorkerProgram
from service.workers.turns import Turns

log = logging.getLogger(__name__)

WORKER_START_TIMEOUT_S = 300
# An idle worker exits as soon as its channel closes; only one still loading the model needs killing.
WORKER_STOP_GRACE_S = 30

T = TypeVar("T")


class PoolState(str, Enum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"


class WorkerPool:
    def __init__(self, settings: Settings, program: WorkerProgram) -> None:
        self._settings, self._program = settings, program
        self._workers: list[Worker] = []
        # Each worker is given one scoring at a time, so only the request it runs fails if it dies.
        # The worker idle the shortest time goes first (last in, first out): one client's requests in
        # a row stay in one worker while the others keep their idle-time work done, instead of each
        # worker refilling its pool beside the next one's scoring on the same cores.
        self._idle: asyncio.Queue[Worker] = asyncio.LifoQueue()
        slots = min(settings.max_concurrent or settings.worker_count, settings.worker_count)
        self._turns = Turns(slots, FairShare(settings.max_queue, settings.max_identity_share, least=1))
        self._replacing: set[asyncio.Task] = set()
        self.running = 0
        self.state = PoolState.STARTING
        self.failure: str | None = None
        self.setup: Any = None  # what the first worker's `program.setup` returned (all return the same)

    @property
    def queued(self) -> int:
        """Scorings waiting for a worker."""
        return self._turns.queued

    @property
    def worker_count(self) -> int:
        return self._settings.worker_count

    async def start(self) -> None:
        """Start every worker and wait until each is set up; never raises."""
        count = self._settings.worker_count
        self._workers = [await Worker.spawn(self._program, self._settings) for _ in range(count)]
        try:
            async with asyncio.timeout(WORKER_START_TIMEOUT_S):
                reports = await asyncio.gather(*(worker.report for worker in self._workers))
        except TimeoutError:
            self._fail(f"the scoring workers did not start within {WORKER_START_TIMEOUT_S} s; see the log above")
            return
        except WorkerDied:
            self._fail("a scoring worker exited while loading the model; see the log above")
            return
        errors = [report.error for report in reports if report.error]
        if errors:
            self._fail(errors[0])
            return
        self.setup = reports[0].setup
        for worker in self._workers:
            self._idle.put_nowait(worker)
        self.state = PoolState.READY
        log.info("ready: %d scoring worker(s), pids %s", count, sorted(report.pid for report in reports))

    def _fail(self, message: str) -> None:
        self.state, self.failure = PoolState.FAILED, message
        log.error("not ready: %s", message)

    def require_ready(self) -> None:
        """Raise 503 with the reason unless every worker is set up."""
        if self.state is not PoolState.READY:
            raise ModelUnavailable(self.failure or "the model is still loading")

    async def run(self, owner: str, function: Callable[..., T], *args: Any,
                  admitted: Callable[[], Awaitable[None]] | None = None) -> T:
        """`function(*args)` in an idle worker for identity `owner`, within the queue and time bounds.

        `admitted()` runs once the request has its slot, before the worker is given the call (the
        quota's charge: a request refused as busy, or timed out in the queue, has cost nothing); if it
        raises, the slot is given back and nothing runs."""
        self.require_ready()
        timeout_ms = self._settings.scoring_timeout_ms
        deadline = time.monotonic() + timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                await self._turns.acquire(owner)
                if admitted is not None:
                    try:
                        await admitted()
                    except BaseException:
                        self._turns.release(owner)
                        raise
                return await self._run_and_release(owner, worker_deadline.call_before, (deadline, function, *args))
        except TimeoutError:
            raise ScoringTimeout(f"scoring did not finish within {timeout_ms} ms") from None

    async def _run_and_release(self, owner: str, function: Callable[..., T], args: tuple) -> T:
        """Run one scoring on an idle worker; the worker and the slot are given back when it is done,
        even if the caller gave up waiting."""
        self.running += 1
        try:
            worker = await self._idle.get()
            try:
                answer = worker.call(function, args)
            except BaseException:
                self._idle.put_nowait(worker)
                raise
        except BaseException:
            self._release(owner)
            raise
        answer.add_done_callback(lambda done: self._finished(owner, worker, done))
        try:
            return await asyncio.shield(answer)
        except WorkerDied:
            raise ServiceUnavailable(
                "the scoring worker stopped while processing this request and has been replaced; "
                "if it happens again, the request or the public keys are malformed") from None

    def _finished(self, owner: str, worker: Worker, answer: asyncio.Future) -> None:
        if isinstance(answer.exception(), WorkerDied):  # an answer future is never cancelled
            log.error("scoring worker %d died; starting a new one", worker.pid)
            replacing = asyncio.ensure_future(self._replace(worker))
            self._replacing.add(replacing)
            replacing.add_done_callback(self._replacing.discard)
        else:
            self._idle.put_nowait(worker)
        self._release(owner)

    def _release(self, owner: str) -> None:
        self.running -= 1
        self._turns.release(owner)

    async def _replace(self, dead: Worker) -> None:
        """Reap a dead worker and start another in its place; requests wait for an idle worker meanwhile.

        A replacement that does not start is stopped and given back dead: the next request on it
        fails with 503 and tries another (as a model that fails to load answers 503 with the reason).
        """
        await dead.stop(grace_s=0)
        worker = await Worker.spawn(self._program, self._settings)
        self._workers[self._workers.index(dead)] = worker
        try:
            async with asyncio.timeout(WORKER_START_TIMEOUT_S):
                await worker.report
        except TimeoutError:
            log.error("a new scoring worker did not start within %d s", WORKER_START_TIMEOUT_S)
            await worker.stop(grace_s=0)
        except WorkerDied:
            log.error("a new scoring worker exited while loading the model")
            await worker.stop(grace_s=0)
        self._idle.put_nowait(worker)

    async def stop(self) -> None:
        """Let in-flight scorings finish (every worker comes back idle, a dead one replaced), then
        stop the workers."""
        if self.state is PoolState.READY:
            for _ in self._workers:
                await self._idle.get()
        await asyncio.gather(*(worker.stop(WORKER_STOP_GRACE_S) for worker in self._workers))
