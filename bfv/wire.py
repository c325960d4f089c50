"""Binary messages of the v1 protocol (all integers little-endian).

    public key  b"EIK1" u8 profile  u8 0 u16 0 | 32-byte seed | pk0: k x N coefficients
    request     b"EIQ1" u8 kind     u8 profile u16 0 | u32 images | u32 ciphertexts | 32-byte key id
                | 32-byte seed | c0 of each ciphertext: k x N coefficients
    reply       b"EIR1" u8 kind     u8 bits u16 0 | u32 images | u32 values | values

Coefficients modulo the data primes are packed at the largest prime's bit width; reply values at
`bits` (see `bitpack`). A ciphertext's second polynomial is never sent: it is the uniform NTT-domain
polynomial `ring.expand_uniform(seed, index)`. The key id is the SHA-256 of the public key's bytes.

Reply values: single image, for each group: c0 at the group's result positions, then c1 (N).
Batch, for each output: c0 (N), then c1 (N). All modulo 2^bits.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from bfv import bitpack
from bfv.params import PROFILE_IDS, RingParameters

KEY_MAGIC, REQUEST_MAGIC, REPLY_MAGIC = b"EIK1", b"EIQ1", b"EIR1"
_KEY_HEADER = struct.Struct("<4sBBH32s")
_REQUEST_HEADER = struct.Struct("<4sBBHII32s32s")
_REPLY_HEADER = struct.Struct("<4sBBHII")


class Kind(IntEnum):
    SINGLE = 1
    BATCH = 2


class WireError(ValueError):
    """The bytes are not a well-formed message for this model and parameter set."""


def key_id(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()


def _coefficient_width(params: RingParameters) -> int:
    return max(params.coefficient_bits)


def _read_residues(data: memoryview, polys: int, params: RingParameters) -> np.ndarray:
    k, degree = len(params.data_primes), params.degree
    try:
        values = bitpack.unpack(data, polys * k * degree, _coefficient_width(params))
    except ValueError as exc:
        raise WireError(str(exc)) from None
    residues = values.reshape(polys, k, degree)
    if (residues >= np.array(params.data_primes, dtype=np.uint64)[None, :, None]).any():
        raise WireError("coefficients are not reduced modulo the data primes")
    return residues


@dataclass(frozen=True)
class PublicKey:
    seed: bytes
    pk0: np.ndarray  # (k, N), coefficient domain


def write_public_key(key: PublicKey, params: RingParameters) -> bytes:
    header = _KEY_HEADER.pack(KEY_MAGIC, PROFILE_IDS[params.profile], 0, 0, key.seed)
    return bitpack.pack(key.pk0, _coefficient_width(params), prefix=header)


def public_key_size(params: RingParameters) -> int:
    return _KEY_HEADER.size + bitpack.packed_size(len(params.data_primes) * params.degree, _coefficient_width(params))


KEY_HEADER_SIZE = _KEY_HEADER.size


def check_public_key_header(head: bytes, size: int, params: RingParameters) -> bytes:
    """Check a public key's header (its first `KEY_HEADER_SIZE` bytes) against its total `size`;
    returns the seed. The web process calls it before the rest of an upload is read."""
    if size != public_key_size(params) or len(head) < _KEY_HEADER.size:
        raise WireError(f"a public key for profile {params.profile} is {public_key_size(params)} bytes, not {size}")
    magic, profile, _, _, seed = _KEY_HEADER.unpack_from(head)
    if magic != KEY_MAGIC or profile != PROFILE_IDS[params.profile]:
        raise WireError(f"not a public key of the v1 protocol's {params.profile} profile")
    return seed


def read_public_key(data: bytes, params: RingParameters) -> PublicKey:
    seed = check_public_key_header(data, len(data), params)
    return PublicKey(seed=seed, pk0=_read_residues(memoryview(data)[_KEY_HEADER.size :], 1, params)[0])


@dataclass(frozen=True)
class Request:
    kind: Kind
    images: int
    key_id: str
    seed: bytes
    c0: np.ndarray  # (ciphertexts, k, N)


def write_request(request: Request, params: RingParameters) -> bytes:
    header = _REQUEST_HEADER.pack(REQUEST_MAGIC, request.kind, PROFILE_IDS[params.profile], 0, request.images,
                                  request.c0.shape[0], bytes.fromhex(request.key_id), request.seed)
    return bitpack.pack(request.c0, _coefficient_width(params), prefix=header)


def request_size(ciphertexts: int, params: RingParameters) -> int:
    values = ciphertexts * len(params.data_primes) * params.degree
    return _REQUEST_HEADER.size + bitpack.packed_size(values, _coefficient_width(params))


REQUEST_HEADER_SIZE = _REQUEST_HEADER.size


@dataclass(frozen=True)
class RequestHeader:
    kind: Kind
    images: int
    key_id: str
    seed: bytes


def check_request_header(head: bytes, size: int, kind: Kind, ciphertexts: int, max_images: int,
                         params: RingParameters) -> RequestHeader:
    """Check a request's header (its first `REQUEST_HEADER_SIZE` bytes) against its total `size`.

    The web process calls it as soon as those bytes arrive, so a body that cannot be a request for
    this model is refused before the rest of it is read.
    """
    if len(head) < _REQUEST_HEADER.size:
        raise WireError(f"{len(head)} bytes is shorter than a request header ({_REQUEST_HEADER.size})")
    magic, found_kind, profile, _, images, count, raw_key_id, seed = _REQUEST_HEADER.unpack_from(head)
    if magic != REQUEST_MAGIC:
        raise WireError("not a v1 protocol request (bad magic)")
    if found_kind != kind:
        raise WireError(f"request kind {found_kind} sent to the endpoint for kind {int(kind)}")
    if profile != PROFILE_IDS[params.profile]:
        raise WireError(f"request made for profile {profile}; this model is served with profile "
                        f"{PROFILE_IDS[params.profile]} ({params.profile})")
    if count != ciphertexts:
        raise WireError(f"request holds {count} ciphertexts; this model takes {ciphertexts}")
    if not 1 <= images <= max_images:
        raise WireError(f"a request carries 1 to {max_images} images, not {images}")
    if size != request_size(ciphertexts, params):
        raise WireError(f"request is {size} bytes; {request_size(ciphertexts, params)} expected")
    return RequestHeader(kind=Kind(found_kind), images=images, key_id=raw_key_id.hex(), seed=seed)


def read_request(data: bytes, kind: Kind, ciphertexts: int, max_images: int, params: RingParameters) -> Request:
    """Parse and check a request of `kind` that must hold exactly `ciphertexts` ciphertexts."""
    header = check_request_header(data, len(data), kind, ciphertexts, max_images, params)
    return request_from_header(header, data, ciphertexts, params)


def request_from_header(header: RequestHeader, data: bytes | memoryview, ciphertexts: int,
                        params: RingParameters) -> Request:
    """The request whose header `check_request_header` returned for these same bytes: only the
    ciphertexts are read (and their residues checked)."""
    c0 = _read_residues(memoryview(data)[_REQUEST_HEADER.size :], ciphertexts, params)
    return Request(kind=header.kind, images=header.images, key_id=header.key_id, seed=header.seed, c0=c0)


def reply_size(values: int, bits: int) -> int:
    """Bytes of a reply of `values` values of `bits` bits each, its header included."""
    return _REPLY_HEADER.size + bitpack.packed_size(values, bits)


def reply_header(kind: Kind, images: int, bits: int, values: int) -> bytes:
    """The header of a reply of `values` values of `bits` bits each."""
    return _REPLY_HEADER.pack(REPLY_MAGIC, kind, bits, 0, images, values)


def write_switched_reply(kind: Kind, images: int, bits: int, fractions: np.ndarray) -> bytes:
    """The reply whose values are `fractions` of the modulus Q switched to 2^bits (`bitpack.pack_fractions`)."""
    return bitpack.pack_fractions(fractions, bits, prefix=reply_header(kind, images, bits, fractions.size))


def read_reply(data: bytes, kind: Kind, bits: int, values: int) -> tuple[int, np.ndarray]:
    """The image count and the `values` reply values (uint64 below 2^bits)."""
    if len(data) < _REPLY_HEADER.size:
        raise WireError("reply is shorter than its header")
    magic, found_kind, found_bits, _, images, count = _REPLY_HEADER.unpack_from(data)
    if magic != REPLY_MAGIC or found_kind != kind or found_bits != bits or count != values:
        raise WireError("reply does not match the request or the model description")
    try:
        return images, bitpack.unpack(memoryview(data)[_REPLY_HEADER.size :], values, bits)
    except ValueError as exc:
        raise WireError(str(exc)) from None

