"""Compiled negacyclic NTTs in SEAL's domain (`ein_ntt_forward`, `ein_ntt_inverse` in bfv/_kernels.c).

SEAL stays the definition of the domain: a ring's tables are built from SEAL's own transform of the
polynomial X, whose coefficient i is psi^(2 * bitrev(i) + 1) for SEAL's 2N-th root of unity psi, and they
are used only if that whole vector is what these tables predict (`NttTables.matching`). So every
polynomial SEAL transformed before (public keys, weights in NTT form) stays valid, and the compiled
transforms skip SEAL's serialized objects: about half the time per polynomial (docs/performance.md).
Like every compiled loop, they take residues already reduced below their prime.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bfv import kernels


def _bit_reversed(count: int) -> np.ndarray:
    """bitrev(i) over log2(count) bits, for i < count."""
    bits = count.bit_length() - 1
    indices = np.arange(count)
    reversed_ = np.zeros(count, dtype=np.int64)
    for bit in range(bits):
        reversed_ |= ((indices >> bit) & 1) << (bits - 1 - bit)
    return reversed_


def _powers(base: int, count: int, prime: int) -> np.ndarray:
    powers, value = [], 1
    for _ in range(count):
        powers.append(value)
        value = value * base % prime
    return np.array(powers, dtype=np.uint64)


@dataclass(frozen=True)
class NttTables:
    """One prime's twiddle factors, in the order the compiled butterflies read them, with Shoup quotients."""

    prime: int
    roots: np.ndarray
    roots_shoup: np.ndarray
    inverse_roots: np.ndarray
    inverse_roots_shoup: np.ndarray
    scale: tuple[int, int]  # N^-1 mod p and its Shoup quotient

    @classmethod
    def matching(cls, prime: int, transformed_x: np.ndarray) -> NttTables | None:
        """The tables of SEAL's transform modulo `prime`, given SEAL's transform of X (N residues), or None
        if that transform is not the one these butterflies compute."""
        degree = transformed_x.size
        psi = int(transformed_x[0])
        order = _bit_reversed(degree)
        powers = _powers(psi, 2 * degree, prime)
        if pow(psi, degree, prime) != prime - 1 or not np.array_equal(powers[2 * order + 1], transformed_x):
            return None
        roots = powers[:degree][order]
        inverse_roots = _powers(pow(psi, -1, prime), degree, prime)[order]
        n_inverse = pow(degree, -1, prime)
        return cls(prime, roots, kernels.shoup_quotients(roots, prime), inverse_roots,
                   kernels.shoup_quotients(inverse_roots, prime),
                   (n_inverse, int(kernels.shoup_quotients(np.array([n_inverse], dtype=np.uint64), prime)[0])))


def transform(rows: np.ndarray, tables: list[NttTables], inverse: bool = False) -> np.ndarray:
    """Residues (..., k, N), each below its prime, to (`inverse`: from) the NTT domain, as a new array."""
    if np.ndim(rows) < 2 or np.shape(rows)[-2] != len(tables):
        raise ValueError(f"residues (..., {len(tables)}, N) for {len(tables)} primes, not {np.shape(rows)}")
    out = np.array(rows, dtype=np.uint64, order="C", copy=True)
    flat = out.reshape(-1, len(tables), out.shape[-1])
    for index, table in enumerate(tables):
        # one prime: its rows are the whole array, transformed in place; several: each prime's rows gathered
        polys = flat[:, 0] if len(tables) == 1 else np.ascontiguousarray(flat[:, index])
        if inverse:
            kernels.ntt(polys, table.prime, table.inverse_roots, table.inverse_roots_shoup, table.scale)
        else:
            kernels.ntt(polys, table.prime, table.roots, table.roots_shoup)
        if len(tables) > 1:
            flat[:, index] = polys
    return out
