"""The compiled hot loops (`bfv/_kernels.c`), when `pip install` could build them.

The extension is optional: where no C compiler is found, installation goes on without it and
`bitpack` and `ring` use their numpy code, and `seal_ring` SEAL's transforms, which are also the
references the compiled loops are tested against bit for bit (tests/protocol/test_compiled_loops.py).
`STATUS` says which one runs; the service logs it at start.

The library has no Python API (it builds without Python's headers) and is called through ctypes
with raw addresses; the wrappers here own every size check, the C code trusts them.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

_ADDRESS, _SIZE, _WIDTH = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint
_SIGNATURES = [
    ("ein_pack", [_ADDRESS, _SIZE, _WIDTH, _ADDRESS], None),
    ("ein_pack_fractions", [_ADDRESS, _SIZE, _WIDTH, _ADDRESS], None),
    ("ein_unpack", [_ADDRESS, _SIZE, _WIDTH, _ADDRESS], None),
    ("ein_ternary", [_ADDRESS, _SIZE, _ADDRESS, _SIZE], _SIZE),
    ("ein_centred_binomial", [_ADDRESS, _SIZE, _WIDTH, _ADDRESS], None),
    ("ein_signed_residues", [_ADDRESS, _SIZE, _SIZE, _ADDRESS, _SIZE, _ADDRESS], None),
    ("ein_negacyclic_at", [_ADDRESS, _ADDRESS, _SIZE, _ADDRESS, _SIZE, ctypes.c_uint64, _ADDRESS, _ADDRESS],
     ctypes.c_int),
    ("ein_split_limbs", [_ADDRESS, _SIZE, _WIDTH, _SIZE, _ADDRESS], None),
    ("ein_add_centred_binomial", [_ADDRESS, _ADDRESS, _SIZE, _SIZE, _WIDTH, _ADDRESS, _SIZE], None),
    ("ein_shoup", [_ADDRESS, _SIZE, ctypes.c_uint64, _ADDRESS], None),
    ("ein_dot_mod", [_ADDRESS, _ADDRESS, _SIZE, _SIZE, _ADDRESS, _ADDRESS, ctypes.c_uint64, _ADDRESS], None),
    ("ein_multiply_mod", [_ADDRESS, _ADDRESS, _ADDRESS, _SIZE, ctypes.c_uint64, _ADDRESS], None),
    ("ein_ntt_forward", [_ADDRESS, _SIZE, _SIZE, ctypes.c_uint64, _ADDRESS, _ADDRESS], None),
    ("ein_ntt_inverse", [_ADDRESS, _SIZE, _SIZE, ctypes.c_uint64, _ADDRESS, _ADDRESS, ctypes.c_uint64,
                         ctypes.c_uint64], None),
]


def _load() -> tuple[ctypes.CDLL | None, str]:
    folder = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = folder / f"_kernels{suffix}"
        if path.exists():
            try:
                library = ctypes.CDLL(str(path))
            except OSError as exc:
                return None, f"numpy (compiled kernels at {path} do not load: {exc})"
            missing = [name for name, _, _ in _SIGNATURES if not hasattr(library, name)]
            if missing:
                return None, f"numpy (compiled kernels at {path} are older than this code: no {missing[0]}; reinstall)"
            for name, argtypes, restype in _SIGNATURES:
                function = getattr(library, name)
                function.argtypes, function.restype = argtypes, restype
            return library, "compiled"
    return None, "numpy (no compiled kernels: the package was installed without a C compiler)"


_LIBRARY, STATUS = _load()
AVAILABLE = _LIBRARY is not None


def _packed(function: Callable[..., None], values: np.ndarray, dtype: type, width: int, widest: int,
            prefix: bytes) -> bytearray:
    """`prefix`, then what `function` packs of `values` at `width` bits (1 to `widest`)."""
    if not 1 <= width <= widest:
        raise ValueError(f"widths are 1 to {widest} bits, not {width}")
    values = np.ascontiguousarray(values, dtype=dtype)
    out = bytearray(len(prefix) + (values.size + 7) // 8 * width)
    out[: len(prefix)] = prefix
    if values.size:  # ctypes has no address for an empty buffer, and there is nothing to write
        function(values.ctypes.data, values.size, width, ctypes.addressof(ctypes.c_char.from_buffer(out)) + len(prefix))
    return out


def pack(values: np.ndarray, width: int, prefix: bytes = b"") -> bytearray:
    """`prefix` + `values` (uint64; each < 2^width, 1 <= width <= 64) packed as `bitpack.pack`."""
    return _packed(_LIBRARY.ein_pack, values, np.uint64, width, 64, prefix)


def pack_fractions(fractions: np.ndarray, bits: int, prefix: bytes = b"") -> bytearray:
    """`prefix` + round(f * 2^bits) mod 2^bits for each of `fractions` (float64), packed at `bits` <= 52."""
    return _packed(_LIBRARY.ein_pack_fractions, fractions, np.float64, bits, 52, prefix)


def unpack(data: bytes | bytearray | memoryview, count: int, width: int) -> np.ndarray:
    """The first `count` values of exactly `(count + 7) // 8 * width` packed bytes (uint64)."""
    if not 1 <= width <= 64:
        raise ValueError(f"widths are 1 to 64 bits, not {width}")
    source = np.frombuffer(data, dtype=np.uint8)
    if source.size != (count + 7) // 8 * width:
        raise ValueError(f"{source.size} bytes cannot hold {count} values of {width} bits")
    out = np.empty(count, dtype=np.uint64)
    _LIBRARY.ein_unpack(source.ctypes.data, count, width, out.ctypes.data)
    return out


def ternary(random: bytes, room: int) -> np.ndarray:
    """Up to `room` uniform values in {-1, 0, 1} (int64) from `random` bytes, in order: a byte b < 243
    gives b % 3 - 1, the others are rejected."""
    source = np.frombuffer(random, dtype=np.uint8)
    out = np.empty(room, dtype=np.int64)
    written = _LIBRARY.ein_ternary(source.ctypes.data, source.size, out.ctypes.data, room)
    return out[:written]


def centred_binomial(words: np.ndarray, eta: int) -> np.ndarray:
    """popcount(w & m) - popcount((w >> eta) & m), m = 2^eta - 1, for each of `words` (uint64): int64."""
    if not 1 <= eta <= 32:
        raise ValueError(f"a centred binomial takes 1 to 32 coins a side, not {eta}")
    words = np.ascontiguousarray(words, dtype=np.uint64)
    out = np.empty(words.shape, dtype=np.int64)
    _LIBRARY.ein_centred_binomial(words.ctypes.data, words.size, eta, out.ctypes.data)
    return out


def split_limbs(residues: np.ndarray, bits: int, limbs: int) -> np.ndarray:
    """Residues (..., N), each below 2^60, as `limbs` float64 limbs (limbs, ..., N) of `bits` bits."""
    if not 1 <= bits <= 30 or limbs * bits < 60:
        raise ValueError(f"{limbs} limbs of {bits} bits do not hold 60-bit residues exactly")
    residues = np.ascontiguousarray(residues, dtype=np.uint64)
    out = np.empty((limbs,) + residues.shape, dtype=np.float64)
    _LIBRARY.ein_split_limbs(residues.ctypes.data, residues.size, bits, limbs, out.ctypes.data)
    return out


def add_centred_binomial(residues: np.ndarray, words: np.ndarray, eta: int, primes: Sequence[int]) -> None:
    """residues (rows, k, N) += `centred_binomial(words, eta)` (rows, N) modulo each prime, in place."""
    if residues.dtype != np.uint64 or not residues.flags.c_contiguous or residues.ndim != 3 \
            or residues.shape[1] != len(primes) or not 1 <= eta <= 32 or not 1 < max(primes) < 2**62:
        raise ValueError("contiguous uint64 residues (rows, primes, N), 1 to 32 coins, primes below 2^62")
    words = np.ascontiguousarray(words, dtype=np.uint64)
    if words.shape != (residues.shape[0], residues.shape[2]):
        raise ValueError(f"{words.shape} words for residues {residues.shape}")
    _LIBRARY.ein_add_centred_binomial(residues.ctypes.data, words.ctypes.data, residues.shape[0], residues.shape[2],
                                      eta, (ctypes.c_uint64 * len(primes))(*primes), len(primes))


def signed_residues(values: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    """Signed integers (..., N) as residues (..., k, N) modulo each of `primes` (each below 2^63)."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    if values.ndim == 0 or not 1 < max(primes) < 2**63:
        raise ValueError("residues of an array of at least one dimension, modulo primes below 2^63")
    degree = values.shape[-1]
    out = np.empty(values.shape[:-1] + (len(primes), degree), dtype=np.uint64)
    _LIBRARY.ein_signed_residues(values.ctypes.data, values.size // max(degree, 1), degree,
                                 (ctypes.c_uint64 * len(primes))(*primes), len(primes), out.ctypes.data)
    return out


def negacyclic_at(small: np.ndarray, residues: np.ndarray, positions: np.ndarray, prime: int,
                  out: np.ndarray | None = None) -> np.ndarray:
    """Coefficients `positions` of small * residues in Z_p[X]/(X^N + 1) (uint64, into `out` if given):
    `small` (N,) signed integers with |small| * 2^30 * N < 2^63, `residues` (N,) below the prime p < 2^60."""
    small = np.ascontiguousarray(small, dtype=np.int64)
    residues = np.ascontiguousarray(residues, dtype=np.uint64)
    positions = np.ascontiguousarray(positions, dtype=np.int64)
    if not residues.size == small.size > 0 or not 1 < prime < 2**60:
        raise ValueError("two polynomials of one degree (at least 1), modulo a prime below 2^60")
    out = np.empty(positions.size, dtype=np.uint64) if out is None else out
    if out.dtype != np.uint64 or out.size != positions.size or not out.flags.c_contiguous:
        raise ValueError("the result goes to a contiguous uint64 array with one place per position")
    scratch = np.empty(3 * small.size, dtype=np.int32)
    if _LIBRARY.ein_negacyclic_at(small.ctypes.data, residues.ctypes.data, small.size, positions.ctypes.data,
                                  positions.size, prime, scratch.ctypes.data, out.ctypes.data):
        raise ValueError("positions outside the degree, or small coefficients too large for exact 64-bit sums")
    return out


def shoup_quotients(residues: np.ndarray, prime: int) -> np.ndarray:
    """floor(w * 2^64 / p) of each residue w below the prime p < 2^62 (uint64, any shape)."""
    residues = np.ascontiguousarray(residues, dtype=np.uint64)
    if not 1 < prime < 2**62:
        raise ValueError("Shoup quotients modulo a prime below 2^62")
    out = np.empty_like(residues)
    _LIBRARY.ein_shoup(residues.ctypes.data, residues.size, prime, out.ctypes.data)
    return out


def dot_mod(x: np.ndarray, w: np.ndarray, extra: tuple[np.ndarray, np.ndarray], prime: int) -> np.ndarray:
    """sum_k x[k] * w[k] + extra_x * extra_w mod p (n,), for residues (terms, n) and (n,) below the prime p,
    summed in 128 bits: (terms + 1) p^2 < 2^128 (up to 15 terms for primes below 2^62, 255 below 2^60)."""
    arrays = [np.ascontiguousarray(a, dtype=np.uint64) for a in (x, w, *extra)]
    x, w, extra_x, extra_w = arrays
    if not x.shape == w.shape or x.ndim != 2 or not 1 < prime < 2**62 or (x.shape[0] + 1) * prime**2 >= 2**128 \
            or not extra_x.shape == extra_w.shape == x.shape[1:]:
        raise ValueError("two (terms, n) arrays and two (n,) of residues below a prime p under 2^62, with "
                         "(terms + 1) p^2 below 2^128")
    out = np.empty(x.shape[1], dtype=np.uint64)
    _LIBRARY.ein_dot_mod(x.ctypes.data, w.ctypes.data, x.shape[0], x.shape[1], extra_x.ctypes.data,
                         extra_w.ctypes.data, prime, out.ctypes.data)
    return out


def ntt(polys: np.ndarray, prime: int, roots: np.ndarray, roots_shoup: np.ndarray,
        scale: tuple[int, int] | None = None) -> None:
    """Negacyclic NTTs in place of `polys` (rows, N), residues below the prime p < 2^62: forward with the
    tables of `bfv.ntt.NttTables`, or, given `scale` (N^-1 mod p and its Shoup quotient), inverse."""
    n = polys.shape[-1]
    if polys.dtype != np.uint64 or not polys.flags.c_contiguous or polys.ndim != 2 or not 1 < prime < 2**62 \
            or not roots.shape == roots_shoup.shape == (n,) or n & (n - 1) or n < 2:
        raise ValueError("contiguous uint64 rows of a power-of-two degree, tables of that size, a prime below 2^62")
    roots, roots_shoup = (np.ascontiguousarray(table, dtype=np.uint64) for table in (roots, roots_shoup))
    if scale is None:
        _LIBRARY.ein_ntt_forward(polys.ctypes.data, polys.shape[0], n, prime, roots.ctypes.data,
                                 roots_shoup.ctypes.data)
    else:
        _LIBRARY.ein_ntt_inverse(polys.ctypes.data, polys.shape[0], n, prime, roots.ctypes.data,
                                 roots_shoup.ctypes.data, *scale)


def multiply_mod(x: np.ndarray, w: np.ndarray, w_shoup: np.ndarray, prime: int) -> np.ndarray:
    """x * w mod p elementwise (uint64, x's shape) for residues below the prime p < 2^62, with w's Shoup
    quotients; w and its quotients have x's last dimension and broadcast over the others."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    w, w_shoup = (np.ascontiguousarray(a, dtype=np.uint64) for a in (w, w_shoup))
    if not w.shape == w_shoup.shape == x.shape[-1:] or not 1 < prime < 2**62:
        raise ValueError("residues (..., n) times two (n,) arrays of residues below a prime under 2^62")
    out = np.empty_like(x)
    for row in range(x.size // max(x.shape[-1], 1)):
        offset = row * x.shape[-1] * 8
        _LIBRARY.ein_multiply_mod(x.ctypes.data + offset, w.ctypes.data, w_shoup.ctypes.data, x.shape[-1], prime,
                                  out.ctypes.data + offset)
    return out
