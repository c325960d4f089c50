"""Square-activation networks: dense layers with x -> x^2 between them, as the v1 protocol serves them.

A network is `dense_0, square, dense_1, square, ..., dense_L` (at least one square), optionally
followed by a softmax that the client applies: the service returns the last dense layer's scores.
Convolutions and average pools are dense layers too (`model.onnx_graphs` turns them into their
matrices), so this is every network of linear layers and squares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.outputs import Outputs


class NetworkError(ValueError):
    """The graph is not a network of linear layers and squares, or its shapes do not chain."""


@dataclass(frozen=True)
class Dense:
    """`y = weights @ x + bias`: weights (outputs, inputs), bias (outputs,), float64."""

    weights: np.ndarray
    bias: np.ndarray

    @property
    def n_inputs(self) -> int:
        return int(self.weights.shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.weights.shape[0])


@dataclass(frozen=True)
class SquareNetwork:
    layers: tuple[Dense, ...]  # a square between each two
    final: str | None = None  # "softmax", "logsoftmax" or None: what the graph applies after the scores

    def __post_init__(self) -> None:
        if len(self.layers) < 2:
            raise NetworkError("a square network has at least two dense layers with a square between them")
        for index, (before, after) in enumerate(zip(self.layers, self.layers[1:])):
            if before.n_outputs != after.n_inputs:
                raise NetworkError(f"layer {index} gives {before.n_outputs} values, layer {index + 1} takes "
                                   f"{after.n_inputs}")
        for index, layer in enumerate(self.layers):
            if layer.bias.shape != (layer.n_outputs,):
                raise NetworkError(f"layer {index}: bias of shape {layer.bias.shape} for {layer.n_outputs} outputs")
            if not (np.isfinite(layer.weights).all() and np.isfinite(layer.bias).all()):
                raise NetworkError(f"layer {index} has weights or biases that are not finite numbers")

    @property
    def n_features(self) -> int:
        return self.layers[0].n_inputs

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].n_outputs

    @property
    def squares(self) -> int:
        return len(self.layers) - 1

    def scores(self, features: np.ndarray) -> np.ndarray:
        """The float scores (before any softmax) of one sample (1-D) or rows of samples (2-D)."""
        values = np.asarray(features, dtype=np.float64)
        for index, layer in enumerate(self.layers):
            if index:
                values = values * values
            values = values @ layer.weights.T + layer.bias
        return values


def network_outputs(network: SquareNetwork, classes: tuple | None = None) -> Outputs:
    """A network classifies: argmax of its scores, and the softmax of them when its graph ends in one."""
    classes = tuple(range(network.n_outputs)) if classes is None else tuple(classes)
    if len(classes) != network.n_outputs:
        raise NetworkError(f"{len(classes)} classes for a network of {network.n_outputs} outputs")
    has_proba = network.final is not None
    return Outputs(kind="classifier", estimator="SquareNetwork", single_output=False, classes=classes,
                   proba="softmax" if has_proba else None,
                   proba_error=None if has_proba else "this network's graph ends without a Softmax: it has no "
                                                      "predict_proba")


@dataclass(frozen=True)
class NetworkModel:
    """A served square network: its layers and how its scores become answers."""

    network: SquareNetwork
    outputs: Outputs

    @property
    def n_features(self) -> int:
        return self.network.n_features

    @property
    def n_outputs(self) -> int:
        return self.network.n_outputs

    @property
    def classes(self) -> np.ndarray:
        return np.asarray(self.outputs.classes)
