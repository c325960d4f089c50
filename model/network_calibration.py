"""Choosing a square network's precisions from calibration data (`python -m model.prepare NET.onnx ...`).

A network's integer scores grow with the square of its first layer, so its precisions are chosen
together: input levels and weight bits per layer, each combination tried where the plan decrypts
exactly (`bfv.network_plan.build_network_plan`) and compared with the float network on the
calibration samples. The best label agreement reachable is found over the combinations with one
precision for every layer; then the combinations are tried from the fewest bits up, and the first
within `AGREEMENT_SLACK` of that best sets the cost: its number of plaintext moduli (fewer bits mean
smaller scores, so fewer moduli, and each modulus is one more pass over every round). Among the
combinations of its input levels that need no more moduli, the one with the highest agreement is
chosen (the fewest bits among equals): more weight bits at the same cost. Calibration data the
network was trained on agrees with the quantized network more than new data does (for a held-out
784-128-x²-10 network, 99.85 % on its training images but 99.24 % on 4,096 test images with [6, 5]
bits, 99.85 % with [8, 8] at the same two moduli), so the cheapest candidate near the best is not
the one to keep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bfv.inputs import InputEncoding
from bfv.network_plan import NetworkPlan, build_network_plan
from bfv.plan import PlanError
from model.network import SquareNetwork

INPUT_BITS = (2, 3, 4, 5, 6, 7, 8, 9, 10)
WEIGHT_BITS = (4, 5, 6, 7, 8, 9, 10)
AGREEMENT_SLACK = 0.001
MAX_CALIBRATION_SAMPLES = 2000  # agreement is measured on at most this many samples (the first ones)


@dataclass(frozen=True)
class NetworkCandidate:
    plan: NetworkPlan
    inputs: InputEncoding
    input_bits: int | None  # None: the inputs' own encoding (pixels)
    weight_bits: tuple[int, ...]
    agreement: float  # labels of the quantized network equal to the float network's, on the samples
    max_rel_score_error: float



def measure(network: SquareNetwork, plan: NetworkPlan, samples: np.ndarray) -> tuple[float, float]:
    """(label agreement, largest score error / largest score) of the quantized network on `samples`."""
    exact = network.scores(samples)
    scores = np.asarray(plan.quantized_scores(samples, clip=True), dtype=np.float64)
    scores /= plan.public.score_scale
    agreement = float(np.mean(scores.argmax(axis=1) == exact.argmax(axis=1)))
    largest = float(np.abs(exact).max())
    return agreement, float(np.abs(scores - exact).max() / largest) if largest > 0 else 0.0


def choose_network_plan(network: SquareNetwork, samples: np.ndarray, encodings: list[tuple[int | None, InputEncoding]],
                        profile: str, progress: Callable[[str], None] | None = None) -> NetworkCandidate:
    """The candidate the module docstring describes: the fewest moduli near the best agreement, then the best."""
    samples = samples[:MAX_CALIBRATION_SAMPLES]
    layers = len(network.layers)
    refusals: list[str] = []
    tried: dict[tuple, NetworkCandidate | None] = {}

    def attempt(input_bits: int | None, inputs: InputEncoding, bits: tuple[int, ...]) -> NetworkCandidate | None:
        if (input_bits, bits) not in tried:
            try:
                plan = build_network_plan(network, inputs, profile, bits)
                agreement, error = measure(network, plan, samples)
                tried[(input_bits, bits)] = NetworkCandidate(plan, inputs, input_bits, bits, agreement, error)
            except PlanError as exc:
                refusals.append(str(exc))
                tried[(input_bits, bits)] = None
        return tried[(input_bits, bits)]

    uniform: list[NetworkCandidate] = []
    for input_bits, inputs in encodings:
        found = [c for k in WEIGHT_BITS if (c := attempt(input_bits, inputs, (k,) * layers)) is not None]
        uniform += found
        if progress is not None and found:
            which = "" if input_bits is None else f"{input_bits}-bit inputs: "
            progress(f"{which}best label agreement {max(c.agreement for c in found):.2%}")
    if not uniform:
        raise PlanError(f"no precision gives a plan that decrypts exactly: {refusals[0] if refusals else '?'}")
    best = max(candidate.agreement for candidate in uniform)
    if progress is not None:
        progress(f"{len(tried)} precisions tried, best label agreement with the float network {best:.2%}")
    combinations = sorted(((input_bits, inputs, (first,) + (rest,) * (layers - 1)) for input_bits, inputs in encodings
                           for first in WEIGHT_BITS for rest in WEIGHT_BITS),
                          key=lambda c: (sum(c[2]), c[0] or 0))
    cheapest = next((c for input_bits, inputs, bits in combinations
                     if (c := attempt(input_bits, inputs, bits)) is not None and c.agreement >= best - AGREEMENT_SLACK),
                    None)
    if cheapest is None:  # pragma: no cover: the best uniform candidate is among the combinations
        raise AssertionError("no combination reaches the best uniform agreement")
    moduli = len(cheapest.plan.public.moduli)
    same_cost = [c for input_bits, inputs, bits in combinations if input_bits == cheapest.input_bits
                 and (c := attempt(input_bits, inputs, bits)) is not None and len(c.plan.public.moduli) <= moduli]
    return max(same_cost, key=lambda c: c.agreement)  # the first (fewest bits) of the most agreeing
