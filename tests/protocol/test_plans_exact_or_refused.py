"""Plans: every plan `build_plan` accepts decrypts exactly, every one it refuses says why, and the
service refuses at start (exit code 2, with the reason) rather than serve wrong scores."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import joblib
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from sklearn.linear_model import LogisticRegression

from bench.processes import PROJECT_ROOT
from model.loading import LinearModel, linear_model_from_estimator
from bfv.inputs import InputEncoding
from bfv.encryption import ClientKeys
from bfv.evaluation import Evaluator
from bfv.params import MAX_PLAIN_BITS, PROFILES
from bfv.plan import (MAX_WEIGHT_BITS, MIN_FLOODING_MARGIN_BITS, WEIGHT_BITS, PlanError, PublicPlan, build_plan,
                      quantize)
from bfv.ring import FLOAT_EXACT_BITS, random_flooding
from bfv.wire import Kind, read_request

# One phrase per reason build_plan gives; a refusal must carry one of them.
REASONS = ("no non-zero weight", "plaintext modulus", "exactly in float64", "do not fit the",
           "exceeds the budget", "room for", "must be positive")

PIXELS = InputEncoding.pixels(784)  # the bundled MNIST model takes pixels / 255


@st.composite
def models(draw) -> LinearModel:
    """Linear models of random shape, scale and sign, some rows (or all) zero; binary, multiclass or regression."""
    kind = draw(st.sampled_from(["binary", "multiclass", "regression"]))
    outputs = 1 if kind == "binary" else draw(st.integers(3 if kind == "multiclass" else 1, 7))
    features = draw(st.one_of(st.integers(1, 48), st.integers(600, 1400)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    coef = rng.standard_normal((outputs, features)) * 10.0 ** draw(st.integers(-6, 6))
    coef *= rng.choice([-1.0, 1.0], size=coef.shape)
    largest = np.unravel_index(np.abs(coef).argmax(), coef.shape)
    kept = coef[largest]
    coef[rng.random(outputs) < draw(st.sampled_from([0.0, 0.3, 0.6]))] = 0.0  # zero rows
    coef[rng.random(coef.shape) < draw(st.sampled_from([0.0, 0.5, 0.95]))] = 0.0  # sparse weights
    coef[largest] = kept if draw(st.sampled_from([True] * 9 + [False])) else 0.0
    if not coef[largest]:
        coef[:] = 0.0  # one model in ten has nothing to compute
    intercept = rng.standard_normal(outputs) * 10.0 ** draw(st.integers(-6, 3))
    classes = {"binary": np.array([0, 1]), "multiclass": np.arange(outputs), "regression": None}[kind]
    return LinearModel(coef=coef, intercept=intercept, classes=classes)


def _inputs(plan, rng: np.random.Generator, count: int) -> np.ndarray:
    """Random admissible inputs, plus for each output the two inputs that reach its score bound."""
    limit = plan.model.input_max
    extremes = np.sign(plan.model.weights) * limit
    random = rng.integers(-limit, limit + 1, size=(count, plan.public.n_features))
    return np.concatenate([extremes, -extremes, random]).astype(np.int64)


@st.composite
def encodings(draw, features: int) -> InputEncoding:
    """One scale for all features, or per-feature ranges of random centres and spans (some constant)."""
    input_max = draw(st.integers(1, 300) | st.integers(1, 2**20))
    if draw(st.booleans()):
        return InputEncoding.uniform(features, draw(st.sampled_from([1.0, 255.0, 1000.0, 0.5]) | st.floats(1e-3, 1e6)),
                                     input_max)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    centres = rng.standard_normal(features) * 10.0 ** draw(st.integers(-3, 4))
    spans = rng.random(features) * 10.0 ** draw(st.integers(-4, 4)) * (rng.random(features) > 0.1)
    return InputEncoding.from_ranges(centres - spans, centres + spans, input_max)


def _check_refusal(model: LinearModel, profile: str, inputs: InputEncoding, weight_bits: int, message: str) -> None:
    assert any(reason in message for reason in REASONS), message
    if "no non-zero weight" in message:
        assert not model.coef.any()
    elif "plaintext modulus" in message and "bits the arithmetic allows" in message:
        assert (2 * quantize(model, inputs, weight_bits).score_bound).bit_length() + 1 > MAX_PLAIN_BITS
    elif "do not fit the" in message:
        assert model.n_features > PROFILES[profile].degree


def _check_exact(plan, rng: np.random.Generator) -> None:
    public = plan.public
    evaluator = Evaluator(plan, mask_pool_size=2)
    keys = ClientKeys(public)
    key = evaluator.prepare_key(keys.public_key)
    inputs = _inputs(plan, rng, 3)
    expected = plan.model.scores(inputs)
    assert np.abs(expected).max() <= plan.model.score_bound < public.params.plain_modulus / 2
    for row in (0, len(inputs) - 1):  # an extreme and a random input through the single-image path
        request = read_request(keys.encrypt_single(inputs[row]), Kind.SINGLE, 1, 1, public.params)
        assert (keys.decrypt_single(evaluator.score_single(request, key)) == expected[row]).all()
    if public.n_features <= 64:  # batch requests carry one ciphertext per feature
        request = read_request(keys.encrypt_batch(inputs), Kind.BATCH, public.n_features, public.degree,
                               public.params)
        assert (keys.decrypt_batch(evaluator.score_batch(request, key)) == expected).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), model=models(), profile=st.sampled_from(sorted(PROFILES)),
       weight_bits=st.sampled_from([WEIGHT_BITS]) | st.integers(2, MAX_WEIGHT_BITS), seed=st.integers(0, 2**32 - 1))
def test_accepted_plans_decrypt_exactly_and_refused_ones_say_why(data, model, profile, weight_bits, seed) -> None:
    inputs = data.draw(encodings(model.n_features))
    try:
        plan = build_plan(model, inputs, profile, weight_bits)
    except PlanError as exc:
        event(f"refused: {next((r for r in REASONS if r in str(exc)), '?')}")
        _check_refusal(model, profile, inputs, weight_bits, str(exc))
        return
    event(f"accepted, {profile}")
    public = plan.public
    assert public.params.plain_modulus < 2**MAX_PLAIN_BITS
    for bits in (public.single_reply_bits, public.batch_reply_bits):
        assert public.degree * 2**bits <= 2**FLOAT_EXACT_BITS
    if PROFILES[profile].flooding:
        assert public.flooding_bits >= math.ceil(math.log2(plan.batch_noise_bound)) + MIN_FLOODING_MARGIN_BITS
    _check_exact(plan, np.random.default_rng(seed))


def _bundled() -> LinearModel:
    return linear_model_from_estimator(joblib.load(PROJECT_ROOT / "model" / "sklearn_mnist_model.pkl"))


@pytest.mark.parametrize("input_max", [4096, 65535, 2**20])
def test_inputs_the_profile_cannot_hold_are_refused(input_max: int) -> None:
    with pytest.raises(PlanError, match="plaintext modulus|room for"):
        build_plan(_bundled(), InputEncoding.uniform(784, 255.0, input_max), "flooded")


def test_flooding_is_60_bits_over_the_bound_and_the_distance_per_reply_is_small() -> None:
    plan = build_plan(_bundled(), PIXELS, "flooded")
    honest = max(plan.single_noise_bound, plan.batch_noise_bound)
    assert plan.public.flooding_bits == math.ceil(math.log2(honest)) + 60
    # n revealed coefficients, each within sigma / 2^f: 10 for one image, 10 * 8192 for a batch.
    assert plan.flooding_distance_log2(batch=False) == pytest.approx(
        math.log2(10 * plan.single_noise_bound / 8) - plan.public.flooding_bits)
    assert plan.flooding_distance_log2(batch=False) <= -59
    assert plan.flooding_distance_log2(batch=True) <= -48
    assert build_plan(_bundled(), PIXELS, "compact").flooding_distance_log2(batch=True) == -math.inf


def _service_exit(tmp_path, model: object, **env: str) -> subprocess.CompletedProcess:
    joblib.dump(model, tmp_path / "model.pkl")
    return subprocess.run([sys.executable, "-m", "service"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "AZUREML_MODEL_DIR": str(tmp_path),
                                            "MODEL_FILE": "model.pkl", "PORT": "1", **env})


def test_service_refuses_to_start_with_an_all_zero_model(tmp_path) -> None:
    estimator = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
    estimator.coef_[:] = 0.0
    result = _service_exit(tmp_path, estimator, NATIVE_INPUT_SCALE="1", NATIVE_INPUT_MAX="1")
    assert result.returncode == 2
    assert "cannot serve this model: the model has no non-zero weight" in result.stderr


def test_service_refuses_to_start_with_an_input_range_it_cannot_decrypt(tmp_path) -> None:
    result = _service_exit(tmp_path, joblib.load(PROJECT_ROOT / "model" / "sklearn_mnist_model.pkl"),
                           NATIVE_INPUT_SCALE="255", NATIVE_INPUT_MAX="65535")
    assert result.returncode == 2
    assert "36-bit plaintext modulus" in result.stderr


@pytest.mark.parametrize("bits", [20, 59, 60, 80])
def test_flooding_noise_is_uniform_over_its_whole_range(bits: int) -> None:
    primes = build_plan(_bundled(), PIXELS, "flooded").public.params.data_primes
    residues = random_flooding((4000,), bits, primes)
    modulus = primes[0] * primes[1]
    values = [(int(r0) * primes[1] * pow(primes[1], -1, primes[0]) + int(r1) * primes[0] * pow(primes[0], -1, primes[1]))
              % modulus for r0, r1 in zip(*residues)]
    values = np.array([(v - modulus if v > modulus // 2 else v) / 2**bits for v in values])
    assert values.min() >= -1 and values.max() < 1
    # Uniform on [-1, 1): each quarter holds about a quarter of the draws (4000 draws: > 800 each).
    assert (np.histogram(values, bins=4, range=(-1, 1))[0] > 800).all()


def test_a_client_refuses_a_description_it_could_not_decrypt_exactly() -> None:
    body = build_plan(_bundled(), PIXELS).public.describe()
    assert PublicPlan.from_description(body).single_reply_bits == body["single_reply_bits"]
    for field, value in (("single_reply_bits", 48), ("batch_reply_bits", 42), ("plain_modulus", 2**32 + 15)):
        with pytest.raises(PlanError, match="cannot be decrypted exactly"):
            PublicPlan.from_description({**body, field: value})


def test_the_widest_weights_decrypt_exactly() -> None:
    """23-bit weights (what model.prepare may choose for few features) on a single image: the server's
    float64 dot products split their operands by the plan's own weight precision, not the default's."""
    rng = np.random.default_rng(7)
    model = LinearModel(coef=rng.standard_normal((3, 60)), intercept=rng.standard_normal(3), classes=np.arange(3))
    plan = build_plan(model, InputEncoding.uniform(60, 1.0, 1), "compact", 23)  # the widest compact holds here
    evaluator, keys = Evaluator(plan, mask_pool_size=2), ClientKeys(plan.public)
    key = evaluator.prepare_key(keys.public_key)
    inputs = rng.integers(-1, 2, size=(12, 60))
    for row, expected in zip(inputs, plan.model.scores(inputs)):
        request = read_request(keys.encrypt_single(row), Kind.SINGLE, 1, 1, plan.public.params)
        assert (keys.decrypt_single(evaluator.score_single(request, key)) == expected).all()
