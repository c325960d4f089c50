"""Checks that keep malformed SEAL objects away from EIServer's native code (which aborts on them)."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.azureml.parameters import MAX_INFLATED_CIPHERTEXT
from service.azureml.seal_format import HEADER, SealFormatError, decode_base64, read_object
from service.azureml.seal_wire import read_client_ciphertext, read_tutorial_keys


def seal_object(payload: bytes, compression: int = 1, version: tuple[int, int] = (3, 5),
                magic: int = 0xA15E, declared_extra: int = 0) -> bytes:
    body = zlib.compress(payload) if compression == 1 else payload
    return HEADER.pack(magic, 16, *version, compression, 0, 16 + len(body) + declared_extra) + body


def test_real_client_objects_pass(seed_ciphertext: str, seed_client) -> None:
    _, _, public_keys = seed_client
    ciphertext = read_client_ciphertext(decode_base64(seed_ciphertext), MAX_INFLATED_CIPHERTEXT)
    assert ciphertext.seed is not None and ciphertext.scale == 2.0**40
    assert read_tutorial_keys(public_keys, kept_rows=set()) == {}


@pytest.mark.parametrize("mutate, message", [
    (lambda raw: raw[:1000], "declares"),
    (lambda raw: raw[:10], "shorter than a SEAL header"),
    (lambda raw: b"\x00\x00" + raw[2:], "bad magic"),
    (lambda raw: raw[:3] + b"\x04\x00" + raw[5:], "version 4.0"),
    (lambda raw: raw[:5] + b"\x02" + raw[6:], "compression mode 2"),
    (lambda raw: raw + b"\x00", "unexpected bytes"),
    (lambda raw: raw[:200] + bytes([raw[200] ^ 0xFF]) + raw[201:], "zlib"),
])
def test_damaged_ciphertexts_are_refused(seed_ciphertext: str, mutate, message: str) -> None:
    with pytest.raises(SealFormatError, match=message):
        read_client_ciphertext(mutate(decode_base64(seed_ciphertext)), MAX_INFLATED_CIPHERTEXT)


def test_decompression_bomb_is_refused_without_inflating_it() -> None:
    bomb = seal_object(b"\x00" * (64 * 1024 * 1024))
    assert len(bomb) < 100_000
    with pytest.raises(SealFormatError, match="beyond the limit"):
        read_client_ciphertext(bomb, MAX_INFLATED_CIPHERTEXT)


def test_uncompressed_object_over_the_limit_is_refused() -> None:
    with pytest.raises(SealFormatError, match="exceeds the limit"):
        read_object(seal_object(b"\x01" * 2048, compression=0), 1024)


def test_key_blob_must_hold_exactly_galois_then_relin_keys(seed_client) -> None:
    _, _, public_keys = seed_client
    first_size = struct.unpack_from("<Q", public_keys, 8)[0]
    with pytest.raises(SealFormatError):
        read_tutorial_keys(public_keys[:first_size], kept_rows=set())
    with pytest.raises(SealFormatError, match="unexpected bytes after the keys"):
        read_tutorial_keys(public_keys + public_keys[:first_size], kept_rows=set())


@pytest.mark.parametrize("text", ["not base64!", "QUJD\n", "QUJ"])
def test_invalid_base64_is_refused(text: str) -> None:
    with pytest.raises(SealFormatError, match="base64"):
        decode_base64(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_either_pass_or_raise_sealformaterror(data: bytes) -> None:
    try:
        read_client_ciphertext(data, 1 << 20)
    except SealFormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=512), st.integers(0, 1), st.integers(-16, 16))
def test_arbitrary_payloads_in_valid_headers_never_escape(payload: bytes, compression: int, extra: int) -> None:
    try:
        read_client_ciphertext(seal_object(payload, compression, declared_extra=extra), 1 << 20)
    except SealFormatError:
        pass
