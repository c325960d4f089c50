"""SEAL 3.5 wire format <-> objects SEAL 4 can load, for the tutorial's client's ciphertexts and keys.

the tutorial's client writes SEAL 3.5 objects: zlib-compressed, with seeded polynomials (see
`seal_prng`). SEAL 4 can read version-3.5 objects, but (in the wheel we use) not compressed ones,
and it would expand 3.5 seeds with its own, incompatible sampler. So objects are rewritten here:
inflated, seeds expanded, parms_id set to the SEAL 4 context's, stored uncompressed and unseeded.
Replies go the other way: SEAL 4's ciphertext layout (with its correction-factor field) is written
back as the 3.5 layout the client reads.

Layouts (little-endian):
  header      u16 magic 0xA15E, u8 header size 16, u8 major, u8 minor, u8 compression, u16 0, u64 total size
  ciphertext  32-byte parms_id, u8 is_ntt_form, u64 size, u64 degree, u64 moduli, f64 scale,
              [4.x: u64 correction factor], array (header, u64 count, u64 coefficients),
              [64-byte seed when the array holds only the first polynomial]
  kswitchkeys 32-byte parms_id, u64 n, n x (u64 m, m x public key = header + ciphertext)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from service.azureml.seal_prng import SEED_BYTES, sample_uniform_polys
from service.azureml.parameters import DEGREE, SCALE_RANGE, tutorial_parameters
from service.azureml.seal_format import COMPRESSION_NONE, HEADER, SEAL_MAGIC, SealFormatError, read_header, read_object

_CT_FIXED = struct.Struct("<32sBQQQd")
_U64 = struct.Struct("<Q")


def seal_header(version: tuple[int, int], payload_size: int) -> bytes:
    return HEADER.pack(SEAL_MAGIC, HEADER.size, version[0], version[1], COMPRESSION_NONE, 0,
                       HEADER.size + payload_size)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def take(self, count: int) -> bytes:
        if count < 0 or self.offset + count > len(self.data):
            raise SealFormatError("SEAL object is shorter than its fields declare")
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def u64(self) -> int:
        return _U64.unpack(self.take(8))[0]


@dataclass
class CiphertextData:
    """A ciphertext's fields with every polynomial present: `polys` is (size, moduli, degree) uint64."""

    is_ntt_form: bool
    scale: float
    polys: np.ndarray
    seed: bytes | None = None


def parse_ciphertext(payload: bytes, version: tuple[int, int], max_degree: int, max_moduli: int) -> CiphertextData:
    """Ciphertext members from an uncompressed payload; a seeded second polynomial is left to expand."""
    reader = _Reader(payload)
    ciphertext = _read_ciphertext(reader, version, max_degree, max_moduli)
    if reader.offset != len(payload):
        raise SealFormatError(f"{len(payload) - reader.offset} unexpected bytes after the ciphertext")
    return ciphertext


def _read_ciphertext(reader: _Reader, version: tuple[int, int], max_degree: int, max_moduli: int) -> CiphertextData:
    _, is_ntt, size, degree, moduli, scale = _CT_FIXED.unpack(reader.take(_CT_FIXED.size))
    if version[0] >= 4:
        reader.take(8)  # correction factor, always 1 for CKKS
    if not (2 <= size <= 3 and 0 < degree <= max_degree and degree & (degree - 1) == 0 and 0 < moduli <= max_moduli):
        raise SealFormatError(f"ciphertext shape size={size}, degree={degree}, moduli={moduli} is not supported")
    array_header = read_header(reader.take(HEADER.size), {version})
    if array_header.compression != COMPRESSION_NONE:
        raise SealFormatError("nested SEAL array must not be compressed")
    count = reader.u64()
    poly_words = degree * moduli
    if count not in (poly_words, size * poly_words):
        raise SealFormatError(f"ciphertext array holds {count} words, expected {size * poly_words}")
    words = np.frombuffer(reader.take(8 * count), dtype="<u8").astype(np.uint64)
    seed = None
    if count == poly_words:
        if size != 2:
            raise SealFormatError("only two-polynomial ciphertexts can be seeded")
        seed = reader.take(SEED_BYTES)
        polys = np.zeros((2, moduli, degree), dtype=np.uint64)
        polys[0] = words.reshape(moduli, degree)
    else:
        polys = words.reshape(size, moduli, degree)
    return CiphertextData(is_ntt_form=bool(is_ntt), scale=scale, polys=polys, seed=seed)


def check_reduced(ciphertext: CiphertextData, moduli: list[int]) -> None:
    """Every stored coefficient is below its prime (a seed's expansion is, by construction)."""
    stored = ciphertext.polys[:1] if ciphertext.seed is not None else ciphertext.polys
    if (stored >= np.array(moduli, dtype=np.uint64)[None, :, None]).any():
        raise SealFormatError("ciphertext coefficients are not reduced modulo the expected primes")


def expand_seed(ciphertext: CiphertextData, moduli: list[int]) -> None:
    """Fill a seeded ciphertext's second polynomial as SEAL 3.5 does (no-op when it is not seeded)."""
    if ciphertext.seed is not None:
        degree = ciphertext.polys.shape[2]
        ciphertext.polys[1] = sample_uniform_polys(ciphertext.seed, moduli, degree)
        ciphertext.seed = None


def write_ciphertext_members(ciphertext: CiphertextData, parms_id: bytes, version: tuple[int, int]) -> bytes:
    """Ciphertext members, unseeded and uncompressed, in the layout of `version` (3.5 or 4.x)."""
    if ciphertext.seed is not None:
        raise ValueError("expand the seed before writing the ciphertext")
    size, moduli, degree = ciphertext.polys.shape
    fixed = _CT_FIXED.pack(parms_id, int(ciphertext.is_ntt_form), size, degree, moduli, ciphertext.scale)
    if version[0] >= 4:
        fixed += _U64.pack(1)
    data = _U64.pack(ciphertext.polys.size) + ciphertext.polys.astype("<u8").tobytes()
    return fixed + seal_header(version, len(data)) + data


def write_object(members: bytes, version: tuple[int, int]) -> bytes:
    return seal_header(version, len(members)) + members


def parse_kswitch_keys(payload: bytes, version: tuple[int, int], max_degree: int,
                       max_moduli: int) -> list[list[CiphertextData]]:
    """The public keys inside a KSwitchKeys object (GaloisKeys, RelinKeys); empty slots stay empty lists."""
    reader = _Reader(payload)
    reader.take(32)
    outer = reader.u64()
    if outer > 2 * max_degree:
        raise SealFormatError(f"{outer} key slots is more than a degree-{max_degree} ring has")
    keys: list[list[CiphertextData]] = []
    for _ in range(outer):
        inner = reader.u64()
        if inner > max_moduli:
            raise SealFormatError(f"a key with {inner} components is not supported")
        row = []
        for _ in range(inner):
            key_version = read_header(reader.take(HEADER.size)).version
            row.append(_read_ciphertext(reader, key_version, max_degree, max_moduli))
        keys.append(row)
    if reader.offset != len(payload):
        raise SealFormatError(f"{len(payload) - reader.offset} unexpected bytes after the keys")
    return keys


def write_kswitch_keys(keys: list[list[CiphertextData]], parms_id: bytes, version: tuple[int, int]) -> bytes:
    parts = [parms_id, _U64.pack(len(keys))]
    for row in keys:
        parts.append(_U64.pack(len(row)))
        parts.extend(write_object(write_ciphertext_members(key, parms_id, version), version) for key in row)
    return write_object(b"".join(parts), version)


def read_client_ciphertext(raw: bytes, max_inflated: int) -> CiphertextData:
    """A client of the tutorial's ciphertext, checked field by field against the tutorial's parameters (seed not expanded).

    Fresh input at the first data level, two polynomials in NTT form, a supported scale, the
    parms_id of our parameters and every stored coefficient reduced modulo its prime.
    """
    params = tutorial_parameters()
    header, payload = read_object(raw, max_inflated)
    if header.size != len(raw):
        raise SealFormatError(f"{len(raw) - header.size} unexpected bytes after the SEAL object")
    ciphertext = parse_ciphertext(payload, header.version, DEGREE, len(params.data_moduli))
    if payload[:32] != params.first_parms_id:
        raise SealFormatError("the ciphertext was made for other encryption parameters")
    if ciphertext.polys.shape != (2, len(params.data_moduli), DEGREE) or not ciphertext.is_ntt_form:
        raise SealFormatError("the ciphertext has an unexpected shape")
    if not SCALE_RANGE[0] <= ciphertext.scale <= SCALE_RANGE[1]:
        raise SealFormatError(f"ciphertext scale {ciphertext.scale} is outside the supported range")
    check_reduced(ciphertext, params.data_moduli)
    return ciphertext
