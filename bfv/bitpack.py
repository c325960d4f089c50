"""Fixed-width bit packing of unsigned integers (1..64 bits), little-endian.

Ciphertext coefficients are below 2^60 but SEAL stores each in 8 bytes; packing them at their
real width is where most of the v1 protocol's byte savings come from. Values are packed in
groups of eight, so a group of `width`-bit values is exactly `width` bytes.

`pack`, `unpack` and `pack_fractions` run the compiled loops of `bfv.kernels` where the package
was built with them, and the numpy code below (`numpy_pack`, `numpy_unpack`) otherwise; the numpy
code is the reference both are tested against.
"""

from __future__ import annotations

import numpy as np

from bfv import kernels
from bfv.ring import fraction_to_power_of_two

_U64 = np.uint64


def packed_size(count: int, width: int) -> int:
    return (count + 7) // 8 * width


def _pairs_fit(width: int) -> bool:
    """Two values fill whole bytes and straddle at most two words: the fast path."""
    return width % 4 == 0 and 32 <= width <= 64


def _pair_bytes(words: np.ndarray, width: int) -> np.ndarray:
    """The first width / 4 bytes of each 16-byte row of `words` (pairs, 2), as one opaque item per row:
    numpy copies such items whole, where a (pairs, width / 4) uint8 view is copied byte by byte."""
    return np.ndarray(shape=(words.shape[0],), dtype=f"V{width // 4}", buffer=words, strides=(16,))


def numpy_pack(values: np.ndarray, width: int) -> bytes:
    """`values` (any shape, each < 2^width) as `packed_size(values.size, width)` bytes."""
    flat = np.asarray(values, dtype=_U64).reshape(-1)
    groups = (flat.size + 7) // 8
    padded = np.zeros(groups * 8, dtype=_U64)
    padded[: flat.size] = flat
    if _pairs_fit(width):
        pairs = padded.reshape(-1, 2)
        words = np.empty((pairs.shape[0], 2), dtype="<u8")  # each pair as 128 bits, little-endian
        np.left_shift(pairs[:, 1], _U64(width), out=words[:, 0])
        words[:, 0] |= pairs[:, 0]
        np.right_shift(pairs[:, 1], _U64(64 - width), out=words[:, 1])
        return _pair_bytes(words, width).tobytes()
    lanes = padded.reshape(groups, 8)
    out = np.zeros((groups, width + 8), dtype=np.uint8)
    for lane in range(8):
        bit = lane * width
        byte, shift = divmod(bit, 8)
        value = lanes[:, lane]
        low = (value << _U64(shift)).astype("<u8").view(np.uint8).reshape(groups, 8)
        out[:, byte : byte + 8] |= low
        if shift:
            out[:, byte + 8] |= (value >> _U64(64 - shift)).astype(np.uint8)
    return out[:, :width].tobytes()


def numpy_unpack(data: bytes | memoryview, count: int, width: int) -> np.ndarray:
    """The first `count` values packed by `numpy_pack`; `data` must be exactly `packed_size` bytes."""
    groups = (count + 7) // 8
    if len(data) != groups * width:
        raise ValueError(f"{len(data)} bytes cannot hold {count} values of {width} bits")
    mask = _U64((1 << width) - 1) if width < 64 else _U64(2**64 - 1)
    if _pairs_fit(width):
        # A pair is width / 4 >= 8 bytes: its first value is in its first 8 bytes, its second is
        # the top of its last 8 bytes. Both read in place through unaligned strided views, no copy.
        size, pairs = width // 4, groups * 4
        first = np.ndarray((pairs,), dtype="<u8", buffer=data, offset=0, strides=(size,))
        last = np.ndarray((pairs,), dtype="<u8", buffer=data, offset=size - 8, strides=(size,))
        out = np.empty((pairs, 2), dtype=_U64)
        np.bitwise_and(first, mask, out=out[:, 0])
        np.right_shift(last, _U64(64 - width), out=out[:, 1])
        return out.reshape(-1)[:count]
    raw = np.zeros((groups, width + 9), dtype=np.uint8)
    raw[:, :width] = np.frombuffer(data, dtype=np.uint8).reshape(groups, width)
    lanes = np.empty((groups, 8), dtype=_U64)
    for lane in range(8):
        byte, shift = divmod(lane * width, 8)
        low = np.ascontiguousarray(raw[:, byte : byte + 8]).view("<u8").reshape(groups)
        value = low >> _U64(shift)
        if shift:
            value |= raw[:, byte + 8].astype(_U64) << _U64(64 - shift)
        lanes[:, lane] = value & mask
    return lanes.reshape(-1)[:count]


def pack(values: np.ndarray, width: int, prefix: bytes = b"") -> bytes:
    """`prefix`, then `values` (any shape, each < 2^width) as `packed_size(values.size, width)` bytes."""
    if kernels.AVAILABLE:
        return bytes(kernels.pack(values, width, prefix))
    return prefix + numpy_pack(values, width)


def unpack(data: bytes | memoryview, count: int, width: int) -> np.ndarray:
    """The first `count` values packed by `pack`; `data` must be exactly `packed_size` bytes."""
    if kernels.AVAILABLE:
        return kernels.unpack(data, count, width)
    return numpy_unpack(data, count, width)


def pack_fractions(fractions: np.ndarray, bits: int, prefix: bytes = b"") -> bytes:
    """`prefix`, then round(f * 2^bits) mod 2^bits for each fraction f (of the modulus Q: the switch of a
    ciphertext coefficient to the modulus 2^bits, see `ring.fraction_to_power_of_two`), packed at `bits`."""
    if kernels.AVAILABLE:
        return bytes(kernels.pack_fractions(fractions, bits, prefix))
    return prefix + numpy_pack(fraction_to_power_of_two(fractions, bits), bits)
