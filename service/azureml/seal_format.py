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


def _object_body(buffer: bytes | memoryview, versions: set[tuple[int, int]]) -> tuple[SealHeader, memoryview]:
    """Header and (possibly compressed) payload bytes of the SEAL object at the start of `buffer`."""
    header = read_header(buffer, versions)
    if header.size > len(buffer):
        raise SealFormatError(f"SEAL object declares {header.size} bytes but only {len(buffer)} are present")
    return header, memoryview(buffer)[HEADER.size : header.size]


def read_object(buffer: bytes | memoryview, max_inflated: int,
                versions: set[tuple[int, int]] = SUPPORTED_VERSIONS) -> tuple[SealHeader, bytes]:
    """Header and uncompressed payload of the SEAL object at the start of `buffer`.

    A compressed payload must inflate completely (zlib's checksum verified) to at most
    `max_inflated` bytes; it is never inflated further than that.
    """
    header, body = _object_body(buffer, versions)
    payload = bytes(body)
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


def open_object(buffer: bytes | memoryview, max_inflated: int,
                versions: set[tuple[int, int]] = SUPPORTED_VERSIONS) -> tuple[SealHeader, PayloadReader]:
    """Header of the SEAL object at the start of `buffer` and a reader of its payload, field by field."""
    header, body = _object_body(buffer, versions)
    return header, PayloadReader(body, header.compression == COMPRESSION_ZLIB, max_inflated)


class PayloadReader:
    """A SEAL payload read field by field; a compressed one is inflated only as far as the fields read.

    So a parser refuses a field out of place before anything after it is inflated, and reads past
    what it does not keep without holding it: memory stays one field (plus a 64 KiB chunk), and no
    more than `limit` bytes are ever inflated. `finish()` then requires the payload to end there.
    """

    _CHUNK = 64 * 1024

    def __init__(self, body: bytes | memoryview, compressed: bool, limit: int) -> None:
        self._body = memoryview(body)
        self._inflater = zlib.decompressobj() if compressed else None
        if not compressed and len(body) > limit:
            raise SealFormatError(f"SEAL object of {len(body)} bytes exceeds the limit of {limit}")
        self._limit = limit
        self._fed = 0  # bytes of `body` handed to zlib
        self._inflated = 0  # bytes zlib produced
        self._ahead, self._ahead_at = b"", 0  # inflated bytes, and where the unread ones start
        self.offset = 0  # payload bytes read

    def take(self, count: int) -> bytes:
        if count < 0:
            raise SealFormatError("SEAL object declares a negative size")
        if self._inflater is None:
            if self.offset + count > len(self._body):
                raise SealFormatError("SEAL object is shorter than its fields declare")
            chunk = bytes(self._body[self.offset : self.offset + count])
        else:
            if self.offset + count > self._limit:
                raise SealFormatError(f"SEAL payload inflates beyond the limit of {self._limit} bytes")
            chunk = self._inflate(count)
        self.offset += count
        return chunk

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "little")

    def _inflate(self, count: int) -> bytes:
        parts = []
        while count:
            if self._ahead_at == len(self._ahead):
                # Small fields inflate a chunk ahead, never past the limit: `take` checked offset + count <= limit,
                # so what is left below the limit is at least the `count` still missing.
                self._ahead = self._inflate_more(min(max(count, self._CHUNK), self._limit - self._inflated))
                self._ahead_at = 0
                self._inflated += len(self._ahead)
            piece = self._ahead[self._ahead_at : self._ahead_at + count]  # copies the piece only
            self._ahead_at += len(piece)
            parts.append(piece)
            count -= len(piece)
        return b"".join(parts)  # (one part is returned as is)

    def _inflate_more(self, at_most: int) -> bytes:
        """At least one and at most `at_most` more inflated bytes (`at_most` >= 1: zlib reads 0 as no bound)."""
        assert self._inflater is not None and at_most >= 1
        while True:
            if self._inflater.eof:
                raise SealFormatError("SEAL object is shorter than its fields declare")
            data = self._inflater.unconsumed_tail or self._feed()
            try:
                out = self._inflater.decompress(data, at_most)
            except zlib.error as exc:
                raise SealFormatError(f"SEAL payload is not valid zlib data ({exc})") from None
            if out:
                return out
            if not data:
                raise SealFormatError("SEAL payload is truncated")

    def _feed(self) -> bytes:
        chunk = bytes(self._body[self._fed : self._fed + self._CHUNK])
        self._fed += len(chunk)
        return chunk

    def finish(self) -> None:
        """Refuse anything after the fields read: the payload ends here (a zlib stream's checksum verified)."""
        if self._inflater is None:
            if self.offset != len(self._body):
                unread = len(self._body) - self.offset
                raise SealFormatError(f"{unread} unexpected bytes after the SEAL object's fields")
            return
        if self._ahead_at < len(self._ahead):
            raise SealFormatError("unexpected bytes after the SEAL object's fields")
        while not self._inflater.eof:
            data = self._inflater.unconsumed_tail or self._feed()
            try:
                out = self._inflater.decompress(data, 1)
            except zlib.error as exc:
                raise SealFormatError(f"SEAL payload is not valid zlib data ({exc})") from None
            if out:
                raise SealFormatError("unexpected bytes after the SEAL object's fields")
            if not data:
                raise SealFormatError("SEAL payload is truncated")
        if self._inflater.unused_data or self._fed < len(self._body):
            raise SealFormatError("SEAL payload has trailing bytes")


def decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SealFormatError("not valid base64") from None


def max_object_size(max_payload: int) -> int:
    """Largest SEAL object whose payload is at most `max_payload` bytes: stored as is, or zlib-deflated,
    which may grow incompressible data (zlib's `deflateBound` for any settings, plus its 6-byte wrapper)."""
    return HEADER.size + max_payload + ((max_payload + 7) >> 3) + ((max_payload + 63) >> 6) + 5 + 6
