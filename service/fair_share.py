"""A bounded resource shared between identities so that none of them, nor a few together, can take it all.

Request-body bytes (`MAX_QUEUE_BYTES`) and places in the scoring queue (`MAX_QUEUE`) are held by
identities. A plain bound lets one identity that sends many slow requests fill it, and every other
caller is then refused as busy. Here an identity may hold at most `share` of what the *other*
identities leave: with the default share of one half, one flooding identity holds at most half the
bound, two hold at most a third each at equilibrium (x = (limit - x) / 2), and k flooders leave at
least limit / 2^k free for the next identity; nobody is locked out until many identities flood at once.
"""

from __future__ import annotations

import math


class FairShare:
    """Amounts held per owner within `limit`, no owner past `share` of what the others leave free.

    `least` is what an owner may always hold when the bound itself has room (one queue place, so a
    small MAX_QUEUE still queues one request per identity). Not thread-safe: used from the event loop.
    """

    def __init__(self, limit: int, share: float, least: int = 0) -> None:
        self.limit, self.share, self.least = limit, share, least
        self.held = 0
        self._by_owner: dict[str, int] = {}

    def held_by(self, owner: str) -> int:
        return self._by_owner.get(owner, 0)

    def allowance(self, owner: str) -> int:
        """The most `owner` may hold now, given what the others hold."""
        others = self.held - self.held_by(owner)
        return max(self.least, math.floor(self.share * (self.limit - others)))

    def take(self, owner: str, amount: int) -> bool:
        """Hold `amount` more for `owner` if both the bound and the owner's allowance have room."""
        if self.held + amount > self.limit or self.held_by(owner) + amount > self.allowance(owner):
            return False
        self.held += amount
        self._by_owner[owner] = self.held_by(owner) + amount
        return True

    def give_back(self, owner: str, amount: int) -> None:
        self.held -= amount
        left = self.held_by(owner) - amount
        if left:
            self._by_owner[owner] = left
        else:  # forget owners holding nothing: the map stays as small as the set of current holders
            self._by_owner.pop(owner, None)
