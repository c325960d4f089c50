"""SEAL 3.5 wire format <-> objects SEAL 4 can load, for the tutorial's client's ciphertexts and keys.

the tutorial's client writes SEAL 3.5 objects: zlib-compressed, with seeded polynomials (see
`seal_prng`). SEAL 4 can read version-3.5 objects, but (in the wheel we use) not compressed ones,
and it would expand 3.5 seeds with its own, incompatible sampler. So objects are rewritten here:
inflated, seeds expanded, parms_id set to the SEAL 4 context's, stored uncompressed and unseeded.
Replies go the other way: SEAL 4's ciphertext layout (with its correction-factor field) is written
back as the 3.5 layout the client reads.

A public-key blob is read as it inflates (`read_tutorial_keys`), against what the client makes: a
row outside its rotations or a key of another shape is refused before anything after it is
inflated, and no more is inflated than keys for these parameters can be (`GALOIS_KEYS`,
`RELIN_KEYS`); `check_key_blob` bounds a blob from its size and header before it is downloaded.

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
from service.azureml.parameters import DEGREE, PRIME_BITS, ROTATION_STEPS, SCALE_RANGE, tutorial_parameters
from service.azureml.seal_format import (
    COMPRESSION_NONE,
    HEADER,
    SEAL_MAGIC,
    PayloadReader,
    SealFormatError,
    max_object_size,
    open_object,
    read_header,
    read_object,
)

_CT_FIXED = struct.Struct("<32sBQQQd")
_U64 = struct.Struct("<Q")


def seal_header(version: tuple[int, int], payload_size: int) -> bytes:
    return HEADER.pack(SEAL_MAGIC, HEADER.size, version[0], version[1], COMPRESSION_NONE, 0,
                       HEADER.size + payload_size)


@dataclass
class CiphertextData:
    """A ciphertext's fields with every polynomial present: `polys` is (size, moduli, degree) uint64."""

    is_ntt_form: bool
    scale: float
    polys: np.ndarray
    seed: bytes | None = None


def parse_ciphertext(payload: bytes, version: tuple[int, int], max_degree: int, max_moduli: int) -> CiphertextData:
    """Ciphertext members from an uncompressed payload; a seeded second polynomial is left to expand."""
    reader = PayloadReader(payload, compressed=False, limit=len(payload))
    ciphertext = _read_ciphertext(reader, version, max_degree, max_moduli)
    reader.finish()
    assert ciphertext is not None
    return ciphertext


def _read_ciphertext(reader: PayloadReader, version: tuple[int, int], max_degree: int, max_moduli: int,
                     exact: bool = False, keep: bool = True) -> CiphertextData | None:
    """The next ciphertext's fields. `exact` (a key): two polynomials of exactly `max_degree` x `max_moduli`
    words in NTT form, checked before any coefficient is read; not `keep`: read past, None returned."""
    _, is_ntt, size, degree, moduli, scale = _CT_FIXED.unpack(reader.take(_CT_FIXED.size))
    if version[0] >= 4:
        reader.take(8)  # correction factor, always 1 for CKKS
    if not (2 <= size <= 3 and 0 < degree <= max_degree and degree & (degree - 1) == 0 and 0 < moduli <= max_moduli):
        raise SealFormatError(f"ciphertext shape size={size}, degree={degree}, moduli={moduli} is not supported")
    if exact and (size, degree, moduli, is_ntt) != (2, max_degree, max_moduli, 1):
        raise SealFormatError("a key has an unexpected shape")
    array_header = read_header(reader.take(HEADER.size), {version})
    if array_header.compression != COMPRESSION_NONE:
        raise SealFormatError("nested SEAL array must not be compressed")
    count = reader.u64()
    poly_words = degree * moduli
    if count not in (poly_words, size * poly_words):
        raise SealFormatError(f"ciphertext array holds {count} words, expected {size * poly_words}")
    if count == poly_words and size != 2:
        raise SealFormatError("only two-polynomial ciphertexts can be seeded")
    stored = reader.take(8 * count)
    seed = reader.take(SEED_BYTES) if count == poly_words else None
    if not keep:
        return None
    words = np.frombuffer(stored, dtype="<u8").astype(np.uint64)
    if seed is not None:
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


# Public-key blobs ------------------------------------------------------------------------------

KeyRows = dict[int, list[CiphertextData]]  # a KSwitchKeys object's non-empty rows: row -> its keys

KEY_MODULI = len(PRIME_BITS)  # a key's polynomials are modulo every prime, the special one included
KEY_COMPONENTS = len(PRIME_BITS) - 1  # one key per data prime in each row
# The largest public key: header, fields, array header and count, and both polynomials (not seeded).
_MAX_KEY = HEADER.size + _CT_FIXED.size + HEADER.size + 8 + 8 * 2 * KEY_MODULI * DEGREE


def galois_row(step: int) -> int:
    """The GaloisKeys row of a rotation by `step` slots: SEAL keeps Galois element g = 3^step mod 2N at (g - 1) / 2."""
    return (pow(3, step, 2 * DEGREE) - 1) // 2


@dataclass(frozen=True)
class _KSwitchLayout:
    """What a KSwitchKeys object of the tutorial's client can hold: at most `slots` rows, keys only in `rows`."""

    slots: int
    rows: frozenset[int]

    @property
    def max_payload(self) -> int:
        """parms_id, row count, each row's key count, and a full row of the largest keys in each of `rows`."""
        return 32 + 8 + 8 * self.slots + len(self.rows) * KEY_COMPONENTS * _MAX_KEY


# Galois elements are odd and below 2N, so N rows; the client fills those of its rotations only.
GALOIS_KEYS = _KSwitchLayout(DEGREE, frozenset(galois_row(step) for step in ROTATION_STEPS))
RELIN_KEYS = _KSwitchLayout(1, frozenset({0}))  # one key, for the square of the secret key
MAX_GALOIS_OBJECT = max_object_size(GALOIS_KEYS.max_payload)
MAX_RELIN_OBJECT = max_object_size(RELIN_KEYS.max_payload)


def check_key_blob(size: int, head: bytes) -> None:
    """Whether a blob of `size` bytes that starts with `head` can be the tutorial's client's public keys
    (`KeyStore`'s check before it downloads more): a GaloisKeys object (its header gives its size), then a
    RelinKeys object in the rest, each no larger than keys for these parameters can be."""
    galois = read_header(head)
    if galois.size > MAX_GALOIS_OBJECT:
        raise SealFormatError(f"a GaloisKeys object of {galois.size} bytes is larger than the client's keys can be "
                              f"({MAX_GALOIS_OBJECT})")
    rest = size - galois.size
    if not HEADER.size < rest <= MAX_RELIN_OBJECT:
        raise SealFormatError(f"{rest} bytes after the GaloisKeys object cannot be a RelinKeys object "
                              f"(at most {MAX_RELIN_OBJECT})")


def read_tutorial_keys(blob: bytes, kept_rows: set[int]) -> KeyRows:
    """The Galois keys of `kept_rows` in the tutorial's client's key blob (GaloisKeys then RelinKeys), seeds
    not expanded. Every field is checked as it inflates: a row the client never fills, or a key of another
    shape, is refused before anything after it is inflated; rows not kept are read past, never held."""
    galois_header, galois = open_object(blob, GALOIS_KEYS.max_payload)
    keys = _read_kswitch_keys(galois, galois_header.version, GALOIS_KEYS, kept_rows)
    relin_header, relin = open_object(memoryview(blob)[galois_header.size :], RELIN_KEYS.max_payload)
    _read_kswitch_keys(relin, relin_header.version, RELIN_KEYS, set())  # unused by the engines, but well-formed
    if galois_header.size + relin_header.size != len(blob):
        raise SealFormatError(f"{len(blob) - galois_header.size - relin_header.size} unexpected bytes after the keys")
    return keys


def _read_kswitch_keys(reader: PayloadReader, version: tuple[int, int], layout: _KSwitchLayout,
                       kept_rows: set[int]) -> KeyRows:
    params = tutorial_parameters()
    if reader.take(32) != params.key_parms_id:
        raise SealFormatError("the keys were made for other encryption parameters")
    slots = reader.u64()
    if slots > layout.slots:
        raise SealFormatError(f"{slots} key rows is more than the client's keys have ({layout.slots})")
    keys: KeyRows = {}
    for row in range(slots):
        count = reader.u64()
        if not count:
            continue
        if row not in layout.rows:
            raise SealFormatError(f"key row {row} is not one of the client's rotations")
        if count != KEY_COMPONENTS:
            raise SealFormatError(f"key row {row} holds {count} keys, expected {KEY_COMPONENTS}")
        read = [_read_key(reader, version, params.key_moduli, keep=row in kept_rows) for _ in range(count)]
        if row in kept_rows:
            keys[row] = [key for key in read if key is not None]
    reader.finish()
    return keys


def _read_key(reader: PayloadReader, version: tuple[int, int], moduli: list[int], keep: bool) -> CiphertextData | None:
    header = read_header(reader.take(HEADER.size), {version})
    if header.compression != COMPRESSION_NONE:
        raise SealFormatError("nested SEAL object must not be compressed")
    start = reader.offset
    key = _read_ciphertext(reader, version, DEGREE, len(moduli), exact=True, keep=keep)
    if reader.offset - start != header.size - HEADER.size:
        raise SealFormatError("a key's size is not what its header declares")
    if key is not None:
        check_reduced(key, moduli)
    return key


def write_kswitch_keys(keys: KeyRows, parms_id: bytes, version: tuple[int, int]) -> bytes:
    """A KSwitchKeys object holding `keys` (unseeded, uncompressed), as many rows as its last one needs."""
    slots = max(keys, default=-1) + 1
    parts = [parms_id, _U64.pack(slots)]
    for row in range(slots):
        row_keys = keys.get(row, [])
        parts.append(_U64.pack(len(row_keys)))
        parts.extend(write_object(write_ciphertext_members(key, parms_id, version), version) for key in row_keys)
    return b"".join([seal_header(version, sum(map(len, parts))), *parts])


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
