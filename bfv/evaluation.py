"""The server's half: scores from ciphertexts, with no key but the client's public key.

Single image: a * w_g for two groups at a time in the NTT domain (SEAL: the two weight polynomials
held as one ciphertext, times a as a plaintext, then one inverse NTT),
c0 * w_g only at the result positions (exact float64 dot products on limbs of up to 30 bits); batch:
sum_i W[j, i] * ct_i for every output as one matrix product per limb, plus the intercepts and a
one-time pad on the slots the header does not declare (`_batch_plaintexts`). Then every reply
ciphertext gets a fresh encryption of zero under the client's public key (`rerandomize`; so c1 no longer
reveals the weights to a client who knows its own a), uniform flooding noise of 2^flooding_bits
on c0 when the profile says so, and a switch to the modulus 2^bits; coefficients the client does
not need (c0 outside the result positions) are never sent.
"""

from __future__ import annotations

from itertools import accumulate

import numpy as np

from bfv.encryption import PUBLIC_KEY_INDEX
from bfv.plan import Plan
from bfv.rerandomize import PreparedKey, ZeroEncryptions
from bfv.ring import (add_mod, expand_uniform, from_signed, limb_bits, moduli_column, negacyclic_rows, random_below,
                      random_flooding, residue_fraction, scale_messages, split_limbs, weighted_sum_mod)
from bfv.seal_ring import SealRing
from bfv.wire import Kind, Request, WireError, key_id, read_public_key, write_switched_reply


def prepare_public_key(ring: SealRing, blob: bytes, kept_bytes: int) -> PreparedKey:
    """A public key's bytes checked and put in the forms the encryptions of zero use; `kept_bytes`:
    what its encryptions of zero made ahead may hold, counted in its size."""
    params = ring.params
    key = read_public_key(blob, params)
    pk1_ntt = expand_uniform(key.seed, PUBLIC_KEY_INDEX, params.data_primes, params.degree)
    pk0_ntt = ring.polys(ring.to_ntt(np.stack([key.pk0, key.pk0])))[0]
    public_ntt = ring.ciphertext(np.stack([pk0_ntt, pk1_ntt]), ntt_form=True)
    # pk0 (coefficients) + pk1 (plaintext) + public_ntt (two polynomials), and the zeros kept ready
    return PreparedKey(key_id=key_id(blob), public_ntt=public_ntt, pk0=np.ascontiguousarray(key.pk0),
                       pk1_ntt=ring.ntt_plaintext_from_ntt(pk1_ntt), nbytes=4 * key.pk0.nbytes + kept_bytes)


def batch_slot_plaintexts(ring: SealRing, slots: np.ndarray) -> np.ndarray:
    """round(Q * P / t) residues (rows, k, N) of the plaintexts P whose slots are `slots` (rows, N), below t."""
    t = ring.params.plain_modulus
    return scale_messages(np.stack([ring.batch_encode(row) for row in slots]), ring.params.data_primes, t)


class Evaluator:
    def __init__(self, plan: Plan, mask_pool_size: int = 4) -> None:
        """`mask_pool_size` encryptions of zero are kept ready for the last key used (two single-image
        requests' worth for the bundled model), made by `zeros.make_ahead` between requests."""
        self.plan = plan
        public = plan.public
        self.ring = SealRing(public.params)
        self._primes = public.params.data_primes
        self._moduli = moduli_column(self._primes)
        self._positions = public.result_positions(0)  # the same local positions in every group
        weights = [plan.group_weight_poly(group) for group in range(len(public.groups))]
        # Two groups' weights per NTT-form ciphertext, so one multiply_plain by a and one inverse NTT
        # give a * w_g for both. Groups whose weights are all zero are left out (a * 0 = 0): SEAL
        # refuses a product whose second polynomial is zero ("transparent").
        live = [group for group, w in enumerate(weights) if w.any()]
        self._weight_pairs = []
        for start in range(0, len(live), 2):
            pair = live[start : start + 2]
            padded = pair if len(pair) == 2 else pair * 2  # a SEAL ciphertext has two polynomials
            self._weight_pairs.append(
                (pair, self.ring.to_ntt(np.stack([from_signed(weights[group], self._primes) for group in padded]))))
        # Every group's rows, one per output (outputs, N): c0 * w_g at the result positions is one product.
        self._result_rows = np.concatenate([negacyclic_rows(w, self._positions[: len(group)]).astype(np.float64)
                                            for w, group in zip(weights, public.groups)])
        # Where each group's values start in a single reply (c0 at its result positions, then c1), and
        # which columns of the result dot products are its outputs.
        self._reply_offsets = list(accumulate((len(outputs) + public.degree for outputs in public.groups), initial=0))
        firsts = list(accumulate((len(outputs) for outputs in public.groups), initial=0))
        self._group_outputs = [slice(first, last) for first, last in zip(firsts, firsts[1:])]
        self._zero_groups = [group for group in range(len(weights)) if group not in live]
        self._intercepts = self._scaled(plan.model.intercepts[[o for group in public.groups for o in group]]).T.tolist()
        self._batch_weights = plan.model.weights.astype(np.float64)
        # Dot products of limbs with weights: N terms for one image, n_features for a batch.
        magnitude_bits = public.weight_bits - 1  # |W_int| <= 2^(weight_bits - 1) - 1, the plan's own precision
        self._single_limb_bits = limb_bits(public.degree, magnitude_bits)
        self._batch_limb_bits = limb_bits(public.n_features, magnitude_bits)
        self._batch_intercepts = np.mod(plan.model.intercepts, public.params.plain_modulus).astype(np.uint64)
        self.zeros = ZeroEncryptions(self.ring, mask_pool_size, self._positions)

    def _scaled(self, values: np.ndarray) -> np.ndarray:
        """round(Q * v / t) residues (k, len(v)) for signed integers v (intercepts)."""
        t = self.plan.public.params.plain_modulus
        return scale_messages(np.mod(values, t), self._primes, t)

    def prepare_key(self, blob: bytes) -> PreparedKey:
        """Check a public key's bytes and put it in NTT form; pk1 always comes from the key's seed."""
        return prepare_public_key(self.ring, blob, self.zeros.per_key * self.zeros.entry_bytes())

    def _check_key(self, request: Request, key: PreparedKey) -> None:
        if request.key_id != key.key_id:
            raise WireError("the request names another public key than the one it is scored with")

    def _finish(self, c0: np.ndarray, c1: np.ndarray, zeros0: np.ndarray,
                zeros1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flood c0 when the profile says so and re-randomize: the reply's c0 and c1 as fractions of Q,
        which the reply's writer switches to 2^bits.

        c0 (..., k, n) and c1 (..., k, N) residues; zeros0 (..., n) and zeros1 (..., N) the
        encryption of zero's two parts at the same coefficients, as fractions of Q.
        """
        flooding = self.plan.public.flooding_bits
        if flooding:
            c0 = add_mod(c0, random_flooding(c0.shape[:-2] + c0.shape[-1:], flooding, self._primes), self._moduli)
        return residue_fraction(c0, self._primes) + zeros0, residue_fraction(c1, self._primes) + zeros1

    def _inverse_ntt(self, polys_ntt: list[np.ndarray]) -> np.ndarray:
        """Coefficients of NTT-domain polynomials (k, N) each, two per SEAL inverse NTT.

        SEAL refuses a result whose second polynomial is zero ("transparent"), so zero polynomials
        (zero weights) are left out: they are zero in both domains.
        """
        out = np.zeros((len(polys_ntt),) + polys_ntt[0].shape, dtype=np.uint64)
        live = [index for index, poly in enumerate(polys_ntt) if poly.any()]
        for start in range(0, len(live), 2):
            pair = live[start : start + 2]
            padded = pair if len(pair) == 2 else pair * 2  # a SEAL ciphertext has two polynomials
            ciphertext = self.ring.ciphertext(np.stack([polys_ntt[index] for index in padded]), ntt_form=True)
            out[pair] = self.ring.from_ntt(ciphertext)[: len(pair)]
        return out

    def _result_dot_products(self, c0: np.ndarray) -> np.ndarray:
        """c0 * w_g at every group's result positions, plus the intercepts: residues (k, outputs).

        Exact float64 dot products on limbs of c0 (each partial sum below 2^53), combined as Python
        integers: a few values, where numpy's modular arithmetic would cost more in calls than in work.
        """
        bits, primes = self._single_limb_bits, self._primes
        limbs = split_limbs(c0, bits)  # (limbs, k, N)
        sums = np.rint(self._result_rows @ limbs.reshape(-1, limbs.shape[-1]).T).astype(np.int64)
        sums = sums.reshape(-1, limbs.shape[0], len(primes)).tolist()  # (outputs, limbs, k)
        shifts = [bits * index for index in range(limbs.shape[0])]
        out = np.empty((len(primes), len(sums)), dtype=np.uint64)
        for column, (output, intercepts) in enumerate(zip(sums, self._intercepts)):
            for row, prime in enumerate(primes):
                total = intercepts[row]
                for shift, limb in zip(shifts, output):
                    total += limb[row] << shift
                out[row, column] = total % prime
        return out

    def score_single(self, request: Request, key: PreparedKey) -> bytes:
        self._check_key(request, key)
        public, ring = self.plan.public, self.ring
        groups, degree = len(public.groups), public.degree
        a_plain = ring.ntt_plaintext_from_ntt(expand_uniform(request.seed, 0, self._primes, degree))
        c0 = self._result_dot_products(request.c0[0])
        if public.flooding_bits:
            c0 = add_mod(c0, random_flooding((c0.shape[1],), public.flooding_bits, self._primes), self._moduli)
        c0_fractions = residue_fraction(c0, self._primes)
        # The reply, as fractions of Q: for each group, c0 at its result positions, then c1 (N); each
        # plus its own encryption of zero, then switched to 2^bits at once.
        fractions = np.empty(sum(len(outputs) + degree for outputs in public.groups))
        zeros = self.zeros.take_single(key, groups)  # c0 at the result positions, then c1 (N)
        positions = len(self._positions)

        def add_group(group: int, c1_fraction: np.ndarray) -> None:
            outputs, start = len(public.groups[group]), self._reply_offsets[group]
            np.add(c0_fractions[self._group_outputs[group]], zeros[group][:outputs],
                   out=fractions[start : start + outputs])
            np.add(c1_fraction, zeros[group][positions:], out=fractions[start + outputs : start + outputs + degree])

        for pair, weights_ntt in self._weight_pairs:  # a * w_g for two groups per SEAL product
            products = ring.from_ntt(ring.evaluator.multiply_plain(weights_ntt, a_plain))
            for group, c1 in zip(pair, products):
                add_group(group, residue_fraction(c1, self._primes))
        for group in self._zero_groups:  # a * 0 = 0: c1 is the encryption of zero alone
            add_group(group, 0.0)
        return write_switched_reply(Kind.SINGLE, 1, public.single_reply_bits, fractions)

    def _batch_plaintexts(self, images: int) -> np.ndarray:
        """What each output's c0 gets on top of sum_i W[j, i] * ct_i, as round(Q * P_j / t) residues
        (outputs, k, N): P_j holds the intercept in the `images` slots the header declares (and is metered
        for), and a one-time pad, uniform modulo t and fresh for every output and reply, in the others. A
        client that encrypts images in every slot then decrypts the scores it paid for and uniform values
        elsewhere. Scaled once: one rounding of at most 1/2 per coefficient, which the plan's noise bound counts."""
        public = self.plan.public
        t, degree = public.params.plain_modulus, public.degree
        slots = np.repeat(self._batch_intercepts[:, None], degree, axis=1)
        slots[:, images:] = random_below(t, public.n_outputs * (degree - images)).reshape(public.n_outputs, -1)
        return batch_slot_plaintexts(self.ring, slots)

    def score_batch(self, request: Request, key: PreparedKey) -> bytes:
        self._check_key(request, key)
        public = self.plan.public
        features, degree = public.n_features, public.degree
        zeros = np.stack(self.zeros.make(key, public.n_outputs))  # (outputs, 2, N)
        a_ntt = np.stack([expand_uniform(request.seed, index, self._primes, degree) for index in range(features)])
        sums = np.empty((2, public.n_outputs, len(self._primes), degree), dtype=np.uint64)
        for row, prime in enumerate(self._primes):
            for poly, source in enumerate((request.c0, a_ntt)):
                sums[poly, :, row] = weighted_sum_mod(self._batch_weights, source[:, row], prime,
                                                      self._batch_limb_bits)
        sums[0] = add_mod(sums[0], self._batch_plaintexts(request.images), self._moduli)
        c0, c1 = self._finish(sums[0], self._inverse_ntt(list(sums[1])), zeros[:, 0], zeros[:, 1])
        return write_switched_reply(Kind.BATCH, request.images, public.batch_reply_bits, np.stack([c0, c1], axis=1))
