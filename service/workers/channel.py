"""One worker process and the web process's channel to it.

A worker is a spawned process joined to the web process by a Unix socket pair. The event loop
writes calls to the socket and reads the answers itself (`Worker` is an asyncio protocol), so a
call costs a socket write and read on each side and no thread hand-off (`ProcessPoolExecutor`
passes each call through two threads and two queues).

What a worker runs is given by the app as a `WorkerProgram`; this module knows no protocol.
A message is its length (8 bytes) then a pickle (protocol 5). A worker takes one call at a time,
`(function, args)`, and answers `(True, result)` or `(False, exception)`; its first message is its
start-up report. A worker that dies (killed, or aborted by native code) closes its end of the
socket, which fails the call it was running with `WorkerDied`; a worker ends when the web
process closes the channel.
"""

from __future__ import annotations

import asyncio
import io
import logging
import multiprocessing
import os
import pickle
import select
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any, cast

from service.errors import ScoringError
from service.settings import Settings

log = logging.getLogger(__name__)

_LENGTH = 8
_READ_SIZE = 256 * 1024  # a single-image answer is ~37 KB: one read
# spawn, not fork: the web process runs threads (event loop, storage clients) that fork would copy mid-state.
_CONTEXT = multiprocessing.get_context("spawn")


class WorkerDied(Exception):
    """The worker process ended before it answered."""


@dataclass(frozen=True)
class WorkerProgram:
    """What a worker process runs: `setup(settings)` once at its start (whatever it returns goes to
    the web process in the start-up report), then the calls it is sent, and `idle_step()` while no
    call waits (one small step of preparatory work; whether more remain). Both must be module-level
    functions: they are pickled by name into the spawned process."""

    setup: Callable[[Settings], Any]
    idle_step: Callable[[], bool]


@dataclass(frozen=True)
class WorkerReport:
    """A worker's first message: its pid, and what `setup` returned or why it failed."""

    pid: int
    error: str | None
    setup: Any


def _frame(message: Any) -> memoryview:
    """`message` pickled after its length, in one buffer: one write."""
    buffer = io.BytesIO()
    buffer.seek(_LENGTH)
    pickle.dump(message, buffer, protocol=5)
    frame = buffer.getbuffer()
    frame[:_LENGTH] = (len(frame) - _LENGTH).to_bytes(_LENGTH, "big")
    return frame


class Worker(asyncio.BufferedProtocol):
    """The web process's end of one worker. `call` sends a call; the event loop reads the answer
    into `_buffer` as it arrives and resolves the call's future."""

    def __init__(self, process: BaseProcess) -> None:
        self.process = process
        self.pid = process.pid
        self._stopped = False
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future = asyncio.get_running_loop().create_future()
        self.report: asyncio.Future[WorkerReport] = self._answer  # the first message
        self._buffer = bytearray(_READ_SIZE)
        self._filled = 0

    @classmethod
    async def spawn(cls, program: WorkerProgram, settings: Settings) -> Worker:
        """Start a worker process; it runs `program.setup` and sends `report`."""
        ours, theirs = socket.socketpair()
        process = _CONTEXT.Process(target=serve, args=(theirs, program, settings), name="scoring-worker",
                                   daemon=True)
        process.start()
        theirs.close()  # the worker holds the only other copy: its end closes when it dies
        worker = cls(process)
        await asyncio.get_running_loop().connect_accepted_socket(lambda: worker, ours)
        return worker

    def call(self, function: Callable[..., Any], args: tuple) -> asyncio.Future:
        """`function(*args)` in the worker; the future holds its result, its exception, or `WorkerDied`."""
        frame = _frame((function, args))  # raises before anything is sent if the call does not pickle
        self._answer = answer = asyncio.get_running_loop().create_future()
        if self._transport is None or self._transport.is_closing():
            answer.set_exception(WorkerDied())
        else:
            self._transport.write(frame)
        return answer

    async def stop(self, grace_s: float) -> None:
        """Close the channel (the worker returns at its end), reap the process; kill it after `grace_s`.
        A stopped worker answers every call with `WorkerDied`."""
        if self._stopped:
            return
        self._stopped = True
        if self._transport is not None:
            self._transport.close()
        if not await _ended(self.process, grace_s):
            self.process.kill()
            await _ended(self.process, None)
        self.process.join()
        self.process.close()

    # asyncio.BufferedProtocol: the event loop calls these.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buffer)[self._filled:]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        if self._filled < _LENGTH:
            return
        end = _LENGTH + int.from_bytes(self._buffer[:_LENGTH], "big")
        if end > len(self._buffer):  # a larger answer (a batch): read the rest in place
            larger = bytearray(end)
            larger[:self._filled] = memoryview(self._buffer)[:self._filled]
            self._buffer = larger
        if self._filled < end:
            return
        try:
            ok, value = pickle.loads(memoryview(self._buffer)[_LENGTH:end])
        except Exception as exc:  # noqa: BLE001 - e.g. an exception type that does not rebuild: a 500, the worker is fine
            ok, value = False, RuntimeError(f"the scoring worker's answer could not be read: {exc!r}")
        self._filled = 0
        if len(self._buffer) > _READ_SIZE:
            self._buffer = bytearray(_READ_SIZE)
        if self._answer.done():  # the start-up report of a worker given up on
            return
        if ok:
            self._answer.set_result(value)
        else:
            self._answer.set_exception(value)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._answer.done():
            self._answer.set_exception(WorkerDied())


async def _ended(process: BaseProcess, timeout_s: float | None) -> bool:
    """Wait (on the event loop, no thread) until `process` has exited, at most `timeout_s`."""
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    loop.add_reader(process.sentinel, lambda: ended.done() or ended.set_result(None))
    try:
        async with asyncio.timeout(timeout_s):
            await ended
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(process.sentinel)


def serve(channel: socket.socket, program: WorkerProgram, settings: Settings) -> None:
    """A worker process's life: set up, report, then answer one call per message until the
    web process closes the channel."""
    # Ctrl-C signals the whole process group; the web process finishes the scorings in flight, then stops its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel.sendall(_frame((True, _set_up(program, settings))))
    with channel, channel.makefile("rb") as reader:
        while True:
            _work_until_called(channel, program.idle_step)
            if not (length := reader.read(_LENGTH)):
                return
            function, args = pickle.loads(reader.read(int.from_bytes(length, "big")))
            try:
                answer = (True, function(*args))
            except Exception as exc:  # noqa: BLE001 - every failure is an answer; a ScoringError is a status
                if not isinstance(exc, ScoringError):
                    log.exception("scoring failed")  # the web process answers 500 without the details
                answer = (False, exc)
            channel.sendall(_answer_frame(answer))


def _set_up(program: WorkerProgram, settings: Settings) -> WorkerReport:
    """Run `program.setup`; a failure is reported rather than raised: the web process states it, and
    answers 503 with it."""
    try:
        return WorkerReport(pid=os.getpid(), error=None, setup=program.setup(settings))
    except Exception as exc:  # noqa: BLE001 - reported to the web process
        log.error("%s", exc)
        return WorkerReport(pid=os.getpid(), error=str(exc), setup=None)


def _work_until_called(channel: socket.socket, idle_step: Callable[[], bool]) -> None:
    """Do the worker's preparatory work, one small step at a time, until a call arrives or nothing is
    left to do. (One call at a time: nothing of the next call is buffered in the reader while the
    worker is here, so the socket tells whether one waits.)"""
    while not select.select([channel], [], [], 0)[0] and idle_step():
        pass


def _answer_frame(answer: tuple[bool, Any]) -> memoryview:
    try:
        return _frame(answer)
    except Exception as exc:  # noqa: BLE001 - a result or exception that does not pickle is still answered (500)
        log.error("the answer of a scoring could not be sent: %r", exc)
        return _frame((False, RuntimeError(f"the scoring worker could not send its answer: {exc!r}")))
