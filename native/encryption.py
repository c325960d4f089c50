"""The client's half: secret key, public key, encryption of inputs and decryption of replies.

Encryption is symmetric (secret-key) RLWE in the BFV layout, c0 = -a*s + e + round(Q*m/t) with
a = `expand_uniform(seed, i)` taken as an NTT-domain polynomial, so only c0 and a 32-byte seed
travel. The public key (pk0 = -a*s + e, with its own seed for a) is uploaded once; the server uses
it only to re-randomize replies. The secret key never leaves this object.
"""

from __future__ import annotations

import numpy as np

from native.plan import PublicPlan
from native.ring import (SEED_BYTES, add_mod, expand_uniform, from_signed, moduli_column, random_bytes,
                         random_error, random_ternary, round_scale, scale_messages)
from native.seal_ring import SealRing
from native.wire import Kind, PublicKey, Request, key_id, read_reply, write_public_key, write_request

PUBLIC_KEY_INDEX = 0xFFFFFFFF  # index of the public key's uniform polynomial in its own seed's sequence


class ClientKeys:
    """A fresh key pair for one server's plan; encrypts requests and decrypts replies."""

    def __init__(self, plan: PublicPlan) -> None:
        self.plan = plan
        self.ring = SealRing(plan.params)
        params = plan.params
        self._primes = params.data_primes
        self._moduli = moduli_column(params.data_primes)
        self._secret = random_ternary(params.degree)
        residues = from_signed(self._secret, self._primes)
        self._secret_ntt = self.ring.ntt_plaintext(residues)
        seed = random_bytes(SEED_BYTES)
        self.public_key = write_public_key(PublicKey(seed=seed, pk0=self._encrypt_zero(seed, PUBLIC_KEY_INDEX)), params)
        self.key_id = key_id(self.public_key)
        # Row j holds s's negacyclic coefficients so that (c1 * s)[r_j] = row_j . c1, for single replies.
        self._secret_rows = [self._negacyclic_rows(plan.result_positions(group)) for group in range(len(plan.groups))]

    def _negacyclic_rows(self, positions: np.ndarray) -> np.ndarray:
        degree = self.plan.degree
        k = np.arange(degree)
        rows = np.empty((positions.size, degree), dtype=np.float64)
        for row, position in enumerate(positions):
            index = (position - k) % degree
            rows[row] = np.where(k <= position, self._secret[index], -self._secret[index])
        return rows

    def _times_secret(self, polys_ntt: np.ndarray) -> np.ndarray:
        """a * s in coefficients, for one or two NTT-domain polynomials (rows of `polys_ntt`)."""
        pair = polys_ntt if polys_ntt.shape[0] == 2 else np.concatenate([polys_ntt, polys_ntt])
        return self.ring.multiply_ntt(pair, self._secret_ntt)[: polys_ntt.shape[0]]

    def _encrypt_zero(self, seed: bytes, index: int) -> np.ndarray:
        a_ntt = expand_uniform(seed, index, self._primes, self.plan.degree)[None]
        minus_as = (self._moduli - self._times_secret(a_ntt)[0]) % self._moduli
        return add_mod(minus_as, from_signed(random_error((self.plan.degree,)), self._primes), self._moduli)

    def _encrypt(self, messages: np.ndarray, seed: bytes) -> np.ndarray:
        """c0 of each message (count, N) -> (count, k, N)."""
        count, degree = messages.shape
        c0 = np.empty((count, len(self._primes), degree), dtype=np.uint64)
        for start in range(0, count, 2):
            stop = min(start + 2, count)
            a_ntt = np.stack([expand_uniform(seed, index, self._primes, degree) for index in range(start, stop)])
            products = self._times_secret(a_ntt)
            c0[start:stop] = (self._moduli - products) % self._moduli
        noise = from_signed(random_error((count, degree)), self._primes)
        scaled = scale_messages(messages, self._primes, self.plan.params.plain_modulus)
        return add_mod(add_mod(c0, noise, self._moduli), scaled, self._moduli)

    def _as_message(self, values: np.ndarray) -> np.ndarray:
        return np.mod(np.asarray(values, dtype=np.int64), self.plan.params.plain_modulus).astype(np.uint64)

    def encrypt_single(self, inputs: np.ndarray) -> bytes:
        """A request for one sample of integer inputs (n_features,)."""
        message = np.zeros((1, self.plan.degree), dtype=np.int64)
        message[0, : self.plan.n_features] = inputs
        seed = random_bytes(SEED_BYTES)
        c0 = self._encrypt(self._as_message(message), seed)
        return write_request(Request(Kind.SINGLE, 1, self.key_id, seed, c0), self.plan.params)

    def encrypt_batch(self, inputs: np.ndarray) -> bytes:
        """A request for up to N samples of integer inputs (images, n_features): one ciphertext per feature."""
        images = inputs.shape[0]
        slots = np.zeros((self.plan.n_features, self.plan.degree), dtype=np.uint64)
        slots[:, :images] = self._as_message(inputs.T)
        messages = np.stack([self.ring.batch_encode(row) for row in slots])
        seed = random_bytes(SEED_BYTES)
        c0 = self._encrypt(messages, seed)
        return write_request(Request(Kind.BATCH, images, self.key_id, seed, c0), self.plan.params)

    def _plain(self, phases: np.ndarray, bits: int) -> np.ndarray:
        """Plaintext coefficients in [0, t) from phases c0 + c1*s modulo 2^bits."""
        t = self.plan.params.plain_modulus
        return np.mod(round_scale(phases, t, bits), t).astype(np.uint64)

    def _centred(self, values: np.ndarray) -> np.ndarray:
        t = self.plan.params.plain_modulus
        values = values.astype(np.int64)
        return np.where(values > t // 2, values - t, values)

    def decrypt_single(self, reply: bytes) -> np.ndarray:
        """Integer scores (n_outputs,) from a single-image reply."""
        plan, bits = self.plan, self.plan.single_reply_bits
        sizes = [len(group) + plan.degree for group in plan.groups]
        _, values = read_reply(reply, Kind.SINGLE, bits, sum(sizes))
        scores = np.zeros(plan.n_outputs, dtype=np.int64)
        offset = 0
        for group, outputs in enumerate(plan.groups):
            c0 = values[offset : offset + len(outputs)].astype(np.int64)
            c1 = values[offset + len(outputs) : offset + sizes[group]].astype(np.float64)
            offset += sizes[group]
            c1_s = (self._secret_rows[group] @ c1).astype(np.int64)  # exact: |sum| < N * 2^bits < 2^53
            phases = np.mod(c0 + c1_s, 1 << bits).astype(np.uint64)
            scores[list(outputs)] = self._centred(self._plain(phases, bits))
        return scores

    def decrypt_batch(self, reply: bytes) -> np.ndarray:
        """Integer scores (images, n_outputs) from a batch reply."""
        plan, bits, degree, k = self.plan, self.plan.batch_reply_bits, self.plan.degree, len(self._primes)
        images, values = read_reply(reply, Kind.BATCH, bits, plan.n_outputs * 2 * degree)
        polys = values.reshape(plan.n_outputs, 2, degree)
        scores = np.zeros((images, plan.n_outputs), dtype=np.int64)
        first_prime = self._primes[0]
        for start in range(0, plan.n_outputs, 2):
            outputs = list(range(start, min(start + 2, plan.n_outputs)))
            pair = np.repeat(polys[outputs, 1][:, None, :], k, axis=1)
            if len(outputs) == 1:
                pair = np.concatenate([pair, pair])
            # c1 < 2^bits and s is ternary: c1 * s is an integer below N * 2^bits < p / 2, read off centred.
            products = self.ring.multiply(pair, self._secret_ntt)[: len(outputs), 0].astype(np.int64)
            products = np.where(products > first_prime // 2, products - first_prime, products)
            for row, output in enumerate(outputs):
                phases = np.mod(polys[output, 0].astype(np.int64) + products[row], 1 << bits).astype(np.uint64)
                slots = self.ring.batch_decode(self._plain(phases, bits))
                scores[:, output] = self._centred(slots)[:images]
        return scores
