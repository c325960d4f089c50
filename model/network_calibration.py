"""Choosing a square network's precisions from calibration data (`python -m model.prepare NET.onnx ...`).

A network's integer scores grow with the square of its first layer, so its precisions are chosen
together: input levels, then weight bits per layer, each pair tried where the plan decrypts
exactly (`bfv.network_plan.build_network_plan`) and compared with the float network on the
calibration samples. The chosen one has the best label agreement; among those within
`AGREEMENT_SLACK` of it, the cheapest (fewest plaintext moduli, then fewest bits): each modulus
is one more pass over every round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bfv.inputs import InputEncoding
from bfv.network_plan import NetworkPlan, build_network_plan
from bfv.plan import PlanError
from model.network import SquareNetwork

INPUT_BITS = (6, 7, 8, 9, 10)
WEIGHT_BITS = (5, 6, 7, 8, 9, 10)
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

    @property
    def cost(self) -> tuple:
        return (len(self.plan.public.moduli), sum(self.weight_bits), self.input_bits or 0)


def measure(network: SquareNetwork, plan: NetworkPlan, inputs: InputEncoding, samples: np.ndarray
            ) -> tuple[float, float]:
    """(label agreement, largest score error / largest score) of the quantized network on `samples`."""
    exact = network.scores(samples)
    scores = np.asarray(plan.network.scores(inputs.encode(samples, clip=True)), dtype=np.float64)
    scores /= plan.public.score_scale
    agreement = float(np.mean(scores.argmax(axis=1) == exact.argmax(axis=1)))
    largest = float(np.abs(exact).max())
    return agreement, float(np.abs(scores - exact).max() / largest) if largest > 0 else 0.0


def choose_network_plan(network: SquareNetwork, samples: np.ndarray, encodings: list[tuple[int | None, InputEncoding]],
                        profile: str, progress: Callable[[str], None] | None = None) -> NetworkCandidate:
    """The best candidate over every input encoding and weight precision (see the module's docstring)."""
    samples = samples[:MAX_CALIBRATION_SAMPLES]
    candidates: list[NetworkCandidate] = []
    refusals: list[str] = []
    layers = len(network.layers)
    for input_bits, inputs in encodings:
        for first in WEIGHT_BITS:
            for rest in WEIGHT_BITS:
                bits = (first,) + (rest,) * (layers - 1)
                try:
                    plan = build_network_plan(network, inputs, profile, bits)
                except PlanError as exc:
                    refusals.append(str(exc))
                    continue
                agreement, error = measure(network, plan, inputs, samples)
                candidates.append(NetworkCandidate(plan, inputs, input_bits, bits, agreement, error))
        if progress is not None:
            best = max((c.agreement for c in candidates), default=0.0)
            level = "pixels" if input_bits is None else f"{input_bits}-bit inputs"
            progress(f"{level}: {len(candidates)} precisions decrypt exactly so far, best label agreement {best:.2%}")
    if not candidates:
        raise PlanError(f"no precision gives a plan that decrypts exactly: {refusals[0] if refusals else '?'}")
    best = max(candidate.agreement for candidate in candidates)
    return min((c for c in candidates if c.agreement >= best - AGREEMENT_SLACK), key=lambda c: c.cost)
