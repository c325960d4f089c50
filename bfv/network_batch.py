"""A square network's rounds in the batch layout: ciphertext i holds value i of up to N samples, one per slot.

Round 0 is the linear batch (`bfv.evaluation`): h_j = sum_i Q0[j, i] ct_i, on which the server adds,
slot by slot, the biases and fresh masks r_j, uniform modulo t in every slot (so the slots a header
does not declare are as hidden as the others). The client decrypts z_j = h_j + r_j per slot and sends
back Enc(z_j^2) and Enc(B^d z_j) for every digit d. The server knows r_j, and

    Q (z - r)^2 = Q z^2 - 2 sum_j Q_kj R_j * z_j + Q r^2       (slot by slot, mod t)

where R_j, the slot encoding of r_j, is a polynomial of N coefficients below t: the slot-wise
product r_j z_j is the ring product R_j Z_j. Its digits R_jd (coefficients below B) keep the product
small, R_j Z_j = sum_d R_jd (B^d Z_j), so the server multiplies Enc(B^d z_j) by R_jd: a plaintext of
small coefficients, whose error costs N (B - 1)^2 of variance per term instead of N t^2
(`bfv.network_plan._batch_layout`). In SEAL's NTT domain, per masked value j:

    S_j = sum_d R_jd . Enc(B^d z_j) + (-2)^-1 . Enc(z_j^2)      (one compiled `dot_mod` over 2 N values)

and output k is sum_j (-2 Q_kj) S_j, one exact limb product (`ring.weighted_sum_mod`), then one inverse
NTT, the constant Q r^2 + biases (+ the next masks, or in the last round a one-time pad on the slots the
header does not declare), an encryption of zero under the client's key, and the switch to 2^bits.
"""

from __future__ import annotations

import numpy as np

from bfv.evaluation import batch_slot_plaintexts
from bfv.network_plan import base_digits
from bfv.plan import PublicPlan
from bfv.rerandomize import PreparedKey, ZeroEncryptions
from bfv.ring import (add_mod, dot_mod, expand_uniform, from_signed, limb_bits, moduli_column, random_below,
                      random_flooding, residue_fraction, small_dot_mod, weighted_sum_mod)
from bfv.seal_ring import SealRing
from bfv.wire import Kind, Request, write_switched_reply


class BatchRound:
    """One round of a network's batch layout modulo one t: its weights, prepared once."""

    def __init__(self, public: PublicPlan, ring: SealRing, weights: np.ndarray, biases: np.ndarray,
                 digit_bits: int, digits: int, first: bool) -> None:
        """`weights` (outputs, inputs) int64 and `biases` (outputs,) modulo t of the layer; `first`: round 0
        (inputs are the samples' values) or a later one (inputs are z^2, then B^d z for each digit d)."""
        self.public, self.ring, self.first = public, ring, first
        self._primes = public.params.data_primes
        self._moduli = moduli_column(self._primes)
        self._t = public.params.plain_modulus
        self._weights = weights
        self._biases = biases
        self._digit_bits, self._digits = digit_bits, digits
        # Round 0: Q0; later rounds: -2 Q, whose factor (-2)^-1 on z^2 each S_j carries.
        factors = weights if first else -2 * weights
        self._factors = factors.astype(np.float64)
        magnitude = int(np.abs(factors).max()).bit_length()
        self._limb_bits = limb_bits(factors.shape[1], magnitude)
        # (-2)^-1 modulo each prime, over a c0 and an a side by side (2N)
        self._halves = [np.full(2 * public.degree, pow(-2, -1, p), dtype=np.uint64) for p in self._primes]

    def reply(self, request: Request, key: PreparedKey, zeros: ZeroEncryptions, previous: np.ndarray | None,
              following: np.ndarray | None, last: bool) -> bytes:
        """The batch reply to `request` (Kind.BATCH, one ciphertext per input) modulo this t: `previous`
        (inputs', N) are the masks the last reply added (later rounds), `following` (outputs, N) the
        masks this one adds (all but the last round)."""
        public, ring, primes = self.public, self.ring, self._primes
        degree, outputs = public.degree, public.n_outputs
        count = request.c0.shape[0]
        a = np.stack([expand_uniform(request.seed, index, primes, degree) for index in range(count)])  # NTT
        sums = np.empty((2, outputs, len(primes), degree), dtype=np.uint64)
        if self.first:
            for row, prime in enumerate(primes):
                for poly, source in enumerate((request.c0, a)):
                    sums[poly, :, row] = weighted_sum_mod(self._factors, source[:, row], prime, self._limb_bits)
            c0, c1 = sums[0], self._inverse_ntt(sums[1], ntt_c0=False)
            slots = np.broadcast_to(self._biases[:, None], (outputs, degree)).astype(np.uint64)
        else:
            masked = self._products(request.c0, a, previous)  # (values, 2, k, N): the S_j in the NTT domain
            for row, prime in enumerate(primes):
                for poly in range(2):
                    sums[poly, :, row] = weighted_sum_mod(self._factors, masked[:, poly, row], prime, self._limb_bits)
            c0, c1 = self._inverse_ntt(sums, ntt_c0=True)
            r = previous.astype(np.uint64)  # below t < 2^32: r^2 fits
            squares = (r * r % np.uint64(self._t)).astype(np.int64)
            slots = (small_dot_mod(self._weights, squares, self._t) + self._biases[:, None]) % self._t
            slots = slots.astype(np.uint64)
        if following is not None:
            slots = (slots + following) % np.uint64(self._t)
        if last:  # a one-time pad on the slots the header does not declare (and the quota does not count)
            slots = np.array(slots)
            slots[:, request.images :] = random_below(self._t, outputs * (degree - request.images)).reshape(outputs, -1)
        c0 = add_mod(c0, batch_slot_plaintexts(ring, slots), self._moduli)
        if public.flooding_bits:
            c0 = add_mod(c0, random_flooding((outputs, degree), public.flooding_bits, primes), self._moduli)
        fresh = np.stack(zeros.make(key, outputs))  # (outputs, 2, N) fractions of Q
        fractions = np.stack([residue_fraction(c0, primes) + fresh[:, 0], residue_fraction(c1, primes) + fresh[:, 1]],
                             axis=1)
        return write_switched_reply(Kind.BATCH, request.images, public.batch_reply_bits, fractions)

    def _products(self, c0_ntt: np.ndarray, a: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """S_j = sum_d R_jd . (c0, a)_{B^d z_j} + (-2)^-1 . (c0, a)_{z_j^2} in the NTT domain (values, 2, k, N),
        for c0 and a (inputs, k, N) in the NTT domain (a later round's client sends c0 so)."""
        ring, primes, degree = self.ring, self._primes, self.public.degree
        values = masks.shape[0]
        slot_polys = np.stack([ring.batch_encode(row) for row in masks])  # R_j, coefficients below t
        digits = base_digits(slot_polys, self._digit_bits, self._digits).transpose(1, 0, 2)  # (values, D, N)
        digits_ntt = ring.ntt_rows(from_signed(digits.reshape(-1, degree), primes)
                                   ).reshape(values, self._digits, len(primes), degree)
        out = np.empty((values, 2, len(primes), degree), dtype=np.uint64)
        for row, prime in enumerate(primes):
            half = self._halves[row]
            for j in range(values):
                terms = [values + d * values + j for d in range(self._digits)]
                x = np.concatenate([c0_ntt[terms, row], a[terms, row]], axis=1)  # (D, 2N): c0 then a
                w = np.concatenate([digits_ntt[j, :, row], digits_ntt[j, :, row]], axis=1)
                squares = np.concatenate([c0_ntt[j, row], a[j, row]])
                out[j, :, row] = dot_mod(x, w, (squares, half), prime).reshape(2, degree)
        return out

    def _inverse_ntt(self, polys: np.ndarray, ntt_c0: bool):
        """Coefficients of NTT-domain polynomials: (outputs, k, N) (`ntt_c0` False: c1 alone), or the pair
        (2, outputs, k, N) of c0 and c1 (`ntt_c0` True). A c1 may be zero (an output whose quantized
        weights all round to zero): `ntt_rows` keeps zero rows out of SEAL, which refuses them."""
        if not ntt_c0:
            return self.ring.ntt_rows(polys, inverse=True)
        return self.ring.ntt_rows(polys[0], inverse=True), self.ring.ntt_rows(polys[1], inverse=True)
