"""The model as the native protocol evaluates it: quantized weights, their encodings, the noise.

Scores are computed exactly on integers, then read as real numbers by the client:

    x_int = round(x * input_scale), |x_int| <= input_max        (MNIST: the uint8 pixels)
    W_int = round(W * alpha), alpha = (2^(bits-1) - 1) / max|W|  (12-bit weights)
    b_int = round(b * alpha * input_scale)
    score = (W_int @ x_int + b_int) / (alpha * input_scale)

The plaintext modulus t is the smallest batching prime above twice the largest |score_int| any
admissible input can produce, so no score ever wraps around. The error against scikit-learn's
float scores is the weight quantization alone.

Single image (coefficient encoding, no rotations, no keys): x_int are the coefficients of m(X);
class l of group g has its weight row reversed at offset l * F, so coefficient l * F + F - 1 of
m * w_g is exactly class l's dot product. Batch (slot encoding): ciphertext i holds feature i of
up to N images, and class j's scores are sum_i W_int[j, i] * ct_i.

`reply_bits` is the modulus 2^b that replies are switched to: the smallest b for which every
revealed coefficient decrypts correctly except with probability < 2^-40 per coefficient (an
8-sigma Gaussian tail on the rounding error, plus a worst-case bound on everything else).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from model.loading import LinearModel
from native.params import FLOODING_BITS, PROFILES, RingParameters, ring_parameters
from native.ring import ERROR_SIGMA

WEIGHT_BITS = 12
TAIL_SIGMAS = 8.0


class PlanError(ValueError):
    """The model cannot be served by the native protocol with this profile."""


@dataclass(frozen=True)
class QuantizedModel:
    weights: np.ndarray  # (outputs, features) int64
    intercepts: np.ndarray  # (outputs,) int64
    score_scale: float
    input_scale: float
    input_max: int
    classes: np.ndarray | None

    @property
    def n_outputs(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.weights.shape[1])

    @property
    def score_bound(self) -> int:
        """The largest |score_int| over every input with |x_int| <= input_max."""
        return int(self.input_max * np.abs(self.weights).sum(axis=1).max() + np.abs(self.intercepts).max())

    def quantize_inputs(self, features: np.ndarray) -> np.ndarray:
        """Model features (as scikit-learn sees them) to the integers that are encrypted."""
        scaled = np.rint(np.asarray(features, dtype=np.float64) * self.input_scale)
        return np.clip(scaled, -self.input_max, self.input_max).astype(np.int64)

    def scores(self, inputs: np.ndarray) -> np.ndarray:
        """The integer scores the encrypted path must reproduce exactly, for integer inputs."""
        return np.asarray(inputs, dtype=np.int64) @ self.weights.T + self.intercepts


def quantize(model: LinearModel, input_scale: float, input_max: int, weight_bits: int = WEIGHT_BITS) -> QuantizedModel:
    largest = float(np.abs(model.coef).max())
    alpha = (2 ** (weight_bits - 1) - 1) / largest if largest > 0 else 1.0
    return QuantizedModel(
        weights=np.rint(model.coef * alpha).astype(np.int64),
        intercepts=np.rint(model.intercept * alpha * input_scale).astype(np.int64),
        score_scale=alpha * input_scale, input_scale=input_scale, input_max=int(input_max),
        classes=model.classes,
    )


@dataclass(frozen=True)
class PublicPlan:
    """What both ends know: the parameters, the layout of requests and replies, the scales."""

    params: RingParameters
    n_features: int
    n_outputs: int
    groups: tuple[tuple[int, ...], ...]  # output indices answered by each single-image reply ciphertext
    flooding_bits: int  # 0 when the profile does not flood
    single_reply_bits: int
    batch_reply_bits: int
    input_scale: float
    input_max: int
    score_scale: float
    classes: tuple | None

    @property
    def degree(self) -> int:
        return self.params.degree

    def result_positions(self, group: int) -> np.ndarray:
        """Coefficients of m * w_g that hold group `group`'s scores, in the group's output order."""
        return np.arange(len(self.groups[group])) * self.n_features + self.n_features - 1

    def describe(self) -> dict:
        """The `/v1/model` body: enough for a client to build the same context and read the replies."""
        return {
            "protocol": "ei-native-1",
            "scheme": "bfv",
            "profile": self.params.profile,
            "poly_modulus_degree": self.degree,
            "coeff_modulus": list(self.params.data_primes),
            "special_modulus": list(self.params.extra_primes),
            "plain_modulus": self.params.plain_modulus,
            "log_q": self.params.log_q,
            "security_bits": 128,
            "n_features": self.n_features,
            "n_outputs": self.n_outputs,
            "classes": None if self.classes is None else list(self.classes),
            "input_scale": self.input_scale,
            "input_max": self.input_max,
            "score_scale": self.score_scale,
            "weight_bits": WEIGHT_BITS,
            "groups": [list(group) for group in self.groups],
            "flooding_bits": self.flooding_bits,
            "single_reply_bits": self.single_reply_bits,
            "batch_reply_bits": self.batch_reply_bits,
            "max_batch": self.degree,
        }

    @classmethod
    def from_description(cls, body: dict) -> "PublicPlan":
        params = RingParameters(profile=body["profile"], degree=int(body["poly_modulus_degree"]),
                                data_primes=tuple(int(p) for p in body["coeff_modulus"]),
                                extra_primes=tuple(int(p) for p in body["special_modulus"]),
                                plain_modulus=int(body["plain_modulus"]))
        if body.get("protocol") != "ei-native-1" or params.profile not in PROFILES:
            raise PlanError(f"unsupported protocol {body.get('protocol')!r} / profile {params.profile!r}")
        if not params.meets_128_bit_security():
            raise PlanError(f"the server's parameters (N={params.degree}, log Q={params.log_q}) are below 128-bit security")
        classes = body.get("classes")
        return cls(params=params, n_features=int(body["n_features"]), n_outputs=int(body["n_outputs"]),
                   groups=tuple(tuple(int(i) for i in group) for group in body["groups"]),
                   flooding_bits=int(body["flooding_bits"]), single_reply_bits=int(body["single_reply_bits"]),
                   batch_reply_bits=int(body["batch_reply_bits"]), input_scale=float(body["input_scale"]),
                   input_max=int(body["input_max"]), score_scale=float(body["score_scale"]),
                   classes=None if classes is None else tuple(classes))


@dataclass(frozen=True)
class NativePlan:
    """The server's plan: the public part plus the quantized weights and the noise analysis."""

    public: PublicPlan
    model: QuantizedModel
    single_noise_bound: float
    batch_noise_bound: float

    def group_weight_poly(self, group: int) -> np.ndarray:
        """w_g(X) as signed integer coefficients (N,)."""
        features = self.model.n_features
        poly = np.zeros(self.public.degree, dtype=np.int64)
        for slot, output in enumerate(self.public.groups[group]):
            poly[slot * features : (slot + 1) * features] = self.model.weights[output, ::-1]
        return poly


def _reply_bits(params: RingParameters, noise_bound: float) -> int:
    """Smallest b with 2^b / (2t) > (noise / Q) * 2^b + rounding error of the switch to 2^b."""
    degree, t = params.degree, params.plain_modulus
    rounding = TAIL_SIGMAS * math.sqrt((degree * 2 / 3 + 1) / 12) + 1
    headroom = 1 / (2 * t) - noise_bound / params.data_modulus
    if headroom <= 0:
        raise PlanError(f"noise bound 2^{math.log2(noise_bound):.1f} exceeds the budget of profile {params.profile}")
    bits = math.ceil(math.log2(rounding / headroom))
    return bits + -bits % 4  # a multiple of 4 packs two values into whole bytes


def build_plan(model: LinearModel, profile: str = "compact", input_scale: float = 255.0,
               input_max: int = 255) -> NativePlan:
    """Quantize `model`, pick the plaintext modulus and reply widths, and check the noise budget."""
    quantized = quantize(model, input_scale, input_max)
    params = ring_parameters(profile, (2 * quantized.score_bound).bit_length() + 1)
    degree, features = params.degree, quantized.n_features
    if features > degree:
        raise PlanError(f"{features} features do not fit the {degree} coefficients of profile {profile}")
    per_group = degree // features
    groups = tuple(tuple(range(start, min(start + per_group, quantized.n_outputs)))
                   for start in range(0, quantized.n_outputs, per_group))
    fresh = ERROR_SIGMA * math.sqrt(2 * degree * 2 / 3 + 1)  # e2 * s + e_pk * u + e1 of the re-randomization

    def bound(weight_norm: float) -> float:
        # e * w (client's error) and the rounding of round(Q m / t) times w, then the fresh noise.
        sigma = math.sqrt((ERROR_SIGMA ** 2 + 1 / 12) * weight_norm ** 2 + fresh ** 2)
        return TAIL_SIGMAS * sigma

    weight_norms = np.sqrt((quantized.weights.astype(np.float64) ** 2).sum(axis=1))
    single = max(bound(float(np.sqrt((weight_norms[list(group)] ** 2).sum()))) for group in groups)
    batch = bound(float(weight_norms.max()))
    flooding = 0
    if PROFILES[profile].flooding:
        flooding = math.ceil(math.log2(max(single, batch))) + FLOODING_BITS
        single += 2.0 ** flooding
        batch += 2.0 ** flooding
    classes = None if quantized.classes is None else tuple(c.item() if isinstance(c, np.generic) else c
                                                             for c in quantized.classes)
    public = PublicPlan(params=params, n_features=features, n_outputs=quantized.n_outputs, groups=groups,
                        flooding_bits=flooding, single_reply_bits=_reply_bits(params, single),
                        batch_reply_bits=_reply_bits(params, batch), input_scale=input_scale,
                        input_max=quantized.input_max, score_scale=quantized.score_scale, classes=classes)
    return NativePlan(public=public, model=quantized, single_noise_bound=single, batch_noise_bound=batch)
