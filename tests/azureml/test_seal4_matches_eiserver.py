"""The fast engine against the tutorial's own EIServer, on the unmodified client's real ciphertexts and keys."""

from __future__ import annotations

import base64
import struct

import numpy as np
import pytest
from encrypted.inference.eiserver import EIServer

from model.loading import LinearModel, load_linear_model
from model import BUNDLED_MODEL_DIR, DEFAULT_MODEL_FILE
from service.azureml.engines import create_engine
from service.azureml.seal_wire import (
    GALOIS_KEYS,
    expand_seed,
    galois_row,
    parse_ciphertext,
    read_tutorial_keys,
    write_ciphertext_members,
    write_kswitch_keys,
    write_object,
)
from service.errors import Unprocessable
from service.azureml.seal_format import SealFormatError, read_object
from tests.expectations import CKKS_ATOL

RNG = np.random.default_rng(11)
# The seed parameters' primes (60, 40, 40 and the 60-bit special prime), as SEAL generates them.
KEY_MODULI = [1152921504606748673, 1099510890497, 1099511480321, 1152921504606830593]


@pytest.fixture(scope="module")
def prepared(seed_client):
    _, _, public_keys = seed_client
    engine = create_engine("seal", load_linear_model(BUNDLED_MODEL_DIR / DEFAULT_MODEL_FILE))
    return engine, engine.prepare_keys(public_keys)


def random_model(outputs: int, features: int) -> LinearModel:
    return LinearModel(coef=RNG.normal(size=(outputs, features)), intercept=RNG.normal(size=outputs))


@pytest.mark.slow
@pytest.mark.parametrize("outputs, features", [(10, 784), (3, 100), (1, 784), (2, 2048), (2, 5000)])
def test_replies_decrypt_to_eiserver_scores(seed_client, outputs: int, features: int) -> None:
    client, _, public_keys = seed_client
    model = random_model(outputs, features)
    engine = create_engine("seal", model)
    keys = engine.prepare_keys(public_keys)
    x = RNG.random(features)
    ciphertexts = client.encrypt(x)
    assert len(ciphertexts) == engine.expected_ciphertexts
    fast = client.decrypt(engine.predict(ciphertexts, keys))
    reference = client.decrypt(EIServer(model.coef, model.intercept).predict(ciphertexts, public_keys))
    np.testing.assert_allclose(fast, reference, atol=CKKS_ATOL, rtol=0)
    np.testing.assert_allclose(fast, model.scores(x), atol=CKKS_ATOL, rtol=0)


def test_mnist_images_score_like_the_plaintext_model(prepared, seed_client, mnist_test_images) -> None:
    engine, keys = prepared
    client, _, _ = seed_client
    model = load_linear_model(BUNDLED_MODEL_DIR / DEFAULT_MODEL_FILE)
    images, _, _ = mnist_test_images
    for image in images[:5] / 255.0:
        reply = engine.predict(client.encrypt(image), keys)
        assert len(reply) == 10
        for ciphertext in reply:
            header, _ = read_object(base64.b64decode(ciphertext), 1 << 20)
            assert header.version == (3, 5)
        np.testing.assert_allclose(client.decrypt(reply), model.scores(image), atol=CKKS_ATOL, rtol=0)


def _rewrite(ciphertext_b64: str, mutate) -> str:
    header, payload = read_object(base64.b64decode(ciphertext_b64), 1 << 22)
    version = header.version
    members = bytearray(payload)
    mutate(members)
    return base64.b64encode(write_object(bytes(members), version)).decode()


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m.__setitem__(slice(0, 8), b"\x01" * 8), "other encryption parameters"),
    (lambda m: m.__setitem__(32, 0), "unexpected shape"),
    (lambda m: m.__setitem__(slice(57, 65), struct.pack("<d", 2.0**80)), "scale"),
    (lambda m: m.__setitem__(slice(41, 49), struct.pack("<Q", 4096)), "unexpected bytes"),
    (lambda m: m.__setitem__(slice(41, 49), struct.pack("<Q", 3000)), "not supported"),
    (lambda m: m.__delitem__(slice(len(m) - 10, len(m))), "shorter"),
])
def test_malformed_ciphertexts_are_refused_before_seal(prepared, seed_ciphertext: str, mutate, message: str) -> None:
    engine, keys = prepared
    with pytest.raises(Unprocessable, match=message):
        engine.predict([_rewrite(seed_ciphertext, mutate)], keys)


def test_coefficients_out_of_range_are_refused(prepared, seed_ciphertext: str) -> None:
    engine, keys = prepared
    header, payload = read_object(base64.b64decode(seed_ciphertext), 1 << 22)
    version = header.version
    data = parse_ciphertext(payload, version, 8192, 3)
    expand_seed(data, KEY_MODULI[:3])
    data.polys[0, 0, 0] = np.uint64(2**64 - 1)
    forged = write_object(write_ciphertext_members(data, payload[:32], version), version)
    with pytest.raises(Unprocessable, match="not reduced"):
        engine.predict([base64.b64encode(forged).decode()], keys)


def test_truncated_or_foreign_keys_are_refused(prepared, seed_client) -> None:
    engine, _ = prepared
    _, _, public_keys = seed_client
    with pytest.raises(SealFormatError, match="declares"):
        engine.prepare_keys(public_keys[: len(public_keys) // 2])
    header, payload = read_object(public_keys, 1 << 26)
    version, used = header.version, header.size
    foreign = write_object(b"\x01" * 32 + payload[32:], version) + public_keys[used:]
    with pytest.raises(SealFormatError, match="other encryption parameters"):
        engine.prepare_keys(foreign)


def test_prepared_keys_report_their_memory(prepared) -> None:
    _, keys = prepared
    assert 15e6 < keys.nbytes < 25e6


def test_keys_without_a_needed_rotation_are_refused(prepared, seed_client) -> None:
    engine, _ = prepared
    _, _, public_keys = seed_client
    header, payload = read_object(public_keys, 1 << 26)
    version, used = header.version, header.size
    keys = read_tutorial_keys(public_keys, set(GALOIS_KEYS.rows))
    for row in keys.values():
        for key in row:
            expand_seed(key, KEY_MODULI)
    del keys[galois_row(1)]
    with pytest.raises(SealFormatError, match=r"lack rotations by \[1\]"):
        engine.prepare_keys(write_kswitch_keys(keys, payload[:32], version) + public_keys[used:])
