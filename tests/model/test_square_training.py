"""Fine-tuning a square network on its quantization grid (`model.square_training.fine_tune_on_grid`),
and the bundled network that `python -m model.train --kind square-mlp` made that way."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from bfv.inputs import InputEncoding
from bfv.network_plan import build_network_plan, quantize_network
from model import BUNDLED_NETWORK_DIR, BUNDLED_NETWORK_FILE
from model.description import ModelDescription
from model.onnx_graphs import network_graph, read_network
from model.square_training import GridSettings, TrainingSettings, fine_tune_on_grid, on_grid, train_square_mlp


def _same_integers(one, other) -> bool:
    return all((a == b).all() for a, b in zip(one.weights, other.weights)) and all(
        list(a) == list(b) for a, b in zip(one.biases, other.biases))


def _assert_on_its_grid(network, inputs: InputEncoding, weight_bits: tuple[int, ...]) -> None:
    """The network's own weights and biases are the scaled-back integers (float32 rounding aside)."""
    for own, grid in zip(network.layers, on_grid(network, inputs, weight_bits).layers):
        np.testing.assert_allclose(own.weights, grid.weights, rtol=1e-6, atol=1e-6 * np.abs(own.weights).max())
        np.testing.assert_allclose(own.bias, grid.bias, rtol=1e-6, atol=1e-6 * np.abs(own.weights).max())


def test_a_network_trained_without_the_grid_is_not_on_it() -> None:
    """What `_assert_on_its_grid` tells apart: a float network's weights are not its quantized ones."""
    images, labels = load_digits(return_X_y=True)
    network = train_square_mlp(images[:600] / 16.0, labels[:600], TrainingSettings(hidden=8, epochs=3, max_shift=0))
    with pytest.raises(AssertionError):
        _assert_on_its_grid(network, InputEncoding.from_ranges(np.zeros(64), np.ones(64), 3), (4, 5))


def test_a_network_tuned_on_its_grid_is_its_quantized_network_on_the_input_levels() -> None:
    """Its ONNX file quantizes to the integers it was tuned on, and on inputs rounded to their levels
    its float scores are the quantized network's scores scaled back."""
    images, labels = load_digits(return_X_y=True)
    samples = images[:1200] / 16.0
    settings = TrainingSettings(hidden=24, epochs=15, max_shift=0)
    inputs = InputEncoding.from_ranges(np.zeros(64), np.ones(64), 3)
    grid = GridSettings(epochs=5)
    tuned = fine_tune_on_grid(train_square_mlp(samples, labels[:1200], settings), samples, labels[:1200], inputs,
                              grid, settings)
    quantized = quantize_network(tuned, inputs, grid.weight_bits)
    _assert_on_its_grid(tuned, inputs, grid.weight_bits)
    written = read_network(network_graph(tuned).SerializeToString())  # float32 weights in the graph
    assert _same_integers(quantized, quantize_network(written, inputs, grid.weight_bits))
    held_out = images[1200:] / 16.0
    levels = inputs.encode(held_out)
    floats = tuned.scores(levels / inputs.scales + inputs.offsets)
    exact = np.asarray(quantized.scores(levels), dtype=np.float64) / quantized.score_scale
    np.testing.assert_allclose(floats, exact, rtol=1e-9, atol=1e-9 * np.abs(exact).max())


def test_the_bundled_network_is_on_its_grid_and_needs_one_plaintext_modulus() -> None:
    description = ModelDescription.load(BUNDLED_NETWORK_DIR)
    network = read_network(BUNDLED_NETWORK_DIR / BUNDLED_NETWORK_FILE)
    plan = build_network_plan(network, description.inputs, "compact", description.weight_bits)
    assert len(plan.public.moduli) == 1 and 2 * plan.score_bound < plan.public.moduli[0] < 2**32
    _assert_on_its_grid(network, description.inputs, description.weight_bits)
