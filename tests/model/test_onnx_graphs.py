"""ONNX square networks are read as onnxruntime computes them, and anything else is refused by name."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import helper, numpy_helper

from model.network import Dense, NetworkError, SquareNetwork
from model.onnx_graphs import network_graph, read_network


def _reference(model: onnx.ModelProto, inputs: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs.astype(np.float32)})[0]


def _random_network(rng: np.random.Generator, sizes: tuple[int, ...], final: str | None) -> SquareNetwork:
    layers = tuple(Dense(rng.normal(0, 0.3, (after, before)), rng.normal(0, 0.1, after))
                   for before, after in zip(sizes, sizes[1:]))
    return SquareNetwork(layers, final=final)


@pytest.mark.parametrize("spelling", ["gemm", "matmul"])
@pytest.mark.parametrize("sizes", [(20, 8, 3), (12, 6, 5, 4)])
def test_both_spellings_read_back_as_onnxruntime_computes_them(spelling: str, sizes: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(sizes))
    network = _random_network(rng, sizes, "softmax")
    graph = network_graph(network, spelling)
    read = read_network(graph.SerializeToString())
    inputs = rng.uniform(0, 1, (64, sizes[0]))
    assert read.final == "softmax" and read.squares == len(sizes) - 2
    scores = read.scores(inputs.astype(np.float32).astype(np.float64))
    probabilities = np.exp(scores - scores.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, _reference(graph, inputs), rtol=1e-4, atol=1e-5)


def _graph(nodes: list, initializers: dict[str, np.ndarray], input_shape: list, output: str, outputs: int,
           opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "test", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, ["batch", outputs])],
        initializer=[numpy_helper.from_array(value.astype(np.float32) if value.dtype.kind == "f" else value, name)
                     for name, value in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _conv_network(rng: np.random.Generator) -> onnx.ModelProto:
    """Conv (stride 2, padding) -> square -> AveragePool -> Reshape -> MatMul + Add -> Div, a CryptoNets shape."""
    initializers = {"w": rng.normal(0, 0.3, (3, 1, 3, 3)), "b": rng.normal(0, 0.1, 3),
                    "shape": np.array([0, -1], dtype=np.int64), "dense": rng.normal(0, 0.2, (3 * 3 * 3, 4)),
                    "bias": rng.normal(0, 0.1, 4), "scale": np.array([2.0])}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Mul", ["c", "c"], ["s"], name="square"),
             helper.make_node("AveragePool", ["s"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("Reshape", ["p", "shape"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "dense"], ["m"], name="dense"),
             helper.make_node("Add", ["m", "bias"], ["a"], name="bias"),
             helper.make_node("Div", ["a", "scale"], ["y"], name="scale")]
    return _graph(nodes, initializers, [1, 12, 12], "y", 4)


def test_convolutions_and_pools_become_the_dense_layers_onnxruntime_agrees_with() -> None:
    rng = np.random.default_rng(3)
    graph = _conv_network(rng)
    read = read_network(graph.SerializeToString())
    inputs = rng.uniform(0, 1, (32, 1, 12, 12))
    assert [layer.weights.shape for layer in read.layers] == [(3 * 6 * 6, 144), (4, 3 * 6 * 6)]
    np.testing.assert_allclose(read.scores(inputs.reshape(32, -1).astype(np.float32).astype(np.float64)),
                               _reference(graph, inputs), rtol=1e-4, atol=1e-4)


def _refusal(graph: onnx.ModelProto) -> str:
    with pytest.raises(NetworkError) as refused:
        read_network(graph.SerializeToString())
    return str(refused.value)


def test_an_operator_outside_linear_layers_and_squares_is_refused_with_its_name_and_node() -> None:
    initializers = {"w": np.ones((4, 3)), "b": np.zeros(3)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="first"),
             helper.make_node("Relu", ["h"], ["y"], name="activation")]
    message = _refusal(_graph(nodes, initializers, [4], "y", 3))
    assert "activation" in message and "Relu" in message and "not supported" in message


@pytest.mark.parametrize("exponent", [3.0, 0.5])
def test_a_power_other_than_two_is_refused(exponent: float) -> None:
    initializers = {"w": np.ones((4, 3)), "b": np.zeros(3), "e": np.array([exponent])}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="first"),
             helper.make_node("Pow", ["h", "e"], ["y"], name="power")]
    assert "power" in _refusal(_graph(nodes, initializers, [4], "y", 3))


def test_a_graph_without_a_square_is_a_linear_model_and_refused_as_a_network() -> None:
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="only")]
    assert "no square" in _refusal(_graph(nodes, {"w": np.ones((4, 3)), "b": np.zeros(3)}, [4], "y", 3))


def test_a_product_of_two_different_tensors_is_refused() -> None:
    initializers = {"w": np.ones((4, 3)), "v": np.ones((4, 3))}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"], name="left"),
             helper.make_node("MatMul", ["x", "v"], ["b"], name="right"),
             helper.make_node("Mul", ["a", "b"], ["y"], name="product")]
    assert "product" in _refusal(_graph(nodes, initializers, [4], "y", 3))


def test_an_old_opset_and_a_softmax_before_the_end_are_refused() -> None:
    initializers = {"w": np.ones((4, 3)), "b": np.zeros(3)}
    square = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="first"),
              helper.make_node("Mul", ["h", "h"], ["y"], name="square")]
    assert "opset" in _refusal(_graph(square, initializers, [4], "y", 3, opset=11))
    early = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="first"),
             helper.make_node("Softmax", ["h"], ["p"], axis=1, name="early"),
             helper.make_node("Mul", ["p", "p"], ["y"], name="square")]
    assert "early" in _refusal(_graph(early, initializers, [4], "y", 3))


def test_bytes_that_are_not_onnx_are_refused_as_such() -> None:
    with pytest.raises(NetworkError, match="not a valid ONNX model"):
        read_network(b"\x00not a model")
