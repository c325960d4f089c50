"""ONNX graphs of linear layers and squares, read into a `SquareNetwork` (and written, for training).

Accepted (default domain, opset >= 13, what PyTorch, Keras and sklearn-onnx export for such a
network): `Gemm`; `MatMul` and `Add` with a constant operand; `Mul` and `Div` by a constant;
`Conv` and `AveragePool` (turned into their dense matrices); `Flatten`, `Reshape`, `Identity`,
`Dropout` (inference: the identity); `Mul(a, a)` or `Pow(a, 2)` for the square; and, last, an
optional `Softmax` or `LogSoftmax` over the scores (the service returns the scores, the client
applies it). Anything else is refused with its operator and node name.

Reading follows the graph node by node and keeps, for each tensor, the affine map `A u + c` of the
current stage's input `u` (the graph's input, or the last square's output), so consecutive linear
operators fold into one dense layer and a square closes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from model.network import Dense, NetworkError, SquareNetwork

MIN_OPSET = 13
FINAL_OPERATORS = {"Softmax": "softmax", "LogSoftmax": "logsoftmax"}
MAX_FEATURES = 1 << 16  # dense maps of larger stages would not fit a ring degree anyway


@dataclass
class _Affine:
    """A tensor as `matrix @ u + offset` of the stage input u, with its shape (without the batch axis)."""

    matrix: np.ndarray  # (size, stage inputs)
    offset: np.ndarray  # (size,)
    shape: tuple[int, ...]


def _refuse(node: onnx.NodeProto, why: str) -> NetworkError:
    return NetworkError(f"node {node.name or '(unnamed)'} ({node.op_type}): {why}")


def _attributes(node: onnx.NodeProto) -> dict:
    return {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}


def _conv_matrix(weights: np.ndarray, bias: np.ndarray | None, shape: tuple[int, ...], attributes: dict,
                 node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """The dense matrix (outputs, inputs) of a 2-D convolution on inputs of `shape` (C, H, W)."""
    if len(shape) != 3 or weights.ndim != 4:
        raise _refuse(node, f"only 2-D convolutions on (channels, height, width) inputs, not {shape}")
    channels, height, width = shape
    out_channels, group_channels, kh, kw = weights.shape
    group = int(attributes.get("group", 1))
    if group_channels * group != channels or out_channels % group:
        raise _refuse(node, f"weights {weights.shape} with group {group} do not match {channels} input channels")
    sh, sw = attributes.get("strides", [1, 1])
    dh, dw = attributes.get("dilations", [1, 1])
    if attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise _refuse(node, "auto_pad is not supported: give explicit pads")
    top, left, bottom, right = attributes.get("pads", [0, 0, 0, 0])
    out_h = (height + top + bottom - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + left + right - dw * (kw - 1) - 1) // sw + 1
    matrix = np.zeros((out_channels, out_h, out_w, channels, height, width))
    per_group = out_channels // group
    for o in range(out_channels):
        first = (o // per_group) * group_channels
        for i in range(kh):
            for j in range(kw):
                for y in range(out_h):
                    row = y * sh - top + i * dh
                    if not 0 <= row < height:
                        continue
                    for x in range(out_w):
                        column = x * sw - left + j * dw
                        if 0 <= column < width:
                            matrix[o, y, x, first : first + group_channels, row, column] += weights[o, :, i, j]
    offset = np.repeat(np.zeros(out_channels) if bias is None else bias, out_h * out_w)
    return matrix.reshape(out_channels * out_h * out_w, -1), offset, (out_channels, out_h, out_w)


def _pool_matrix(shape: tuple[int, ...], attributes: dict, node: onnx.NodeProto) -> tuple[np.ndarray, tuple[int, ...]]:
    if len(shape) != 3:
        raise _refuse(node, f"only 2-D pools on (channels, height, width) inputs, not {shape}")
    channels, height, width = shape
    kh, kw = attributes["kernel_shape"]
    sh, sw = attributes.get("strides", [1, 1])
    top, left, bottom, right = attributes.get("pads", [0, 0, 0, 0])
    if attributes.get("ceil_mode", 0):
        raise _refuse(node, "ceil_mode is not supported")
    include_pad = bool(attributes.get("count_include_pad", 0))
    out_h = (height + top + bottom - kh) // sh + 1
    out_w = (width + left + right - kw) // sw + 1
    matrix = np.zeros((channels, out_h, out_w, channels, height, width))
    for y in range(out_h):
        for x in range(out_w):
            rows = [r for r in range(y * sh - top, y * sh - top + kh) if 0 <= r < height]
            columns = [c for c in range(x * sw - left, x * sw - left + kw) if 0 <= c < width]
            count = kh * kw if include_pad else len(rows) * len(columns)
            for c in range(channels):
                for r in rows:
                    matrix[c, y, x, c, r, columns] = 1.0 / count
    return matrix.reshape(channels * out_h * out_w, -1), (channels, out_h, out_w)


def _reshaped(shape: tuple[int, ...], target: list[int], node: onnx.NodeProto) -> tuple[int, ...]:
    """A Reshape's shape without its batch axis (which must stay first, as 0, -1 or the batch size)."""
    size = int(np.prod(shape))
    rest = [int(d) for d in target[1:]]
    rest = [shape[index] if d == 0 and index < len(shape) else d for index, d in enumerate(rest)]
    if rest.count(-1) > 1 or 0 in rest:
        raise _refuse(node, f"cannot reshape {shape} to {target}")
    if -1 in rest:
        known = int(np.prod([d for d in rest if d != -1]))
        rest[rest.index(-1)] = size // known
    if int(np.prod(rest)) != size:
        raise _refuse(node, f"cannot reshape {size} values per sample to {target} (the batch axis must stay first)")
    return tuple(rest)


def _is_square(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> bool:
    """`Mul(a, a)` or `Pow(a, 2)` with a constant exponent."""
    if node.op_type == "Mul":
        return len(node.input) == 2 and node.input[0] == node.input[1]
    if node.op_type == "Pow":
        exponent = constants.get(node.input[1])
        return exponent is not None and exponent.size == 1 and float(exponent.reshape(-1)[0]) == 2.0
    return False


def read_network(source: str | Path | bytes) -> SquareNetwork:
    """The square network an ONNX model computes; raises `NetworkError` naming what is not supported."""
    try:
        model = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(str(source))
        onnx.checker.check_model(model)
    except (OSError, ValueError, onnx.checker.ValidationError, DecodeError) as exc:
        raise NetworkError(f"not a valid ONNX model: {exc}") from None
    opset = max((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        raise NetworkError(f"the graph declares opset {opset}: opset {MIN_OPSET} or later is read")
    graph = model.graph
    constants = {tensor.name: numpy_helper.to_array(tensor).astype(np.float64) for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = numpy_helper.to_array(_attributes(node)["value"]).astype(np.float64)
    inputs = [value for value in graph.input if value.name not in constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise NetworkError(f"the graph has {len(inputs)} inputs and {len(graph.output)} outputs: one of each is read")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(int(d.dim_value) for d in dims[1:])
    if not shape or any(d <= 0 for d in shape):
        raise NetworkError(f"input {inputs[0].name} needs a fixed shape after its batch axis, not {shape}")
    size = int(np.prod(shape))
    if size > MAX_FEATURES:
        raise NetworkError(f"{size} input features: at most {MAX_FEATURES} are read")
    values = {inputs[0].name: _Affine(np.eye(size), np.zeros(size), shape)}
    layers: list[Dense] = []
    final: str | None = None
    output = graph.output[0].name

    def affine(name: str, node: onnx.NodeProto) -> _Affine:
        if name not in values:
            raise _refuse(node, f"input {name!r} is neither the graph's input nor computed from it by a supported "
                                "operator")
        return values[name]

    def constant(name: str, node: onnx.NodeProto) -> np.ndarray:
        if name not in constants:
            raise _refuse(node, f"operand {name!r} must be a constant (an initializer) here")
        return constants[name]

    def apply(value: _Affine, matrix: np.ndarray, offset: np.ndarray, shape: tuple[int, ...]) -> _Affine:
        return _Affine(matrix @ value.matrix, matrix @ value.offset + offset, shape)

    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise _refuse(node, f"operators of domain {node.domain!r} are not supported")
        if final is not None:
            raise _refuse(node, f"nothing may follow the final {final}")
        op, attributes = node.op_type, _attributes(node)
        if op == "Constant":
            continue
        if op in FINAL_OPERATORS:
            value = affine(node.input[0], node)
            axis = int(attributes.get("axis", -1))
            if node.output[0] != output or len(value.shape) != 1 or axis not in (-1, 1):
                raise _refuse(node, "a softmax is read only as the graph's last step, over the scores (axis 1)")
            final = FINAL_OPERATORS[op]
            values[node.output[0]] = value
            continue
        if _is_square(node, constants):
            value = affine(node.input[0], node)
            layers.append(Dense(value.matrix, value.offset))
            width = value.matrix.shape[0]
            values[node.output[0]] = _Affine(np.eye(width), np.zeros(width), value.shape)
            continue
        if op == "Pow":
            raise _refuse(node, "only the square (exponent 2, a constant) is supported")
        if op == "Gemm":
            value = affine(node.input[0], node)
            weights = constant(node.input[1], node)
            if attributes.get("transA", 0):
                raise _refuse(node, "transA is not supported (the batch axis comes first)")
            weights = weights.T if attributes.get("transB", 0) else weights  # (inputs, outputs)
            bias = constant(node.input[2], node) if len(node.input) > 2 and node.input[2] else np.zeros(1)
            alpha, beta = float(attributes.get("alpha", 1.0)), float(attributes.get("beta", 1.0))
            if len(value.shape) != 1 or weights.shape[0] != value.shape[0]:
                raise _refuse(node, f"weights {weights.shape} for inputs of shape {value.shape}")
            outputs = weights.shape[1]
            offset = beta * np.broadcast_to(bias.reshape(-1), (outputs,))
            values[node.output[0]] = apply(value, alpha * weights.T, offset, (outputs,))
        elif op == "MatMul":
            value = affine(node.input[0], node)
            weights = constant(node.input[1], node)
            if weights.ndim != 2 or len(value.shape) != 1 or weights.shape[0] != value.shape[0]:
                raise _refuse(node, f"a constant matrix (inputs, outputs) after the input, not {weights.shape} for "
                                    f"inputs of shape {value.shape}")
            values[node.output[0]] = apply(value, weights.T, np.zeros(weights.shape[1]), (weights.shape[1],))
        elif op in ("Add", "Mul", "Div"):
            first, second = node.input[0], node.input[1]
            if op != "Div" and first in constants and second in values:
                first, second = second, first
            if first not in values or second not in constants:
                raise _refuse(node, f"only {op} of a computed tensor and a constant is supported")
            value, operand = values[first], constants[second]
            try:
                operand = np.broadcast_to(operand, (1, *value.shape)).reshape(-1)
            except ValueError:
                raise _refuse(node, f"constant of shape {constants[second].shape} does not broadcast to "
                                    f"{value.shape}") from None
            if op == "Add":
                values[node.output[0]] = _Affine(value.matrix, value.offset + operand, value.shape)
            else:
                factor = operand if op == "Mul" else 1.0 / operand
                values[node.output[0]] = _Affine(value.matrix * factor[:, None], value.offset * factor, value.shape)
        elif op == "Conv":
            value = affine(node.input[0], node)
            bias = constant(node.input[2], node) if len(node.input) > 2 and node.input[2] else None
            matrix, offset, shape = _conv_matrix(constant(node.input[1], node), bias, value.shape, attributes, node)
            values[node.output[0]] = apply(value, matrix, offset, shape)
        elif op == "AveragePool":
            value = affine(node.input[0], node)
            matrix, shape = _pool_matrix(value.shape, attributes, node)
            values[node.output[0]] = apply(value, matrix, np.zeros(matrix.shape[0]), shape)
        elif op == "Flatten":
            value = affine(node.input[0], node)
            if int(attributes.get("axis", 1)) != 1:
                raise _refuse(node, "only Flatten with axis 1 (keep the batch axis) is supported")
            values[node.output[0]] = _Affine(value.matrix, value.offset, (int(np.prod(value.shape)),))
        elif op == "Reshape":
            value = affine(node.input[0], node)
            target = constant(node.input[1], node).astype(np.int64).tolist()
            values[node.output[0]] = _Affine(value.matrix, value.offset, _reshaped(value.shape, target, node))
        elif op in ("Identity", "Dropout"):
            values[node.output[0]] = affine(node.input[0], node)
        else:
            raise _refuse(node, f"operator {op} is not supported: a square network has linear layers (Gemm, MatMul, "
                                "Add, Conv, AveragePool, Flatten, Reshape) and squares (Mul(a, a), Pow(a, 2)) only")
    last = affine(output, graph.node[-1] if graph.node else onnx.NodeProto())
    if len(last.shape) != 1:
        raise NetworkError(f"the graph's output has shape {last.shape} per sample: scores are a vector")
    if not layers:
        raise NetworkError("the graph has no square: it is a linear model (serve it as a scikit-learn model)")
    layers.append(Dense(last.matrix, last.offset))
    return SquareNetwork(tuple(layers), final=final)


def network_graph(network: SquareNetwork, spelling: str = "gemm", name: str = "square-network") -> onnx.ModelProto:
    """An ONNX graph of `network` for float32 inputs (batch, features): `Gemm` and `Mul(a, a)`, or
    (`spelling="matmul"`) `MatMul`, `Add` and `Pow(a, 2)`; then its final softmax, if any."""
    nodes, initializers = [], []
    current = "input"
    for index, layer in enumerate(network.layers):
        if index:
            squared = f"squared_{index}"
            if spelling == "gemm":
                nodes.append(helper.make_node("Mul", [current, current], [squared], name=f"square_{index}"))
            else:
                initializers.append(numpy_helper.from_array(np.array([2.0], dtype=np.float32), f"two_{index}"))
                nodes.append(helper.make_node("Pow", [current, f"two_{index}"], [squared], name=f"square_{index}"))
            current = squared
        weights, bias = f"weights_{index}", f"bias_{index}"
        out = f"dense_{index}"
        if spelling == "gemm":
            initializers += [numpy_helper.from_array(layer.weights.astype(np.float32), weights),
                             numpy_helper.from_array(layer.bias.astype(np.float32), bias)]
            nodes.append(helper.make_node("Gemm", [current, weights, bias], [out], transB=1, name=f"gemm_{index}"))
        else:
            initializers += [numpy_helper.from_array(layer.weights.T.astype(np.float32), weights),
                             numpy_helper.from_array(layer.bias.astype(np.float32), bias)]
            nodes.append(helper.make_node("MatMul", [current, weights], [f"product_{index}"], name=f"matmul_{index}"))
            nodes.append(helper.make_node("Add", [f"product_{index}", bias], [out], name=f"add_{index}"))
        current = out
    if network.final is not None:
        operator = {value: key for key, value in FINAL_OPERATORS.items()}[network.final]
        nodes.append(helper.make_node(operator, [current], ["probabilities"], axis=1, name="final"))
        current = "probabilities"
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", network.n_features])],
        [helper.make_tensor_value_info(current, onnx.TensorProto.FLOAT, ["batch", network.n_outputs])],
        initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="encrypted-scoring")
