"""Fresh encryptions of zero under a client's public key, made ahead of need.

Every reply ciphertext is re-randomized with its own encryption of zero, (pk0 * u + e0, pk1 * u + e1)
with a fresh ternary u and fresh errors, so c1 no longer reveals the weights to a client who knows
its own `a`. Making one takes a forward NTT, a product and an inverse NTT: more than the rest of a
single-image reply. So a worker makes them for the key of its last request while it waits for the
next one (`make_ahead`, one small step at a time, called by the worker's loop only when no request
is waiting), and a request takes prepared ones; none is ever used twice. A key without enough ready
(its first request, bursts) gets them made on the request's own time: same values, just slower.
This used to be a background thread; but SEAL's calls hold the GIL, and a request that wanted the
GIL back could wait for a whole switch interval (5 ms), so the work now runs in the worker's own
thread, between requests.

They are kept as fractions of the modulus, z / Q mod 1, the form the switch to 2^bits adds them in
(`ring.residue_fraction`).
"""

from __future__ import annotations

from collections import deque
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

    def __init__(self, ring: SealRing, per_key: int) -> None:
        self._ring, self.per_key = ring, per_key
        self._next: NativeKey | None = None
        self._spare_u: list[np.ndarray] = []  # a ternary u in NTT form, drawn with the last one used

    def entry_bytes(self) -> int:
        return 2 * self._ring.params.degree * 8

    def _ternary_ntt(self) -> np.ndarray:
        """A fresh ternary u in NTT form (k, N). u does not depend on the key; two are transformed per
        forward NTT (a SEAL ciphertext holds two polynomials) and the second is kept for the next call."""
        if not self._spare_u:
            params = self._ring.params
            u = from_signed(random_ternary(2 * params.degree).reshape(2, params.degree), params.data_primes)
            self._spare_u.extend(self._ring.polys(self._ring.to_ntt(u)))
        return self._spare_u.pop()

    def _make_one(self, key: NativeKey) -> np.ndarray:
        ring, params = self._ring, self._ring.params
        factor = ring.ntt_plaintext_from_ntt(self._ternary_ntt())
        masked = ring.from_ntt(ring.evaluator.multiply_plain(key.public_ntt, factor))
        errors = random_error((2, params.degree))
        return residue_fraction(add_small(masked, errors, params.data_primes), params.data_primes)

    def make(self, key: NativeKey, count: int) -> list[np.ndarray]:
        """`count` fresh encryptions of zero under `key`, (2, N) fractions of Q each (c0, c1)."""
        return [self._make_one(key) for _ in range(count)]

    def take(self, key: NativeKey, count: int) -> list[np.ndarray]:
        """`count` encryptions of zero for one request: the ready ones first, the rest made now.
        `key` is the one `make_ahead` works for from now on."""
        taken = [key.zeros.popleft() for _ in range(min(count, len(key.zeros)))]
        self._next = key
        return taken + self.make(key, count - len(taken))

    def make_ahead(self) -> bool:
        """One step of preparing the last key's encryptions of zero (one of them: ~0.35 ms here, so a
        request that arrives meanwhile waits no longer than that); whether more steps remain."""
        key = self._next
        if key is None or len(key.zeros) >= self.per_key:
            return False
        key.zeros.append(self._make_one(key))
        return len(key.zeros) < self.per_key

    def fill(self, key: NativeKey) -> None:
        """Make `key`'s encryptions of zero up to `per_key` (what idle steps would do, all at once)."""
        self._next = key
        while self.make_ahead():
            pass
