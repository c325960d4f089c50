"""The client's half: secret key, public key, encryption of inputs and decryption of replies.

Encryption is symmetric (secret-key) RLWE in the BFV layout, c0 = -a*s + e + round(Q*m/t) with
a = `expand_uniform(seed, i)` taken as an NTT-domain polynomial, so only c0 and a 32-byte seed
travel. The public key (pk0 = -a*s + e, with its own seed for a) is uploaded once; the server uses
it only to re-randomize replies. The secret key leaves this object only when its owner exports it
(`export_secret`, to keep the pair across runs: `client.keyfile`); a pair rebuilt from a stored
secret and public key is checked first: pk0 + a*s must be an error the key generation can draw.

SEAL multiplies the two polynomials of a ciphertext at a time, and a single request needs one a*s:
each request draws the next request's seed right after its own error (where the next request
would have drawn it anyway, so the keystream is read in the same order), and a request that must
compute its own a*s computes the next one's in the same call.
"""

from __future__ import annotations

import threading

import numpy as np

from bfv.plan import PublicPlan
from bfv.ring import (ERROR_ETA, SEED_BYTES, expand_uniform, from_signed, moduli_column, random_bytes, random_error,
                      random_ternary, reduce_below, round_scale, scale_messages)
from bfv.seal_ring import SealRing
from bfv.wire import (Kind, PublicKey, Request, WireError, key_id, read_public_key, read_reply, write_public_key,
                      write_request)

PUBLIC_KEY_INDEX = 0xFFFFFFFF  # index of the public key's uniform polynomial in its own seed's sequence


class StoredKeyError(ValueError):
    """A stored key pair cannot be used: malformed, made for other parameters, or its public key is
    not its secret key's."""


class ClientKeys:
    """A key pair for one server's plan; encrypts requests and decrypts replies.

    A fresh pair by default; `secret` (as `export_secret` gave it) and `public_key` (its bytes)
    rebuild a stored one, after checking that the public key belongs to the secret and to this
    plan's parameters (`StoredKeyError` otherwise).

    Requests from several threads are safe: a lock hands each request its own seed.
    """

    def __init__(self, plan: PublicPlan, *, secret: bytes | None = None, public_key: bytes | None = None) -> None:
        if (secret is None) != (public_key is None):
            raise ValueError("a stored key pair needs both its secret key and its public key")
        self.plan = plan
        self.ring = SealRing(plan.params)
        params = plan.params
        self._primes = params.data_primes
        self._moduli = moduli_column(params.data_primes)
        self._twice_moduli = self._moduli * np.uint64(2)
        self._secret = random_ternary(params.degree) if secret is None else self._imported_secret(secret)
        residues = from_signed(self._secret, self._primes)
        self._secret_ntt = self.ring.ntt_factor(residues)
        # How many polynomials one product takes: SEAL's two, or in the compiled loops up to 64 at once (a
        # batch's hundreds of ciphertexts in slices, so that its temporaries stay a few MB).
        self._per_product = 2 if self._secret_ntt.plaintext is not None else 64
        self._lock = threading.Lock()
        if public_key is None:
            seed = random_bytes(SEED_BYTES)
            noise = random_error((params.degree,))
            self._seed = random_bytes(SEED_BYTES)  # the next request's; _seed_negated is its 2p - a*s once computed
            negated, self._seed_negated = self._negated_products((seed, PUBLIC_KEY_INDEX), (self._seed, 0))
            self.public_key = write_public_key(PublicKey(seed=seed, pk0=self._c0(negated, noise)), params)
        else:
            try:
                stored = read_public_key(bytes(public_key), params)
            except WireError as exc:
                raise StoredKeyError(f"the stored public key is not one for these parameters: {exc}") from None
            self._seed = random_bytes(SEED_BYTES)
            negated, self._seed_negated = self._negated_products((stored.seed, PUBLIC_KEY_INDEX), (self._seed, 0))
            self._check_belongs(stored.pk0, negated)
            self.public_key = bytes(public_key)
        self.key_id = key_id(self.public_key)
        # Row j holds s's negacyclic coefficients so that (c1 * s)[r_j] = row_j . c1, for single replies.
        self._secret_rows = [self._negacyclic_rows(plan.result_positions(group)) for group in range(len(plan.groups))]
        # A single reply holds, group after group, c0 for each of its outputs, then c1's N coefficients.
        starts = np.cumsum([0] + [len(outputs) + plan.degree for outputs in plan.groups])
        self._single_reply_values = plan.single_reply_values
        self._single_reply_c0 = np.concatenate([start + np.arange(len(outputs))
                                                for start, outputs in zip(starts, plan.groups)])
        self._single_reply_c1 = [int(start) + len(outputs) for start, outputs in zip(starts, plan.groups)]
        self._single_reply_outputs = np.concatenate([np.asarray(outputs, dtype=np.intp) for outputs in plan.groups])

    def _imported_secret(self, secret: bytes) -> np.ndarray:
        """The ternary coefficients of an exported secret (bytes 0, 1, 2 for -1, 0, 1)."""
        data = np.frombuffer(bytes(secret), dtype=np.uint8)
        if data.size != self.plan.degree or (data > 2).any():
            raise StoredKeyError(f"a secret key for N = {self.plan.degree} is {self.plan.degree} bytes of 0, 1 or 2; "
                                 f"this one is {data.size} bytes" + (" with other values" if (data > 2).any() else ""))
        return data.astype(np.int64) - 1

    def _check_belongs(self, pk0: np.ndarray, negated: np.ndarray) -> None:
        """pk0 + a*s (= pk0 - (2p - a*s) mod p) is the key's error e, |e| <= ERROR_ETA, the same
        modulo every prime; for a public key of another secret it is uniform modulo p."""
        moduli = self._moduli.astype(np.int64)
        error = np.mod(pk0.astype(np.int64) - negated.astype(np.int64), moduli)
        error = np.where(error > moduli // 2, error - moduli, error)
        if np.abs(error).max() > ERROR_ETA or (error != error[0]).any():
            raise StoredKeyError("the stored public key does not belong to the stored secret key "
                                 f"(pk0 + a*s is not an error of at most {ERROR_ETA})")

    def export_secret(self) -> bytes:
        """The secret key's coefficients (-1, 0, 1) as bytes 0, 1, 2 (as the JavaScript client's
        `exportSecret`): with `public_key`, what rebuilds this pair. Keep it secret."""
        return (self._secret + 1).astype(np.uint8).tobytes()

    def _negacyclic_rows(self, positions: np.ndarray) -> np.ndarray:
        degree = self.plan.degree
        k = np.arange(degree)
        rows = np.empty((positions.size, degree), dtype=np.float64)
        for row, position in enumerate(positions):
            index = (position - k) % degree
            rows[row] = np.where(k <= position, self._secret[index], -self._secret[index])
        return rows

    def _negated_products(self, *polys: tuple[bytes, int], ntt_form: bool = False) -> np.ndarray:
        """2p - a*s in coefficients (or in the NTT domain), in (p, 2p], for uniform polynomials a given by
        (seed, index): any number of them, or, where SEAL multiplies (`_per_product`), one or two.

        SEAL multiplies a ciphertext's two polynomials at once; a lone one goes in twice.
        """
        a_ntt = np.stack([expand_uniform(seed, index, self._primes, self.plan.degree) for seed, index in polys])
        if len(polys) == 1 and self._per_product == 2:
            a_ntt = np.concatenate([a_ntt, a_ntt])
        product = self.ring.multiply_ntt(a_ntt, self._secret_ntt, ntt_form=ntt_form)
        return self._twice_moduli - product[: len(polys)]

    def _c0(self, negated: np.ndarray, noise: np.ndarray, scaled: np.ndarray | None = None) -> np.ndarray:
        """c0 = -a*s + e + round(Q*m/t) mod p, computed in place of `negated` (..., k, N) = 2p - a*s.

        `noise` (..., N) are the errors e (|e| <= 21), `scaled` (..., k, n) round(Q*m/t) of messages
        whose coefficients from n on are zero. The sum stays in (p - 21, 4p), so uint64 arithmetic
        (the errors added in two's complement) is exact and two wrapping subtractions reduce it.
        """
        negated += noise.view(np.uint64)[..., None, :]
        if scaled is not None:
            negated[..., : scaled.shape[-1]] += scaled
        return reduce_below(reduce_below(negated, self._twice_moduli), self._moduli)

    def _c0_ntt(self, negated: np.ndarray, noise: np.ndarray, scaled: np.ndarray) -> np.ndarray:
        """`_c0` in SEAL's NTT domain, from `negated` = 2p - a*s in that domain: NTT(e + round(Q*m/t)) - a*s.
        The message residues stay below 2p before their reduction, the sum with `negated` below 3p."""
        messages = from_signed(noise, self._primes)
        messages[..., : scaled.shape[-1]] += scaled
        negated += self.ring.ntt_rows(reduce_below(messages, self._moduli))
        return reduce_below(reduce_below(negated, self._twice_moduli), self._moduli)

    def _as_message(self, values: np.ndarray) -> np.ndarray:
        return np.mod(np.asarray(values, dtype=np.int64), self.plan.params.plain_modulus).astype(np.uint64)

    def encrypt_single(self, inputs: np.ndarray, ntt_c0: bool = False) -> bytes:
        """A request for one sample of integer inputs (n_features,); with `ntt_c0`, its c0 in SEAL's NTT
        domain (what a network's rounds multiply).

        Only the first n_features coefficients of the message are nonzero, so only they are scaled.
        """
        if self.plan.chunks > 1 or ntt_c0:
            return self._encrypt_chunks(inputs, ntt_c0)
        message = np.empty(self.plan.n_features, dtype=np.int64)
        message[:] = inputs
        scaled = scale_messages(self._as_message(message), self._primes, self.plan.params.plain_modulus)
        with self._lock:
            seed, negated = self._seed, self._seed_negated
            noise = random_error((self.plan.degree,))
            self._seed, self._seed_negated = random_bytes(SEED_BYTES), None
            if negated is None:
                negated, self._seed_negated = self._negated_products((seed, 0), (self._seed, 0))
        c0 = self._c0(negated, noise, scaled)
        return write_request(Request(Kind.SINGLE, 1, self.key_id, seed, c0[None]), self.plan.params)

    def _encrypt_chunks(self, inputs: np.ndarray, ntt_c0: bool) -> bytes:
        """One sample split over `chunks` ciphertexts of `chunk_features` coefficients each (a network's
        rounds): ciphertext i holds features i * width ... (i + 1) * width - 1."""
        plan = self.plan
        message = np.zeros(plan.chunks * plan.chunk_features, dtype=np.int64)
        message[: plan.n_features] = inputs
        messages = self._as_message(message.reshape(plan.chunks, plan.chunk_features))
        return self._encrypt_messages(Kind.SINGLE, 1, scale_messages(messages, self._primes, plan.params.plain_modulus),
                                      ntt_c0)

    def encrypt_batch(self, inputs: np.ndarray, ntt_c0: bool = False) -> bytes:
        """A request for up to N samples of integer inputs (images, n_features): one ciphertext per feature;
        with `ntt_c0`, each c0 in SEAL's NTT domain (what a network's later batch rounds multiply)."""
        images, count = inputs.shape[0], self.plan.n_features
        slots = np.zeros((count, self.plan.degree), dtype=np.uint64)
        slots[:, :images] = self._as_message(inputs.T)
        messages = np.stack([self.ring.batch_encode(row) for row in slots])
        return self._encrypt_messages(Kind.BATCH, images,
                                      scale_messages(messages, self._primes, self.plan.params.plain_modulus), ntt_c0)

    def _encrypt_messages(self, kind: Kind, images: int, scaled: np.ndarray, ntt_c0: bool = False) -> bytes:
        """A request of one ciphertext per message, `scaled` (count, k, n) = round(Q * m / t), one seed
        for them all (ciphertext i's a = expand_uniform(seed, i)); c0 in coefficients, or (`ntt_c0`) in
        SEAL's NTT domain: NTT(e + round(Q * m / t)) - a * s, as many transforms as the inverse one it saves."""
        count = scaled.shape[0]
        with self._lock:
            seed = self._seed
            noise = random_error((count, self.plan.degree))
            self._seed, self._seed_negated = random_bytes(SEED_BYTES), None
        negated = np.empty((count, len(self._primes), self.plan.degree), dtype=np.uint64)
        for start in range(0, count, self._per_product):
            stop = min(start + self._per_product, count)
            negated[start:stop] = self._negated_products(*((seed, index) for index in range(start, stop)),
                                                         ntt_form=ntt_c0)
        c0 = (self._c0_ntt if ntt_c0 else self._c0)(negated, noise, scaled)
        return write_request(Request(kind, images, self.key_id, seed, c0), self.plan.params)

    def _plain(self, phases: np.ndarray, bits: int) -> np.ndarray:
        """Plaintext coefficients in [0, t) from phases c0 + c1*s modulo 2^bits."""
        t = self.plan.params.plain_modulus
        return np.mod(round_scale(phases, t, bits), t).astype(np.uint64)

    def _centred(self, values: np.ndarray) -> np.ndarray:
        t = self.plan.params.plain_modulus
        values = values.astype(np.int64)
        return np.where(values > t // 2, values - t, values)

    def decrypt_single(self, reply: bytes) -> np.ndarray:
        """Integer scores (n_outputs,) from a single-image reply: every group's outputs in one pass."""
        plan, bits = self.plan, self.plan.single_reply_bits
        _, values = read_reply(reply, Kind.SINGLE, bits, self._single_reply_values)
        c1_s = np.concatenate([rows @ values[start : start + plan.degree].astype(np.float64)
                               for rows, start in zip(self._secret_rows, self._single_reply_c1)])
        # exact: |c1 . row| < N * 2^bits < 2^53; & keeps the phases modulo 2^bits, non-negative
        phases = (values[self._single_reply_c0].astype(np.int64) + c1_s.astype(np.int64)) & ((1 << bits) - 1)
        scores = np.zeros(plan.n_outputs, dtype=np.int64)
        scores[self._single_reply_outputs] = self._centred(self._plain(phases, bits))
        return scores

    def decrypt_batch(self, reply: bytes) -> np.ndarray:
        """Integer scores (images, n_outputs) from a batch reply."""
        plan, bits, degree, k = self.plan, self.plan.batch_reply_bits, self.plan.degree, len(self._primes)
        images, values = read_reply(reply, Kind.BATCH, bits, plan.n_outputs * 2 * degree)
        polys = values.reshape(plan.n_outputs, 2, degree)
        scores = np.zeros((images, plan.n_outputs), dtype=np.int64)
        first_prime = self._primes[0]
        for start in range(0, plan.n_outputs, self._per_product):
            outputs = list(range(start, min(start + self._per_product, plan.n_outputs)))
            pair = np.repeat(polys[outputs, 1][:, None, :], k, axis=1)
            if len(outputs) == 1 and self._per_product == 2:
                pair = np.concatenate([pair, pair])
            # c1 < 2^bits and s is ternary: c1 * s is an integer below N * 2^bits < p / 2, read off centred.
            products = self.ring.multiply(pair, self._secret_ntt)[: len(outputs), 0].astype(np.int64)
            products = np.where(products > first_prime // 2, products - first_prime, products)
            for row, output in enumerate(outputs):
                phases = np.mod(polys[output, 0].astype(np.int64) + products[row], 1 << bits).astype(np.uint64)
                slots = self.ring.batch_decode(self._plain(phases, bits))
                scores[:, output] = self._centred(slots)[:images]
        return scores
