"""SEAL 3.5's seeded-polynomial expansion, reproduced bit for bit in numpy.

To halve their size, the tutorial's client's ciphertexts and key-switching keys carry their second
polynomial as a 64-byte seed. SEAL 3.5.x (up to 3.5.4, which the client embeds) expands it with
`BlakePRNG`, a stream of 4,096-byte blocks `blake2xb(key=seed, message=counter)` for counter
0, 1, 2, ..., and samples each coefficient by rejection from 63-bit values made of two 32-bit
words. SEAL 4 samples 64-bit values instead, so it must not expand these seeds itself.

BLAKE2Xb's output blocks are BLAKE2b hashes whose parameter block sets `depth = 0`, which
`hashlib` refuses, so those compressions run here, vectorised over every block at once; the root
hashes use `hashlib`.
"""

from __future__ import annotations

import hashlib

import numpy as np

SEED_BYTES = 64
BUFFER_BYTES = 4096
_OUT_BYTES = 64
_BLOCKS_PER_BUFFER = BUFFER_BYTES // _OUT_BYTES
_MAX_RANDOM = (1 << 63) - 1

_IV = np.array([
    0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
    0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179,
], dtype=np.uint64)

_SIGMA = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
]
_ROUNDS = [_SIGMA[r % 10] for r in range(12)]
_G_INDICES = [(0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
              (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)]


def _rotr(x: np.ndarray, n: int) -> np.ndarray:
    return (x >> np.uint64(n)) | (x << np.uint64(64 - n))


def blake2b_compress_last(h: np.ndarray, m: np.ndarray, counter: int) -> np.ndarray:
    """BLAKE2b's compression of one final block for many lanes: h (8, L), m (16, L) -> new h (8, L)."""
    v = [h[i].copy() for i in range(8)] + [np.full(h.shape[1], _IV[i], dtype=np.uint64) for i in range(8)]
    v[12] ^= np.uint64(counter)
    v[14] = ~v[14]
    for sigma in _ROUNDS:
        for g, (a, b, c, d) in enumerate(_G_INDICES):
            x, y = m[sigma[2 * g]], m[sigma[2 * g + 1]]
            v[a] = v[a] + v[b] + x
            v[d] = _rotr(v[d] ^ v[a], 32)
            v[c] = v[c] + v[d]
            v[b] = _rotr(v[b] ^ v[c], 24)
            v[a] = v[a] + v[b] + y
            v[d] = _rotr(v[d] ^ v[a], 16)
            v[c] = v[c] + v[d]
            v[b] = _rotr(v[b] ^ v[c], 63)
    return np.stack([h[i] ^ v[i] ^ v[i + 8] for i in range(8)])


def _roots(seed: bytes, first_counter: int, buffers: int) -> np.ndarray:
    """BLAKE2Xb root hashes, one per buffer: keyed by the seed, over the little-endian counter."""
    roots = b"".join(
        hashlib.blake2b(counter.to_bytes(8, "little"), digest_size=_OUT_BYTES, key=seed, fanout=1, depth=1,
                        leaf_size=0, node_offset=BUFFER_BYTES << 32, node_depth=0, inner_size=0).digest()
        for counter in range(first_counter, first_counter + buffers))
    return np.frombuffer(roots, dtype="<u8").reshape(buffers, 8)


def blake_prng_bytes(seed: bytes, first_buffer: int, buffers: int) -> bytes:
    """Buffers `first_buffer ...` of SEAL 3.5's BlakePRNG stream for `seed`, concatenated."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a SEAL seed has {SEED_BYTES} bytes, not {len(seed)}")
    roots = _roots(seed, first_buffer, buffers)
    # Every output block hashes its buffer's root with its own parameter block (node offset i).
    lanes = buffers * _BLOCKS_PER_BUFFER
    m = np.zeros((16, lanes), dtype=np.uint64)
    m[:8] = np.repeat(roots, _BLOCKS_PER_BUFFER, axis=0).T
    h = np.repeat(_IV[:, None], lanes, axis=1)
    h[0] ^= np.uint64(_OUT_BYTES | (_OUT_BYTES << 32))           # digest 64, key 0, fanout 0, depth 0, leaf 64
    offsets = np.tile(np.arange(_BLOCKS_PER_BUFFER, dtype=np.uint64), buffers)
    h[1] ^= offsets | np.uint64(BUFFER_BYTES << 32)                # node offset i, xof length 4096
    h[2] ^= np.uint64(_OUT_BYTES << 8)                             # node depth 0, inner length 64
    return blake2b_compress_last(h, m, _OUT_BYTES).T.astype("<u8").tobytes()


def sample_uniform_polys(seed: bytes, moduli: list[int], degree: int) -> np.ndarray:
    """SEAL 3.5's `sample_poly_uniform`: `len(moduli)` rows of `degree` coefficients, uniform mod each prime.

    Each candidate is `(w0 << 31) | (w1 >> 1)` from two consecutive 32-bit words of the stream and is
    rejected when at or above the largest multiple of the prime below 2^63 (minus one, as SEAL does).
    The stream for all rows is generated in one go, sized from the known acceptance rates.
    """
    limits = [_MAX_RANDOM - (_MAX_RANDOM % modulus) - 1 for modulus in moduli]
    expected_pairs = sum(degree * (1 << 63) / limit for limit in limits)
    words = np.frombuffer(blake_prng_bytes(seed, 0, _buffers_for(expected_pairs * 1.02 + 256)), dtype="<u4")
    buffers_used = len(words) * 4 // BUFFER_BYTES
    result = np.empty((len(moduli), degree), dtype=np.uint64)
    pair = 0
    for row, (modulus, limit) in enumerate(zip(moduli, limits)):
        taken = 0
        while taken < degree:
            available = len(words) // 2 - pair
            if available < degree - taken:
                extra = _buffers_for((degree - taken) * 2 + 256)
                words = np.concatenate([words[2 * pair :],
                                        np.frombuffer(blake_prng_bytes(seed, buffers_used, extra), dtype="<u4")])
                pair, buffers_used = 0, buffers_used + extra
                continue
            high = words[2 * pair : 2 * (pair + available) : 2].astype(np.uint64)
            low = words[2 * pair + 1 : 2 * (pair + available) : 2].astype(np.uint64)
            candidates = (high << np.uint64(31)) | (low >> np.uint64(1))
            accepted = np.flatnonzero(candidates < np.uint64(limit))[: degree - taken]
            result[row, taken : taken + len(accepted)] = candidates[accepted] % np.uint64(modulus)
            taken += len(accepted)
            pair += int(accepted[-1]) + 1 if taken == degree else available
    return result


def _buffers_for(pairs: float) -> int:
    """Whole PRNG buffers holding at least `pairs` candidates (8 bytes each)."""
    return int(pairs * 8) // BUFFER_BYTES + 1
