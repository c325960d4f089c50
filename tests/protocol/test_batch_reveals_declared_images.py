"""Batch replies reveal the images the header declares (and meters), not every slot: a client that
encrypts images in all N slots but declares n decrypts n exact scores and uniform values elsewhere."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from model.loading import linear_model_from_estimator
from bfv.inputs import InputEncoding
from bfv.encryption import ClientKeys
from bfv.evaluation import Evaluator
from bfv import bitpack
from bfv.params import PROFILES
from bfv.plan import build_plan
from bfv.ring import random_below
from bfv.wire import Kind, read_reply, read_request, reply_header

DECLARED = 3
BINS = 8


def _every_slot(keys: ClientKeys, reply: bytes) -> np.ndarray:
    """All N slots of a batch reply, decrypted with the client's secret as if the header had declared N."""
    public = keys.plan
    _, values = read_reply(reply, Kind.BATCH, public.batch_reply_bits, public.n_outputs * 2 * public.degree)
    bits = public.batch_reply_bits
    return keys.decrypt_batch(bitpack.pack(values, bits, prefix=reply_header(Kind.BATCH, public.degree, bits, values.size)))


def _spread(values: np.ndarray, t: int) -> np.ndarray:
    """The share of `values` (centred) in each of BINS equal parts of [0, t)."""
    return np.bincount((np.mod(values, t) * BINS // t).ravel(), minlength=BINS) / values.size


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_undeclared_slots_decrypt_to_uniform_values_and_declared_ones_to_exact_scores(
        profile: str, bundled_estimator: object, mnist_test_images) -> None:
    plan = build_plan(linear_model_from_estimator(bundled_estimator), InputEncoding.pixels(784), profile)
    public = plan.public
    evaluator = Evaluator(plan, mask_pool_size=4)
    keys = ClientKeys(public)
    key = evaluator.prepare_key(keys.public_key)
    images = mnist_test_images[0].reshape(-1, public.n_features).astype(np.int64)
    inputs = images[np.arange(public.degree) % len(images)]  # a real image in every slot
    expected = plan.model.scores(inputs)
    request = read_request(keys.encrypt_batch(inputs), Kind.BATCH, public.n_features, public.degree, public.params)

    # The header declares N: every slot holds the quantized model's exact scores.
    assert (_every_slot(keys, evaluator.score_batch(request, key)) == expected).all()

    # The same ciphertexts under a header that declares 3 images, twice.
    declared = dataclasses.replace(request, images=DECLARED)
    first, second = (evaluator.score_batch(declared, key) for _ in range(2))
    assert (keys.decrypt_batch(first) == expected[:DECLARED]).all()  # what the client library reads
    first_slots, second_slots = _every_slot(keys, first), _every_slot(keys, second)
    assert (first_slots[:DECLARED] == expected[:DECLARED]).all()
    rest, t = first_slots[DECLARED:], public.params.plain_modulus
    assert np.mean(rest == expected[DECLARED:]) < 0.01  # chance level is 1 / t
    assert np.mean(rest == second_slots[DECLARED:]) < 0.01  # a fresh pad for every reply
    assert np.mean(rest[:, 0] == rest[:, 1]) < 0.01  # and for every output
    # Spread over all of [0, t), where the true scores fill only a narrow band around 0.
    assert np.abs(_spread(rest, t) - 1 / BINS).max() < 0.02
    assert np.abs(_spread(expected, t) - 1 / BINS).max() > 0.3


@pytest.mark.parametrize("bound", [2, 5, 2**16 + 1, 268369921, 2**32 - 5])
def test_pad_values_are_uniform_below_the_plaintext_modulus(bound: int) -> None:
    values = random_below(bound, 80_000)
    assert values.dtype == np.uint64 and values.max() < bound
    bins = min(bound, BINS)
    shares = np.bincount((values * np.uint64(bins) // np.uint64(bound)).astype(np.int64), minlength=bins) / values.size
    assert np.abs(shares - 1 / bins).max() < 0.01
