"""Polynomials of Z_Q[X]/(X^N + 1) as numpy arrays in RNS form, shape (..., primes, N), uint64.

NumPy has no 128-bit integers, so products modulo 60-bit primes use a floating-point quotient:
`x * y - floor(x * y / p) * p` computed with wrapping uint64 arithmetic is exact whenever the
quotient is off by at most one, which holds while one factor is below 2^32 (`mul_small`). A full
60 x 60-bit product splits one factor in two 30-bit halves (`mul_mod`).

Randomness for secrets, errors and masks is a ChaCha20 keystream under a key from the operating
system (`os.urandom` itself is seven times slower); public uniform polynomials come from
ChaCha20 keyed by a 32-byte seed, so a ciphertext's second polynomial travels as its seed.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from bfv import kernels

SEED_BYTES = 32
ERROR_ETA = 21  # centred binomial with 21 + 21 coins: variance 10.5, sigma 3.24 (the HE standard's 3.2)
ERROR_SIGMA = float(np.sqrt(ERROR_ETA / 2))

_U64 = np.uint64


def moduli_column(primes: Sequence[int]) -> np.ndarray:
    """The primes shaped (k, 1), to broadcast against (..., k, N) arrays."""
    return np.array(primes, dtype=_U64)[:, None]


def mul_small(x: np.ndarray, y: np.ndarray | int, p: np.ndarray | int) -> np.ndarray:
    """(x * y) mod p for x < p < 2^62 and 0 <= y < 2^32 (array or scalar).

    x * y - q * p, with q the floating-point quotient (off by at most one), lies in (-p, 2p);
    plus p it is in (0, 3p), below 2^64, and two wrapping subtractions with a minimum reduce it.
    """
    x = np.asarray(x, dtype=_U64)
    y = np.asarray(y, dtype=_U64)
    p = np.asarray(p, dtype=_U64)
    quotient = (x.astype(np.float64) * y.astype(np.float64) / p.astype(np.float64)).astype(_U64)  # truncation floors
    remainder = np.asarray(x * y - quotient * p)
    remainder += p
    return reduce_below(reduce_below(remainder, p + p), p)


def reduce_below(values: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """values in [0, 2 * bound) reduced below `bound`, in place: where values < bound, values - bound wraps
    above 2^63 > values, so the minimum picks the right one of the two (bound < 2^63)."""
    return np.minimum(values, values - bound, out=values)


def mul_mod(x: np.ndarray, y: np.ndarray | int, p: np.ndarray | int) -> np.ndarray:
    """(x * y) mod p for x, y < p < 2^62."""
    y = np.asarray(y, dtype=_U64)
    high = mul_small(mul_small(x, y >> _U64(30), p), 1 << 30, p)
    return add_mod(high, mul_small(x, y & _U64((1 << 30) - 1), p), p)


def add_mod(x: np.ndarray, y: np.ndarray, p: np.ndarray | int) -> np.ndarray:
    """(x + y) mod p for x, y < p < 2^63."""
    total = np.asarray(x, dtype=_U64) + np.asarray(y, dtype=_U64)
    return np.minimum(total, total - np.asarray(p, dtype=_U64))  # as reduce_below, but p may broadcast wider


def from_signed(values: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    """Signed integers (|v| < 2^62) as residues: shape (..., N) -> (..., k, N)."""
    if kernels.AVAILABLE:
        return kernels.signed_residues(values, primes)
    return numpy_from_signed(values, primes)


def numpy_from_signed(values: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    """`from_signed` in numpy (the reference of `kernels.signed_residues`).

    Values in [-p, p) for every prime, as errors and secrets are, need no division: taken as
    uint64, a negative v is 2^64 + v, and adding p wraps it to v + p, below the unwrapped value.
    """
    values = np.asarray(values, dtype=np.int64)[..., None, :]
    moduli = moduli_column(primes)
    unsigned = values.view(_U64)
    residues = np.minimum(unsigned, unsigned + moduli)
    if (residues < moduli).all():  # every value was in [-p, p)
        return residues
    return np.mod(values, moduli.astype(np.int64)).astype(_U64)


REKEY_BLOCKS = 2**30  # ChaCha20 blocks one key serves; its 32-bit block counter never gets near a wrap


class KeyStream(threading.local):
    """A per-thread ChaCha20 keystream for secrets, errors and masks, keyed from `entropy` (os.urandom).

    Each key gets a random 12-byte nonce and a block counter that starts at 0, and serves at most
    `rekey_blocks` blocks: the counter stays far below 2^32, where cryptography refuses to go on
    (and would then fail every later read). A fresh key also means bytes already handed out cannot
    be recomputed from the stream's state afterwards. A forked or spawned process re-keys itself.
    """

    def __init__(self, rekey_blocks: int = REKEY_BLOCKS, entropy: Callable[[int], bytes] = os.urandom) -> None:
        if not 0 < rekey_blocks < 2**32:
            raise ValueError(f"a ChaCha20 key can serve 1 to 2^32 - 1 blocks, not {rekey_blocks}")
        self._capacity, self._entropy = 64 * rekey_blocks, entropy
        self._remaining, self._pid = 0, -1

    def _rekey(self) -> None:
        nonce = bytes(4) + self._entropy(12)  # cryptography's 16-byte nonce: u32 block counter, then the nonce
        self._cipher = Cipher(algorithms.ChaCha20(self._entropy(32), nonce), mode=None).encryptor()
        self._remaining, self._pid = self._capacity, os.getpid()

    def read(self, count: int) -> bytes:
        if self._pid != os.getpid():
            self._rekey()
        parts = []
        while count:
            if not self._remaining:
                self._rekey()
            take = min(count, self._remaining)
            parts.append(self._cipher.update(bytes(take)))
            self._remaining -= take
            count -= take
        return b"".join(parts)


random_bytes = KeyStream().read


def scale_messages(messages: np.ndarray, primes: Sequence[int], plain_modulus: int) -> np.ndarray:
    """round(Q * m / t) as residues (..., k, N) for messages (..., N) in [0, t), t < 2^32.

    Q * m / t = floor(Q / t) * m + (Q mod t) * m / t: the second term's rounding fits in 64 bits.
    With one prime the sum is below Q = p (m <= t - 1) and needs no reduction; with more, the first
    term is a product modulo each prime with a factor below 2^32.
    """
    modulus = math.prod(int(p) for p in primes)
    messages = np.asarray(messages, dtype=_U64)
    rounding = messages * _U64(modulus % plain_modulus)
    rounding += _U64(plain_modulus // 2)
    rounding //= _U64(plain_modulus)
    if len(primes) == 1:
        rounding += messages * _U64(modulus // plain_modulus)
        return rounding[..., None, :]
    scaled = np.empty(messages.shape[:-1] + (len(primes), messages.shape[-1]), dtype=_U64)
    for row, prime in enumerate(primes):
        scaled[..., row, :] = add_mod(mul_small(messages, (modulus // plain_modulus) % prime, prime),
                                      rounding % _U64(prime), prime)
    return scaled


_TERNARY_OF_BYTE = np.arange(243, dtype=np.int64) % 3 - 1  # a table lookup, not a division per byte


def random_ternary(count: int) -> np.ndarray:
    """Uniform coefficients in {-1, 0, 1} (bytes >= 243 are rejected)."""
    to_ternary = kernels.ternary if kernels.AVAILABLE else numpy_ternary
    out = np.empty(0, dtype=np.int64)
    while out.size < count:
        out = np.concatenate([out, to_ternary(random_bytes(count + count // 16 + 64), count - out.size)])
    return out


def numpy_ternary(random: bytes, room: int) -> np.ndarray:
    """Up to `room` values in {-1, 0, 1} from random bytes, in order, a byte b < 243 giving b % 3 - 1
    (the reference of `kernels.ternary`)."""
    raw = np.frombuffer(random, dtype=np.uint8)
    return _TERNARY_OF_BYTE[raw[raw < 243]][:room]


def random_below(bound: int, count: int) -> np.ndarray:
    """Uniform integers in [0, bound) (uint64) for 2 <= bound <= 2^32, exactly uniform: 32-bit words
    masked to bound's bit length, the ones not below it rejected (one pad value in the undeclared
    slots of a batch reply must tell nothing about the score it covers)."""
    mask = np.uint32((1 << (bound - 1).bit_length()) - 1)
    out = np.empty(0, dtype=_U64)
    while out.size < count:
        words = np.frombuffer(random_bytes(4 * (count + count // 2 + 64)), dtype="<u4") & mask
        out = np.concatenate([out, words[words < bound].astype(_U64)])
    return out[:count]


def random_error(shape: tuple[int, ...]) -> np.ndarray:
    """Centred binomial errors (int64), the distribution SEAL and the HE standard use: the 1 bits
    among a 64-bit word's low ERROR_ETA bits minus those among the next ERROR_ETA."""
    to_errors = kernels.centred_binomial if kernels.AVAILABLE else numpy_centred_binomial
    return to_errors(error_words(shape), ERROR_ETA)


def numpy_centred_binomial(words: np.ndarray, eta: int) -> np.ndarray:
    """The 1 bits among each word's low `eta` bits minus those among the next `eta` (int64; the
    reference of `kernels.centred_binomial`)."""
    mask = (1 << eta) - 1
    coins = np.bitwise_count(words & _U64(mask)).astype(np.int64)
    coins -= np.bitwise_count(words & _U64(mask << eta))
    return coins


def random_flooding(shape: tuple[int, ...], bits: int, primes: Sequence[int]) -> np.ndarray:
    """Uniform integers in [-2^bits, 2^bits) as residues (..., k, n) for `shape` (..., n), for
    statistical noise flooding; bits < 120, so the value is drawn as two words, high * 2^60 + low."""
    words = np.frombuffer(random_bytes(16 * int(np.prod(shape))), dtype=np.uint64).reshape(2, *shape)
    low_bits = min(bits + 1, 60)
    high_bits = bits + 1 - low_bits
    low = words[0] >> _U64(64 - low_bits)
    high = words[1] >> _U64(64 - high_bits) if high_bits else np.zeros_like(low)
    out = []
    for prime in primes:
        value = add_mod(mul_mod(high % _U64(prime), (1 << 60) % prime, prime), low % _U64(prime), prime)
        out.append(add_mod(value, prime - pow(2, bits, prime), prime))
    return np.stack(out, axis=-2)


@lru_cache(maxsize=4)
def _zero_bytes(size: int) -> bytes:
    """`size` zero bytes, kept: what the keystream is XORed into."""
    return bytes(size)


def expand_uniform(seed: bytes, index: int, primes: Sequence[int], degree: int) -> np.ndarray:
    """Polynomial `index` of the public uniform sequence of `seed`: (k, N) uniform residues.

    64-bit words of the ChaCha20 keystream keyed by the seed (nonce: index and prime) are masked
    to each prime's bit length and the ones not below the prime rejected, so every residue is
    exactly uniform. A 60-bit prime rejects a word with probability ~2^-46, so the first N words
    are almost always the answer; the keystream is read on in order when they are not.
    """
    out = np.empty((len(primes), degree), dtype=_U64)
    zeros = _zero_bytes(8 * degree)
    for row, prime in enumerate(primes):
        mask = _U64((1 << prime.bit_length()) - 1)
        nonce = b"EIN1" + index.to_bytes(4, "little") + row.to_bytes(4, "little") + bytes(4)
        stream = Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor()
        stream.update_into(zeros, memoryview(out[row]).cast("B"))  # the keystream, written in place
        if sys.byteorder == "big":  # its words are little-endian
            out[row].byteswap(inplace=True)
        np.bitwise_and(out[row], mask, out=out[row])
        if (out[row] < _U64(prime)).all():
            continue
        accepted = out[row][out[row] < _U64(prime)]
        while accepted.size < degree:
            words = np.frombuffer(stream.update(bytes(8 * (degree // 8 + 16))), dtype="<u8") & mask
            accepted = np.concatenate([accepted, words[words < _U64(prime)]])
        out[row] = accepted[:degree]
    return out


def residue_fraction(residues: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    """c / Q mod 1 (float64, shape (..., N)) for c given by its residues (..., k, N).

    CRT: c / Q = frac(sum_i [c_i * (Q/p_i)^-1]_{p_i} / p_i). The float sum is good to ~2^-52.
    Fractions add: (c + d) / Q = c / Q + d / Q mod 1, so terms known in advance are added as fractions.
    """
    if len(primes) == 1:
        return residues[..., 0, :].astype(np.float64) * (1.0 / primes[0])
    modulus = int(np.prod([int(p) for p in primes], dtype=object))
    fraction = np.zeros(residues.shape[:-2] + residues.shape[-1:], dtype=np.float64)
    for row, prime in enumerate(primes):
        share = mul_mod(residues[..., row, :], pow(modulus // prime, -1, prime), prime)
        fraction += share.astype(np.float64) / float(prime)
    return fraction - np.floor(fraction)


def fraction_to_power_of_two(fraction: np.ndarray, bits: int) -> np.ndarray:
    """round(f * 2^bits) mod 2^bits (uint64) for fractions f (any real; only f mod 1 matters).

    With f good to ~2^-52 (a sum of a few fractions below 2), the result is off by at most one
    unit of 2^-bits for bits <= 42 (the widest replies, N * 2^bits <= 2^53 at N = 2048), which is one more
    rounding error of the same size as the rounding itself.
    """
    values = np.rint(fraction * float(1 << bits)).astype(np.int64)
    values &= (1 << bits) - 1
    return values.view(_U64)


def add_small(residues: np.ndarray, small: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    """residues (..., k, N) + small signed integers (..., N) with |small| < 2^62, reduced."""
    return add_mod(residues, from_signed(small, primes), moduli_column(primes))


def error_words(shape: tuple[int, ...]) -> np.ndarray:
    """Fresh random words (uint64), one per error of `add_errors`: drawn ahead of the errors' use if need be."""
    return np.frombuffer(random_bytes(8 * math.prod(shape)), dtype=np.uint64).reshape(shape)


def add_errors(residues: np.ndarray, words: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    """residues (rows, k, N) plus the centred binomial errors (rows, N) of `words` (`random_error`'s
    distribution), reduced: in place where the compiled loops run, the same errors either way."""
    if not kernels.AVAILABLE:
        return add_small(residues, numpy_centred_binomial(words, ERROR_ETA), primes)
    kernels.add_centred_binomial(residues, words, ERROR_ETA, primes)
    return residues


def add_random_errors(residues: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    """residues (rows, k, N) plus fresh errors (rows, N), `random_error`'s, reduced: in place where the
    compiled loops run. The same errors from the same keystream either way."""
    return add_errors(residues, error_words((residues.shape[0], residues.shape[-1])), primes)


def round_scale(values: np.ndarray, numerator: int, bits: int) -> np.ndarray:
    """round(values * numerator / 2^bits) for 0 <= values < 2^bits <= 2^62, numerator < 2^32 (int64).

    values = high * 2^s + low with s = bits - 30 keeps every product below 2^62.
    """
    values = np.asarray(values, dtype=_U64)
    shift = max(bits - 30, 0)
    high, low = values >> _U64(shift), values & _U64((1 << shift) - 1)
    scaled = high * _U64(numerator) + ((low * _U64(numerator)) >> _U64(shift))  # in units of 2^(bits - shift)
    return ((scaled + _U64(1 << (bits - shift - 1))) >> _U64(bits - shift)).astype(np.int64)


RESIDUE_BITS = 60  # every data prime is below 2^60
FLOAT_EXACT_BITS = 53


def limb_bits(terms: int, factor_bits: int) -> int:
    """The widest limbs (at most 30 bits) for which a dot product of `terms` limbs with integer
    factors below 2^factor_bits in magnitude stays below 2^53, so float64 BLAS computes it exactly."""
    bits = min(30, FLOAT_EXACT_BITS - factor_bits - (terms - 1).bit_length())
    if bits < 1:
        raise ValueError(f"{terms} terms of {factor_bits}-bit factors cannot be summed exactly in float64")
    return bits


def split_limbs(residues: np.ndarray, bits: int) -> np.ndarray:
    """Residues (..., N) as float64 limbs (limbs, ..., N) of `bits` bits, for exact BLAS dot products."""
    if kernels.AVAILABLE:
        return kernels.split_limbs(residues, bits, -(-RESIDUE_BITS // bits))
    return numpy_split_limbs(residues, bits)


def numpy_split_limbs(residues: np.ndarray, bits: int) -> np.ndarray:
    """`split_limbs` in numpy (the reference of `kernels.split_limbs`)."""
    residues = np.asarray(residues, dtype=_U64)
    mask = _U64((1 << bits) - 1)
    out = np.empty((-(-RESIDUE_BITS // bits),) + residues.shape, dtype=np.float64)
    for limb in range(out.shape[0]):
        # Converted on assignment; from int64 (exact: below 2^60), which numpy converts faster than uint64.
        out[limb] = ((residues >> _U64(bits * limb)) & mask).view(np.int64)
    return out


def combine_limbs(partials: np.ndarray, prime: int, bits: int) -> np.ndarray:
    """sum_l partials[l] * 2^(bits * l) mod prime, for exact integer-valued float64 partials (limbs, ...)."""
    signed_prime = np.int64(prime)
    reduced = [np.mod(np.rint(part).astype(np.int64), signed_prime).astype(_U64) for part in partials]
    total = reduced[-1]
    for part in reversed(reduced[:-1]):
        total = add_mod(mul_small(total, 1 << bits, prime), part, prime)
    return total


def small_dot_mod(weights: np.ndarray, values: np.ndarray, modulus: int) -> np.ndarray:
    """weights @ values mod a modulus below 2^32, for int64 weights below 2^24 and values below the modulus
    (terms up to 2^13): float64 BLAS products on the values' 16-bit halves, exact since every product is
    below 2^40 and each sum below 2^53."""
    factors = np.asarray(weights, dtype=np.float64)
    values = np.asarray(values, dtype=np.int64)
    low, high = (factors @ (half.astype(np.float64)) for half in (values & 0xFFFF, values >> 16))
    return (np.rint(low).astype(np.int64) + np.rint(high).astype(np.int64) % modulus * 65536) % modulus


def weighted_sum_mod(weights: np.ndarray, residues: np.ndarray, prime: int, bits: int, per_slice: int = 128
                     ) -> np.ndarray:
    """weights @ residues mod prime (outputs, n), for integer float64 weights (outputs, terms) and residues
    (terms, n) below the prime: exact float64 BLAS products on `bits`-bit limbs (`limb_bits`), `per_slice`
    terms at a time (the limbs of every term at once would be float64 copies of all of them), summed in
    place (a new sum per slice costs as much as the products)."""
    total = part = None
    for start in range(0, residues.shape[0], per_slice):
        limbs = split_limbs(residues[start : start + per_slice], bits)
        if total is None:
            total = weights[:, start : start + per_slice] @ limbs
            part = np.empty_like(total)
        else:
            total += np.matmul(weights[:, start : start + per_slice], limbs, out=part)
    return combine_limbs(total, prime, bits)


def negacyclic_rows(poly: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Rows r_j with (x * poly)[positions[j]] = r_j . x in Z[X]/(X^N + 1); same dtype as `poly`."""
    degree = poly.shape[-1]
    k = np.arange(degree)
    rows = []
    for position in positions:
        wrapped = poly[..., (position - k) % degree]
        rows.append(np.where(k <= position, wrapped, -wrapped))
    return np.stack(rows, axis=-2)


def negacyclic_at(small: np.ndarray, residues: np.ndarray, positions: np.ndarray, primes: Sequence[int],
                  small_bits: int) -> np.ndarray:
    """Coefficients `positions` of small * c in Z_Q[X]/(X^N + 1), as residues (k, len(positions)):
    `small` (N,) signed integers below 2^small_bits in magnitude, c given by its residues (k, N)."""
    if kernels.AVAILABLE:
        out = np.empty((len(primes), len(positions)), dtype=_U64)
        for row, prime in enumerate(primes):
            kernels.negacyclic_at(small, residues[row], positions, prime, out=out[row])
        return out
    return numpy_negacyclic_at(small, residues, positions, primes, small_bits)


def numpy_negacyclic_at(small: np.ndarray, residues: np.ndarray, positions: np.ndarray, primes: Sequence[int],
                        small_bits: int) -> np.ndarray:
    """`negacyclic_at` in numpy (the reference of `kernels.negacyclic_at`): exact float64 dot products of
    `small`'s negacyclic rows with limbs of the residues (each partial sum below 2^53), then combined
    modulo each prime."""
    bits = limb_bits(small.shape[-1], small_bits)
    rows = negacyclic_rows(np.asarray(small, dtype=np.int64), positions).astype(np.float64)
    limbs = split_limbs(residues, bits)  # (limbs, k, N)
    sums = rows @ limbs.reshape(-1, limbs.shape[-1]).T  # (positions, limbs * k)
    sums = sums.reshape(len(positions), limbs.shape[0], len(primes)).transpose(1, 2, 0)  # (limbs, k, positions)
    return np.stack([combine_limbs(sums[:, row], prime, bits) for row, prime in enumerate(primes)])


def dot_mod(x: np.ndarray, w: np.ndarray, extra: tuple[np.ndarray, np.ndarray], prime: int) -> np.ndarray:
    """sum_k x[k] * w[k] + extra_x * extra_w mod p (n,) for residues (terms, n) and (n,) below the prime,
    `extra` = (extra_x, extra_w)."""
    if kernels.AVAILABLE:
        return kernels.dot_mod(x, w, extra, prime)
    return numpy_dot_mod(np.concatenate([x, extra[0][None]]), np.concatenate([w, extra[1][None]]), prime)


def numpy_dot_mod(x: np.ndarray, w: np.ndarray, prime: int) -> np.ndarray:
    """sum_k x[k] * w[k] mod p (n,) in numpy (the reference of `kernels.dot_mod`)."""
    total = np.zeros(x.shape[1], dtype=_U64)
    for row, factor in zip(np.asarray(x, dtype=_U64), np.asarray(w, dtype=_U64)):
        total = add_mod(total, mul_mod(row, factor, prime), prime)
    return total
