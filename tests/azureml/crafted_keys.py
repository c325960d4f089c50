"""Key blobs an attacker builds from the tutorial client's honest one (GaloisKeys + RelinKeys, SEAL 3.5).

The honest GaloisKeys object has 8,192 rows, 12 of them filled (the client's rotations). Zero rows
written into empty ones compress to almost nothing, so the blob stays ~8.6 MB on the wire; the
service used to inflate, expand and keep every one of them (12x the time, 7x the memory and cache).
"""

from __future__ import annotations

import struct
import zlib

from service.azureml.parameters import tutorial_parameters
from service.azureml.seal_format import COMPRESSION_ZLIB, HEADER, SEAL_MAGIC, read_header, read_object
from service.azureml.seal_wire import GALOIS_KEYS, expand_seed, read_tutorial_keys, write_kswitch_keys

_U64 = struct.Struct("<Q")
_KEY_FIELDS = HEADER.size + 65 + HEADER.size + 8  # a key's header, fixed fields, array header and count


def compressed_object(payload: bytes) -> bytes:
    body = zlib.compress(payload)
    return HEADER.pack(SEAL_MAGIC, HEADER.size, 3, 5, COMPRESSION_ZLIB, 0, HEADER.size + len(body)) + body


Rows = list[list[bytes]]  # each Galois row's keys, as serialized (an empty list for an empty row)


def split(public_keys: bytes) -> tuple[bytes, Rows, bytes]:
    """The GaloisKeys payload's parms_id, its rows' keys and the RelinKeys object."""
    header, payload = read_object(public_keys, 1 << 27)
    rows: Rows = []
    offset = 40
    for _ in range(_U64.unpack_from(payload, 32)[0]):
        count = _U64.unpack_from(payload, offset)[0]
        offset += 8
        row = []
        for _ in range(count):
            size = read_header(payload[offset:offset + HEADER.size]).size
            row.append(payload[offset:offset + size])
            offset += size
        rows.append(row)
    assert offset == len(payload)
    return payload[:32], rows, public_keys[header.size:]


def rebuilt(parms_id: bytes, rows: Rows, relin: bytes, slots: int | None = None) -> bytes:
    """A blob of these rows (and `slots` declared, by default as many as there are), compressed like the client's."""
    parts = [parms_id, _U64.pack(len(rows) if slots is None else slots)]
    parts.extend(_U64.pack(len(row)) + b"".join(row) for row in rows)
    return compressed_object(b"".join(parts)) + relin


def with_zero_rows(public_keys: bytes, count: int, at_end: bool = False) -> bytes:
    """The honest blob with `count` zero rows (three seeded keys of zeros each) in empty Galois slots: the
    first empty ones, or with `at_end` the last ones, so every honest row comes before the first bad one."""
    parms_id, rows, relin = split(public_keys)
    template = next(row for row in rows if row)[0]
    zero_key = template[:_KEY_FIELDS] + bytes(len(template) - _KEY_FIELDS)
    empty = [index for index, row in enumerate(rows) if not row]
    for index in empty[-count:] if at_end else empty[:count]:
        rows[index] = [zero_key] * 3
    return rebuilt(parms_id, rows, relin)


def unseeded(public_keys: bytes) -> bytes:
    """The honest Galois keys with their seeds expanded: the largest valid form (twice the words to inflate)."""
    params = tutorial_parameters()
    keys = read_tutorial_keys(public_keys, set(GALOIS_KEYS.rows))
    for row in keys.values():
        for key in row:
            expand_seed(key, params.key_moduli)
    galois = write_kswitch_keys(keys, params.key_parms_id, (3, 5))
    _, _, relin = split(public_keys)
    return compressed_object(galois[HEADER.size:]) + relin


def relin_bomb(public_keys: bytes, inflated: int = 64 * 1024 * 1024) -> bytes:
    """The honest blob whose RelinKeys payload goes on with `inflated` zero bytes (tens of KB compressed)."""
    _, _, relin = split(public_keys)
    header = read_header(public_keys)
    return public_keys[:header.size] + compressed_object(read_object(relin, 1 << 27)[1] + bytes(inflated))
