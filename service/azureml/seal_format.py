"""Structural checks of SEAL serializations, done in Python before any byte reaches native code.

the tutorial's client and EIServer speak SEAL 3.5: every object starts with a 16-byte header
(magic 0xA15E, header size 16, version 3.5, compression mode, reserved, total size), followed by
the payload, zlib-deflated by default. EIServer's native library aborts the whole process on a
truncated or garbled object, so anything that is not a well-formed object of the expected version
with a payload that inflates completely, within a size bound, is refused here.
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from dataclasses import dataclass

SEAL_MAGIC = 0xA15E
HEADER = struct.Struct("<HBBBBHQ")
SUPPORTED_VERSIONS = {(3, 5)}
COMPRESSION_NONE = 0
COMPRESSION_ZLIB = 1


class SealFormatError(ValueError):
    """The bytes are not a well-formed SEAL 3.5 object."""


@dataclass(frozen=True)
class SealHeader:
    version: tuple[int, int]
    compression: int
    size: int


def read_header(buffer: bytes | memoryview, versions: set[tuple[int, int]] = SUPPORTED_VERSIONS) -> SealHeader:
    if len(buffer) < HEADER.size:
        raise SealFormatError(f"{len(buffer)} bytes is shorter than a SEAL header")
    magic, header_size, major, minor, compression, reserved, size = HEADER.unpack_from(buffer)
    if magic != SEAL_MAGIC or header_size != HEADER.size:
        raise SealFormatError("not a SEAL object (bad magic or header size)")
    if (major, minor) not in versions:
        expected = ", ".join(f"{a}.{b}" for a, b in sorted(versions))
        raise SealFormatError(f"SEAL version {major}.{minor} is not supported (expected {expected})")
    if compression not in (COMPRESSION_NONE, COMPRESSION_ZLIB):
        raise SealFormatError(f"unsupported SEAL compression mode {compression}")
    if reserved != 0:
        raise SealFormatError("reserved SEAL header field is not zero")
    if size <= HEADER.size:
        raise SealFormatError(f"declared SEAL object size {size} is too small")
    return SealHeader((major, minor), compression, size)


def read_object(buffer: bytes | memoryview, max_inflated: int,
                versions: set[tuple[int, int]] = SUPPORTED_VERSIONS) -> tuple[SealHeader, bytes]:
    """Header and uncompressed payload of the SEAL object at the start of `buffer`.

    A compressed payload must inflate completely (zlib's checksum verified) to at most
    `max_inflated` bytes; it is never inflated further than that.
    """
    header = read_header(buffer, versions)
    if header.size > len(buffer):
        raise SealFormatError(f"SEAL object declares {header.size} bytes but only {len(buffer)} are present")
    payload = bytes(buffer[HEADER.size : header.size])
    if header.compression == COMPRESSION_NONE:
        if len(payload) > max_inflated:
            raise SealFormatError(f"SEAL object of {len(payload)} bytes exceeds the limit of {max_inflated}")
        return header, payload
    inflater = zlib.decompressobj()
    try:
        inflated = inflater.decompress(payload, max_inflated)
    except zlib.error as exc:
        raise SealFormatError(f"SEAL payload is not valid zlib data ({exc})") from None
    if inflater.unconsumed_tail:
        raise SealFormatError(f"SEAL payload inflates beyond the limit of {max_inflated} bytes")
    if not inflater.eof or inflater.unused_data:
        raise SealFormatError("SEAL payload is truncated or has trailing bytes")
    if not inflated:
        raise SealFormatError("SEAL payload is empty")
    return header, inflated


def check_object(buffer: bytes | memoryview, max_inflated: int) -> int:
    """Check the SEAL object at the start of `buffer`; return its size in bytes."""
    return read_object(buffer, max_inflated)[0].size


def check_object_sequence(buffer: bytes, max_inflated: int, expected_count: int) -> None:
    """A buffer of back-to-back SEAL objects (the tutorial's client's public keys: Galois then relin keys)."""
    view = memoryview(buffer)
    offset = count = 0
    while offset < len(buffer):
        if count == expected_count:
            raise SealFormatError(f"more than {expected_count} SEAL objects")
        offset += check_object(view[offset:], max_inflated)
        count += 1
    if count != expected_count:
        raise SealFormatError(f"expected {expected_count} SEAL objects, found {count}")


def decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SealFormatError("not valid base64") from None
