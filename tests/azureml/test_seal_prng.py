"""The numpy reproduction of SEAL 3.5's seed expansion, checked piece by piece against references."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from service.azureml.seal_prng import (
    BUFFER_BYTES,
    _IV,
    blake2b_compress_last,
    blake_prng_bytes,
    sample_uniform_polys,
)


@pytest.mark.parametrize("node_offset", [0, 5, 63])
def test_vectorised_blake2b_matches_hashlib(node_offset: int) -> None:
    """hashlib cannot set depth=0 (what BLAKE2Xb's output blocks use), but it can hash with depth=1:
    the same compression with that one parameter changed must give hashlib's digest."""
    root = os.urandom(64)
    expected = hashlib.blake2b(root, digest_size=64, fanout=1, depth=1, leaf_size=64,
                               node_offset=(BUFFER_BYTES << 32) | node_offset, inner_size=64).digest()
    h = _IV.copy()[:, None].copy()
    h[0] ^= np.uint64(64 | (1 << 16) | (1 << 24) | (64 << 32))
    h[1] ^= np.uint64(node_offset | (BUFFER_BYTES << 32))
    h[2] ^= np.uint64(64 << 8)
    m = np.zeros((16, 1), dtype=np.uint64)
    m[:8, 0] = np.frombuffer(root, dtype="<u8")
    assert blake2b_compress_last(h, m, 64).T.astype("<u8").tobytes() == expected


def test_prng_stream_is_deterministic_and_buffer_aligned() -> None:
    seed = bytes(range(64))
    whole = blake_prng_bytes(seed, 0, 3)
    assert len(whole) == 3 * BUFFER_BYTES
    assert blake_prng_bytes(seed, 1, 2) == whole[BUFFER_BYTES:]
    assert blake_prng_bytes(bytes(64), 0, 1) != whole[:BUFFER_BYTES]


def reference_sampler(seed: bytes, moduli: list[int], degree: int) -> np.ndarray:
    """SEAL 3.5.4's `sample_poly_uniform`, one coefficient at a time, over the same byte stream."""
    stream = np.frombuffer(blake_prng_bytes(seed, 0, 64), dtype="<u4")
    position = 0
    out = np.empty((len(moduli), degree), dtype=np.uint64)
    max_random = (1 << 63) - 1
    for row, modulus in enumerate(moduli):
        max_multiple = max_random - (max_random % modulus) - 1
        for column in range(degree):
            while True:
                value = (int(stream[position]) << 31) | (int(stream[position + 1]) >> 1)
                position += 2
                if value < max_multiple:
                    break
            out[row, column] = value % modulus
    return out


@pytest.mark.parametrize("moduli", [
    [1152921504606748673, 1099510890497],       # the tutorial's 60- and 40-bit primes
    [(1 << 62) + 135, (1 << 61) + 1],            # moduli that reject about half and a quarter of the draws
])
def test_vectorised_sampler_matches_the_scalar_reference(moduli: list[int]) -> None:
    seed = os.urandom(64)
    np.testing.assert_array_equal(sample_uniform_polys(seed, moduli, 4096), reference_sampler(seed, moduli, 4096))


def test_samples_are_reduced() -> None:
    moduli = [1152921504606748673, 1099510890497, 1099511480321]
    samples = sample_uniform_polys(os.urandom(64), moduli, 8192)
    assert (samples < np.array(moduli, dtype=np.uint64)[:, None]).all()
