"""The server's half: scores from ciphertexts, with no key but the client's public key.

Single image: c1 * w_g for every group in the NTT domain (SEAL), c0 * w_g only at the result
positions (exact float64 dot products on 20-bit limbs); batch: sum_i W[j, i] * ct_i for every
output as one matrix product per limb. Then every reply ciphertext is re-randomized with a fresh
encryption of zero under the client's public key (so c1 no longer reveals the weights to a client
who knows its own a), flooded with 2^flooding_bits of uniform noise when the profile says so, and
switched to the modulus 2^bits; coefficients the client does not need (c0 outside the result
positions) are never sent.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
import seal

from native.encryption import PUBLIC_KEY_INDEX
from native.plan import NativePlan
from native.ring import (add_mod, add_small, combine_limbs, expand_uniform, from_signed, moduli_column,
                         negacyclic_rows, random_error, random_flooding, random_ternary, scale_messages,
                         split_limbs, switch_to_power_of_two)
from native.seal_ring import SealRing
from native.wire import Kind, Request, WireError, key_id, read_public_key, write_reply


GIL_SWITCH_SECONDS = 1e-4


@dataclass(frozen=True)
class NativeKey:
    """A client's public key, ready to re-randomize: NTT form for SEAL, pk0's rows for the dot products."""

    key_id: str
    public_ntt: seal.Ciphertext
    pk0_rows: np.ndarray  # (k, 3 limbs, positions, N) float64
    nbytes: int


@dataclass(frozen=True)
class _Mask:
    """One fresh u: ternary coefficients (float64) and its NTT form, for pk * u."""

    coefficients: np.ndarray
    ntt: seal.Plaintext


class MaskPool:
    """Fresh re-randomization polynomials u, made ahead of need.

    u does not depend on the client, so a background thread makes them (two per NTT call) after
    each reply, while the worker waits for the next request; a request takes prepared ones and
    none is ever used twice. When the pool runs dry (bursts) u is made on the request's own time.
    """

    def __init__(self, ring: SealRing, size: int, background: bool = True) -> None:
        self._ring, self.size = ring, size
        self._ready: deque[_Mask] = deque()
        self._wanted = threading.Event()
        self._wanted.set()
        if size and background:
            # SEAL and numpy hold the GIL; at Python's default 5 ms switch interval a request arriving
            # while this thread works waits up to 5 ms for it. 100 µs lets requests in at once.
            sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_SECONDS))
            threading.Thread(target=self._keep_full, name="mask-pool", daemon=True).start()

    def _make_pair(self) -> list[_Mask]:
        ring = self._ring
        u = random_ternary(2 * ring.params.degree).reshape(2, ring.params.degree)
        transformed = ring.polys(ring.to_ntt(from_signed(u, ring.params.data_primes)))
        return [_Mask(coefficients=u[i].astype(np.float64), ntt=ring.ntt_plaintext_from_ntt(transformed[i]))
                for i in range(2)]

    def fill(self) -> None:
        while len(self._ready) < self.size:
            self._ready.extend(self._make_pair())

    def _keep_full(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            self.fill()

    def take(self) -> _Mask:
        try:
            return self._ready.popleft()
        except IndexError:
            return self._make_pair()[0]

    def replenish(self) -> None:
        """Wake the background thread; called once a reply is built, so it works in idle time."""
        self._wanted.set()


class NativeEvaluator:
    def __init__(self, plan: NativePlan, mask_pool_size: int = 64, background_masks: bool = True) -> None:
        self.plan = plan
        public = plan.public
        self.ring = SealRing(public.params)
        self._primes = public.params.data_primes
        self._moduli = moduli_column(self._primes)
        self._positions = public.result_positions(0)  # the same local positions in every group
        weights = [plan.group_weight_poly(group) for group in range(len(public.groups))]
        self._weight_ntt = [self.ring.ntt_plaintext(from_signed(w, self._primes)) if w.any() else None
                            for w in weights]
        self._weight_rows = [negacyclic_rows(w, self._positions[: len(group)]).astype(np.float64)
                             for w, group in zip(weights, public.groups)]
        self._intercepts = self._scaled(plan.model.intercepts[[o for group in public.groups for o in group]])
        self._batch_weights = plan.model.weights.astype(np.float64)
        self._batch_intercepts = self._scaled(plan.model.intercepts)  # (k, outputs)
        self.masks = MaskPool(self.ring, mask_pool_size, background_masks)

    def _scaled(self, values: np.ndarray) -> np.ndarray:
        """round(Q * v / t) residues (k, len(v)) for signed integers v (intercepts)."""
        t = self.plan.public.params.plain_modulus
        return scale_messages(np.mod(values, t), self._primes, t)

    def prepare_key(self, blob: bytes) -> NativeKey:
        """Check a public key's bytes and precompute what re-randomization needs."""
        params = self.plan.public.params
        key = read_public_key(blob, params)
        pk1_ntt = expand_uniform(key.seed, PUBLIC_KEY_INDEX, self._primes, params.degree)
        pk0_ntt = self.ring.polys(self.ring.to_ntt(np.stack([key.pk0, key.pk0])))[0]
        public_ntt = self.ring.ciphertext(np.stack([pk0_ntt, pk1_ntt]), ntt_form=True)
        signed_rows = negacyclic_rows(key.pk0.astype(np.int64), self._positions)  # entries in (-p, p)
        rows = np.stack([split_limbs(np.mod(signed_rows[row], prime))
                         for row, prime in enumerate(self._primes)])
        return NativeKey(key_id=key_id(blob), public_ntt=public_ntt, pk0_rows=rows,
                         nbytes=rows.nbytes + 4 * pk0_ntt.nbytes)

    def _check_key(self, request: Request, key: NativeKey) -> None:
        if request.key_id != key.key_id:
            raise WireError("the request names another public key than the one it is scored with")

    def _finish(self, c0: np.ndarray, c1: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
        """Add fresh errors (and flooding) and switch to 2^bits; c0 (..., k, n), c1 (..., k, N)."""
        flooding = self.plan.public.flooding_bits
        shape0 = c0.shape[:-2] + c0.shape[-1:]
        c0 = add_small(c0, random_error(shape0), self._primes)
        if flooding:
            c0 = add_mod(c0, random_flooding(shape0, flooding, self._primes), self._moduli)
        c1 = add_small(c1, random_error(c1.shape[:-2] + c1.shape[-1:]), self._primes)
        return (switch_to_power_of_two(c0, self._primes, bits), switch_to_power_of_two(c1, self._primes, bits))

    def score_single(self, request: Request, key: NativeKey) -> bytes:
        self._check_key(request, key)
        public, ring, evaluator = self.plan.public, self.ring, self.ring.evaluator
        a_ntt = expand_uniform(request.seed, 0, self._primes, public.degree)
        a_pair = ring.ciphertext(np.stack([a_ntt, a_ntt]), ntt_form=True)
        c0_limbs = split_limbs(request.c0[0])  # (3, k, N)
        c1_ntt, partials = [], []
        for group, outputs in enumerate(public.groups):
            mask = self.masks.take()
            product = evaluator.multiply_plain(key.public_ntt, mask.ntt)
            if self._weight_ntt[group] is not None:  # SEAL refuses a product by zero ("transparent")
                evaluator.add_inplace(product, evaluator.multiply_plain(a_pair, self._weight_ntt[group]))
            c1_ntt.append(ring.polys(product)[1])  # a * w_g + pk1 * u_g, NTT domain
            # c0 * w_g + pk0 * u_g at the result positions only; both partial sums are exact in float64.
            from_mask = np.moveaxis(key.pk0_rows[:, :, : len(outputs)] @ mask.coefficients, 1, 0)
            partials.append(c0_limbs @ self._weight_rows[group].T + from_mask)
        partial = np.concatenate(partials, axis=-1)  # (3, k, outputs)
        c0 = np.stack([combine_limbs(partial[:, row], prime) for row, prime in enumerate(self._primes)])
        c0 = add_mod(c0, self._intercepts, self._moduli)
        if len(c1_ntt) == 1:
            c1_ntt.append(c1_ntt[0])
        c1 = ring.from_ntt(ring.ciphertext(np.stack(c1_ntt), ntt_form=True))[: len(public.groups)]
        c0_switched, c1_switched = self._finish(c0, c1, public.single_reply_bits)
        parts, offset = [], 0
        for group, outputs in enumerate(public.groups):
            parts += [c0_switched[offset : offset + len(outputs)], c1_switched[group]]
            offset += len(outputs)
        self.masks.replenish()
        return write_reply(Kind.SINGLE, 1, public.single_reply_bits, np.concatenate(parts))

    def score_batch(self, request: Request, key: NativeKey) -> bytes:
        self._check_key(request, key)
        public, ring, evaluator = self.plan.public, self.ring, self.ring.evaluator
        features, degree = public.n_features, public.degree
        a_ntt = np.stack([expand_uniform(request.seed, index, self._primes, degree) for index in range(features)])
        sums = np.empty((2, public.n_outputs, len(self._primes), degree), dtype=np.uint64)
        for row, prime in enumerate(self._primes):
            for poly, source in enumerate((request.c0, a_ntt)):
                limbs = split_limbs(source[:, row])  # (3, features, N)
                sums[poly, :, row] = combine_limbs(self._batch_weights @ limbs, prime)
        sums[0, :, :, 0] = add_mod(sums[0, :, :, 0], self._batch_intercepts.T, self._moduli[:, 0])
        replies = []
        for output in range(public.n_outputs):
            masked = evaluator.multiply_plain(key.public_ntt, self.masks.take().ntt)
            evaluator.add_inplace(masked, ring.ciphertext(
                np.stack([np.zeros_like(sums[1, output]), sums[1, output]]), ntt_form=True))
            c0_mask, c1 = ring.from_ntt(masked)
            c0 = add_mod(sums[0, output], c0_mask, self._moduli)
            replies.append(np.concatenate(self._finish(c0, c1, public.batch_reply_bits)))
        self.masks.replenish()
        return write_reply(Kind.BATCH, request.images, public.batch_reply_bits, np.stack(replies))
