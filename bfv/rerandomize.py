"""Fresh encryptions of zero under a client's public key, made ahead of need.

Every reply ciphertext is re-randomized with its own encryption of zero, (pk0 * u + e0, pk1 * u + e1)
with a fresh ternary u and fresh errors, so c1 no longer reveals the weights to a client who knows
its own `a`. A single-image reply sends c0 only at its result positions, so its encryptions of zero
are computed only there (`take_single`): c0 as a few negacyclic dot products of u with pk0, and the
pk1 * u of two of them with one SEAL product and one inverse NTT. The values at the coefficients
that are sent are exactly those of a whole encryption of zero; the others are never computed. Batch
replies send every coefficient and get whole ones (`make`), on the request's own time.

Making them costs more than the rest of a single-image reply, so a worker makes them for the key of
its last request while it waits for the next one (`make_ahead`, one small step at a time, called by
the worker's loop only when no request is waiting), and a request takes prepared ones; none is ever
used twice. A key without enough ready (its first request, bursts) gets them made on the request's
own time: same values, just slower. The work runs in the worker's own thread, between requests,
not in a background thread: SEAL's calls hold the GIL, and a request that wanted it back could wait
for a whole switch interval.

They are kept as fractions of the modulus, z / Q mod 1, the form the switch to 2^bits adds them in
(`ring.residue_fraction`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import seal

from bfv.ring import add_random_errors, from_signed, negacyclic_at, random_ternary, residue_fraction
from bfv.seal_ring import SealRing


@dataclass(frozen=True)
class PreparedKey:
    """A client's public key, in the forms the encryptions of zero use, and those made ahead so far."""

    key_id: str
    public_ntt: seal.Ciphertext  # (pk0, pk1) in NTT form, for whole encryptions of zero
    pk0: np.ndarray  # (k, N) coefficients, for c0 at the result positions
    pk1_ntt: seal.Plaintext  # pk1 in NTT form, for c1
    nbytes: int
    # For single-image replies: c0 at the result positions, then c1 (N), as fractions of Q.
    zeros: deque[np.ndarray] = field(default_factory=deque, compare=False)


class ZeroEncryptions:
    """Makes and hands out encryptions of zero; keeps up to `per_key` single-image ones ready for the
    last key used. `positions` are the coefficients of c0 a single-image reply sends."""

    def __init__(self, ring: SealRing, per_key: int, positions: np.ndarray) -> None:
        self._ring, self.per_key, self._positions = ring, per_key, positions
        self._next: PreparedKey | None = None
        self._spare_u: list[np.ndarray] = []  # a ternary u in NTT form, drawn with the last one used

    def entry_bytes(self) -> int:
        """Bytes of one single-image encryption of zero kept ready."""
        return (len(self._positions) + self._ring.params.degree) * 8

    def ternary_ntt(self) -> np.ndarray:
        """A fresh ternary u in NTT form (k, N). u does not depend on the key; two are drawn and transformed
        at a time (where SEAL transforms, it takes two polynomials) and the second is kept for the next call."""
        if not self._spare_u:
            params = self._ring.params
            u = from_signed(random_ternary(2 * params.degree).reshape(2, params.degree), params.data_primes)
            self._spare_u.extend(self._ring.ntt_rows(u))
        return self._spare_u.pop()

    def _make_one(self, key: PreparedKey) -> np.ndarray:
        ring, params = self._ring, self._ring.params
        factor = ring.ntt_plaintext_from_ntt(self.ternary_ntt())
        masked = np.array(ring.from_ntt(ring.evaluator.multiply_plain(key.public_ntt, factor)))  # (2, k, N)
        return residue_fraction(add_random_errors(masked, params.data_primes), params.data_primes)

    def make(self, key: PreparedKey, count: int) -> list[np.ndarray]:
        """`count` fresh whole encryptions of zero under `key`, (2, N) fractions of Q each (c0, c1)."""
        return [self._make_one(key) for _ in range(count)]

    def _make_single_pair(self, key: PreparedKey) -> list[np.ndarray]:
        """Two single-image encryptions of zero: pk0 * u + e0 at the result positions, then pk1 * u + e1 (N)."""
        ring, params = self._ring, self._ring.params
        primes, degree, count = params.data_primes, params.degree, len(self._positions)
        u = random_ternary(2 * degree).reshape(2, degree)
        products = ring.to_ntt(from_signed(u, primes))
        ring.evaluator.multiply_plain_inplace(products, key.pk1_ntt)
        masked = np.empty((2, len(primes), count + degree), dtype=np.uint64)
        masked[:, :, count:] = ring.from_ntt(products)  # pk1 * u for both
        for index in range(2):
            masked[index, :, :count] = negacyclic_at(u[index], key.pk0, self._positions, primes, 1)
        return list(residue_fraction(add_random_errors(masked, primes), primes))

    def take_single(self, key: PreparedKey, count: int) -> list[np.ndarray]:
        """`count` single-image encryptions of zero for one request: the ready ones first, the rest made
        now. `key` is the one `make_ahead` works for from now on."""
        taken = [key.zeros.popleft() for _ in range(min(count, len(key.zeros)))]
        self._next = key
        while len(taken) < count:
            taken.extend(self._make_single_pair(key))
        key.zeros.extend(taken[count:])  # the second of a pair made now is kept for the next request
        return taken[:count]

    def make_ahead(self) -> bool:
        """One step of preparing the last key's single-image encryptions of zero (a pair of them, so a
        request that arrives meanwhile waits no longer than that); whether more steps remain."""
        key = self._next
        if key is None or len(key.zeros) >= self.per_key:
            return False
        key.zeros.extend(self._make_single_pair(key))
        return len(key.zeros) < self.per_key

    def fill(self, key: PreparedKey) -> None:
        """Make `key`'s encryptions of zero up to `per_key` (what idle steps would do, all at once)."""
        self._next = key
        while self.make_ahead():
            pass
