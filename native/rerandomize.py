"""Fresh encryptions of zero under a client's public key, made ahead of need.

Every reply ciphertext is re-randomized with its own encryption of zero, (pk0 * u + e0, pk1 * u + e1)
with a fresh ternary u and fresh errors, so c1 no longer reveals the weights to a client who knows
its own `a`. Making one takes a forward NTT, a product and an inverse NTT: more than the rest of a
single-image reply. A background thread makes them for the key of the last request while the
worker waits for the next one (one worker serves one request at a time), and a request takes
prepared ones; none is ever used twice. The thread stops between steps (~100 µs each) while a
request runs: both hold the GIL, so working on would halve the request's speed. A key without enough ready (its first request, bursts)
gets them made on the request's own time: same values, just slower.

They are kept as fractions of the modulus, z / Q mod 1, the form the switch to 2^bits adds them in
(`ring.residue_fraction`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import seal

from native.ring import add_small, from_signed, random_error, random_ternary, residue_fraction
from native.seal_ring import SealRing

@dataclass(frozen=True)
class NativeKey:
    """A client's public key in NTT form for SEAL, and its encryptions of zero made so far."""

    key_id: str
    public_ntt: seal.Ciphertext
    nbytes: int
    zeros: deque[np.ndarray] = field(default_factory=deque, compare=False)  # (2, N) fractions of Q each


class ZeroEncryptions:
    """Makes and hands out encryptions of zero; keeps up to `per_key` ready for the last key used."""

    def __init__(self, ring: SealRing, per_key: int, background: bool = True) -> None:
        self._ring, self.per_key = ring, per_key
        self._wanted, self._idle = threading.Event(), threading.Event()
        self._idle.set()
        self._next: NativeKey | None = None
        if per_key and background:
            threading.Thread(target=self._keep_ready, name="zero-encryptions", daemon=True).start()

    def entry_bytes(self) -> int:
        return 2 * self._ring.params.degree * 8

    def make(self, key: NativeKey, count: int, between: Callable[[], object] = lambda: None) -> list[np.ndarray]:
        """`count` fresh encryptions of zero under `key`, (2, N) fractions of Q each (c0, c1);
        `between` runs before each SEAL step."""
        ring, params = self._ring, self._ring.params
        primes, degree = params.data_primes, params.degree
        out = []
        for start in range(0, count, 2):  # two u per forward NTT
            u = from_signed(random_ternary(2 * degree).reshape(2, degree), primes)
            between()
            transformed = ring.polys(ring.to_ntt(u))
            for row in range(min(2, count - start)):
                between()
                factor = ring.ntt_plaintext_from_ntt(transformed[row])
                masked = ring.from_ntt(ring.evaluator.multiply_plain(key.public_ntt, factor))
                out.append(residue_fraction(add_small(masked, random_error((2, degree)), primes), primes))
        return out

    @contextmanager
    def serving(self, key: NativeKey, count: int) -> Iterator[np.ndarray]:
        """`count` encryptions of zero (count, 2, N) for one request. The background thread pauses
        from here until the request is done, or failed, then refills `key`'s."""
        self._idle.clear()
        try:
            taken = []
            while len(taken) < count and key.zeros:
                taken.append(key.zeros.popleft())
            yield np.stack(taken + self.make(key, count - len(taken)))  # made now if the store ran dry
        finally:
            self._next = key
            self._idle.set()
            self._wanted.set()

    def fill(self, key: NativeKey, between: Callable[[], object] = lambda: None) -> None:
        while len(key.zeros) < self.per_key:
            key.zeros.extend(self.make(key, min(2, self.per_key - len(key.zeros)), between))

    def _keep_ready(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._next is not None:
                self.fill(self._next, self._idle.wait)
