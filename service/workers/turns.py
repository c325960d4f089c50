"""Scoring slots handed out in turn to the identities waiting for one, within a fair share of the queue.

A first-come queue lets one identity that sends many requests (or many that each cost a key
preparation, ~0.3 s) put everyone else behind all of them. Here each identity waits in its own
line and a freed slot goes to the next identity in turn (never back to the identity that freed it
while another waits), so a request waits for at most one scoring of each other identity waiting,
whatever their count of requests; and the places in the
queue (`MAX_QUEUE`) are a `FairShare`, so one identity cannot take them all either.
"""

from __future__ import annotations

import asyncio
from collections import deque

from service.errors import ServiceUnavailable
from service.fair_share import FairShare


class Turns:
    """`slots` scorings at once; the waiting ones served one identity after another."""

    def __init__(self, slots: int, places: FairShare) -> None:
        self._free = slots
        self._places = places
        # Insertion-ordered: the first owner is next; an owner served moves to the back if it waits still.
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    @property
    def queued(self) -> int:
        return self._places.held

    async def acquire(self, owner: str) -> None:
        """A slot for `owner`, at once if one is free and nobody waits; 503 if it has no queue place left."""
        if self._free and not self._waiting:
            self._free -= 1
            return
        if not self._places.take(owner, 1):
            mine = self._places.held_by(owner)
            raise ServiceUnavailable(f"busy: {self.queued} requests are already waiting for a scoring worker"
                                     + (f", {mine} of them yours" if mine else ""))
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(owner, deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # given the slot as it was cancelled: pass it on
                self.release(owner)
            else:
                self._leave(owner, turn)
            raise
        finally:
            self._places.give_back(owner, 1)

    def release(self, owner: str) -> None:
        """`owner` gives a slot back: to the next identity in turn if any waits, `owner` last."""
        if owner in self._waiting and len(self._waiting) > 1:
            self._waiting[owner] = self._waiting.pop(owner)  # to the back: it has just had its turn
        while self._waiting:
            owner = next(iter(self._waiting))
            line = self._waiting.pop(owner)
            turn = line.popleft()
            if line:
                self._waiting[owner] = line
            if not turn.done():  # a cancelled waiter may still be in line for one step of the loop
                turn.set_result(None)
                return
        self._free += 1

    def _leave(self, owner: str, turn: asyncio.Future[None]) -> None:
        line = self._waiting.get(owner)
        if line is not None and turn in line:
            line.remove(turn)
            if not line:
                del self._waiting[owner]
