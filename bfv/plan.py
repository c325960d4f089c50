"""The model as the v1 protocol evaluates it: quantized weights, their encodings, the noise.

Scores are computed exactly on integers, then read as real numbers by the client. Inputs are
encoded feature by feature (`bfv.inputs`), and the encoding is folded into the weights:

    x_int = round((x - offset) * scale), |x_int| <= input_max   (MNIST: the uint8 pixels)
    W' = W / scale, b' = b + W @ offset                            (so W x + b = W' x_int + b')
    W_int = round(W' * alpha), alpha = (2^(bits-1) - 1) / max|W'|  (12-bit weights by default)
    b_int = round(b' * alpha)
    score = (W_int @ x_int + b_int) / alpha

The plaintext modulus t is a batching prime above twice the largest |score_int| any admissible
input can produce, so no score ever wraps around: SEAL's largest prime of the smallest bit length
that holds 2 * bound + 1 (so t is up to ~4x what is needed). The error against scikit-learn's
float scores is the weight quantization alone.

Single image (coefficient encoding, no rotations, no keys): x_int are the coefficients of m(X);
class l of group g has its weight row reversed at offset l * F, so coefficient l * F + F - 1 of
m * w_g is exactly class l's dot product. Batch (slot encoding): ciphertext i holds feature i of
up to N images, and class j's scores are sum_i W_int[j, i] * ct_i.

`reply_bits` is the modulus 2^b that replies are switched to: the smallest b for which every
revealed coefficient decrypts correctly unless a noise term passes 8 standard deviations (an
8-sigma bound on the client's error times the weights, on the re-randomization noise and on the
rounding of the switch; the rounding of the plaintext the server adds, and flooding when on, are
added at their worst case).

`build_plan` refuses, with the reason, every plan whose replies it could not decrypt exactly:
t of 32 bits or more (the arithmetic's products must fit in 64 bits), replies too wide for the
client's float64 sums (N * 2^b <= 2^53), a model without a non-zero weight, more features than
coefficients, noise beyond the modulus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bfv.inputs import InputEncoding
from bfv.params import MAX_PLAIN_BITS, PROFILES, RingParameters, ring_parameters
from bfv.ring import ERROR_SIGMA, FLOAT_EXACT_BITS
from bfv.wire import Kind

if TYPE_CHECKING:  # the service's model type, for annotations only: bfv/ runs without scikit-learn
    from model.loading import LinearModel

WEIGHT_BITS = 12
MAX_WEIGHT_BITS = 24
TAIL_SIGMAS = 8.0
FLOODING_MARGIN_BITS = 60  # flooding noise / honest noise bound, where the modulus leaves room
MIN_FLOODING_MARGIN_BITS = 40  # below this, a flooded plan is refused rather than weakly flooded
# round(Q * P / t) for the plaintext P the server adds to c0 (intercepts; in a batch also the pad
# of the slots the header does not declare) is off by at most 1/2 in every coefficient.
PLAINTEXT_ROUNDING = 0.5
MAX_INTERCEPT = 2**62  # quantized intercepts stay int64; anything near this is refused by t anyway


class PlanError(ValueError):
    """The model cannot be served by the v1 protocol with this profile."""


@dataclass(frozen=True)
class QuantizedModel:
    weights: np.ndarray  # (outputs, features) int64
    intercepts: np.ndarray  # (outputs,) int64
    score_scale: float
    input_max: int
    weight_bits: int
    classes: np.ndarray | None

    @property
    def score_bound(self) -> int:
        """The largest |score_int| over every input with |x_int| <= input_max."""
        return int(self.input_max * np.abs(self.weights).sum(axis=1).max() + np.abs(self.intercepts).max())

    def scores(self, inputs: np.ndarray) -> np.ndarray:
        """The integer scores the encrypted path must reproduce exactly, for integer inputs."""
        return np.asarray(inputs, dtype=np.int64) @ self.weights.T + self.intercepts


def quantize(model: LinearModel, inputs: InputEncoding, weight_bits: int = WEIGHT_BITS) -> QuantizedModel:
    """The integer model of `model` on inputs encoded by `inputs` (the encoding folded into the weights)."""
    if inputs.n_features != model.n_features:
        raise PlanError(f"the input encoding is declared for {inputs.n_features} features; the model takes "
                        f"{model.n_features}")
    if not 2 <= weight_bits <= MAX_WEIGHT_BITS:
        raise PlanError(f"weights of {weight_bits} bits: between 2 and {MAX_WEIGHT_BITS} are supported")
    coef = model.coef / inputs.scales
    intercept = model.intercept + model.coef @ inputs.offsets
    largest = float(np.abs(coef).max())
    if not largest > 0:
        raise PlanError("the model has no non-zero weight: there is nothing to compute on encrypted inputs")
    alpha = (2 ** (weight_bits - 1) - 1) / largest
    intercepts = np.rint(intercept * alpha)
    if not (np.abs(intercepts) < MAX_INTERCEPT).all():
        raise PlanError(f"intercepts of up to {np.abs(intercepts).max():.3g} quantized units do not fit a "
                        f"plaintext modulus below 2^{MAX_PLAIN_BITS}")
    return QuantizedModel(
        weights=np.rint(coef * alpha).astype(np.int64), intercepts=intercepts.astype(np.int64),
        score_scale=alpha, input_max=inputs.input_max, weight_bits=weight_bits, classes=model.classes,
    )


def describe_ring(params: RingParameters, **plain: object) -> dict:
    """A description's ring fields, with the plaintext modulus (or moduli) `plain` after the primes."""
    return {"profile": params.profile, "poly_modulus_degree": params.degree,
            "coeff_modulus": list(params.data_primes), "special_modulus": list(params.extra_primes),
            **plain, "log_q": params.log_q, "security_bits": 128}


def ring_from_description(body: dict, plain_modulus: int) -> RingParameters:
    """The ring a description gives (`describe_ring`), with `plain_modulus`; refused below 128-bit security."""
    params = RingParameters(profile=body["profile"], degree=int(body["poly_modulus_degree"]),
                            data_primes=tuple(int(p) for p in body["coeff_modulus"]),
                            extra_primes=tuple(int(p) for p in body["special_modulus"]), plain_modulus=plain_modulus)
    if not params.meets_128_bit_security():
        raise PlanError(f"the server's parameters (N={params.degree}, log Q={params.log_q}) are below 128-bit "
                        "security")
    return params


def reply_groups(outputs: int, per_group: int) -> tuple[tuple[int, ...], ...]:
    """Consecutive outputs, `per_group` to a single-image reply ciphertext."""
    return tuple(tuple(range(start, min(start + per_group, outputs))) for start in range(0, outputs, per_group))


def group_noise_bound(degree: int, groups: tuple[tuple[int, ...], ...], weight_norms: np.ndarray) -> float:
    """The largest `noise_bound` of a single-image reply ciphertext: each group's weights together."""
    return max(noise_bound(degree, float(np.sqrt((weight_norms[list(group)] ** 2).sum()))) for group in groups)


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
    inputs: InputEncoding | None  # None: a network's rounds (the network plan holds its inputs' encoding)
    weight_bits: int
    score_scale: float
    classes: tuple | None
    # A single sample's features split over this many ciphertexts (a network's rounds): each holds
    # `chunk_features` of them, and a reply ciphertext answers `chunks` times more outputs.
    chunks: int = 1

    @property
    def degree(self) -> int:
        return self.params.degree

    @property
    def chunk_features(self) -> int:
        return -(-self.n_features // self.chunks)

    def request_shape(self, kind: Kind) -> tuple[int, int]:
        """(ciphertexts, most images) of a request of `kind`: one ciphertext (per chunk) holds a sample's
        features in its coefficients; a batch has one ciphertext per feature, a sample per slot."""
        return (self.chunks, 1) if kind is Kind.SINGLE else (self.n_features, self.degree)

    @property
    def single_reply_values(self) -> int:
        """Values of a single-image reply: for each group, c0 at its outputs, then c1 (N)."""
        return sum(len(group) + self.degree for group in self.groups)

    def result_positions(self, group: int) -> np.ndarray:
        """Coefficients of m * w_g that hold group `group`'s scores, in the group's output order."""
        width = self.chunk_features
        return np.arange(len(self.groups[group])) * width + width - 1

    def describe(self) -> dict:
        """The `/v1/model` body: enough for a client to build the same context and read the replies."""
        return {
            "protocol": "ei-native-1",
            "scheme": "bfv",
            **describe_ring(self.params, plain_modulus=self.params.plain_modulus),
            "n_features": self.n_features,
            "n_outputs": self.n_outputs,
            "classes": None if self.classes is None else list(self.classes),
            **self.inputs.describe(),
            "score_scale": self.score_scale,
            "weight_bits": self.weight_bits,
            "groups": [list(group) for group in self.groups],
            "flooding_bits": self.flooding_bits,
            "single_reply_bits": self.single_reply_bits,
            "batch_reply_bits": self.batch_reply_bits,
            "max_batch": self.degree,
        }

    @classmethod
    def from_description(cls, body: dict) -> "PublicPlan":
        if body.get("protocol") != "ei-native-1" or body.get("profile") not in PROFILES:
            raise PlanError(f"unsupported protocol {body.get('protocol')!r} / profile {body.get('profile')!r}")
        params = ring_from_description(body, int(body["plain_modulus"]))
        widest = max(int(body["single_reply_bits"]), int(body["batch_reply_bits"]))
        if params.plain_modulus >= 2**MAX_PLAIN_BITS or params.degree << widest > 2**FLOAT_EXACT_BITS:
            raise PlanError(f"the server's plaintext modulus ({params.plain_modulus}) or {widest}-bit replies "
                            f"cannot be decrypted exactly by this client")
        classes = body.get("classes")
        return cls(params=params, n_features=int(body["n_features"]), n_outputs=int(body["n_outputs"]),
                   groups=tuple(tuple(int(i) for i in group) for group in body["groups"]),
                   flooding_bits=int(body["flooding_bits"]), single_reply_bits=int(body["single_reply_bits"]),
                   batch_reply_bits=int(body["batch_reply_bits"]), inputs=InputEncoding.from_description(body),
                   weight_bits=int(body["weight_bits"]), score_scale=float(body["score_scale"]),
                   classes=None if classes is None else tuple(classes))


@dataclass(frozen=True)
class Plan:
    """The server's plan: the public part plus the quantized weights and the noise analysis.

    The noise bounds are the honest ones (8 sigma), before flooding: flooding is added on top.
    """

    public: PublicPlan
    model: QuantizedModel
    single_noise_bound: float
    batch_noise_bound: float

    def group_weight_poly(self, group: int) -> np.ndarray:
        """w_g(X) as signed integer coefficients (N,)."""
        features = self.public.n_features
        poly = np.zeros(self.public.degree, dtype=np.int64)
        for slot, output in enumerate(self.public.groups[group]):
            poly[slot * features : (slot + 1) * features] = self.model.weights[output, ::-1]
        return poly

    def flooding_distance_log2(self, batch: bool) -> float:
        """log2 of a bound on the statistical distance between one flooded reply and one that
        depends on the scores only (-inf without flooding: then there is no such bound).

        Per revealed c0 coefficient, uniform noise on 2^(f+1) values shifted by the honest noise X
        (standard deviation sigma = bound / 8) moves at most E|X| / 2^(f+1) <= sigma / 2^(f+1) of
        its mass; two weight vectors are at most sigma / 2^f apart; a reply reveals `n` such
        coefficients (n_outputs for one image, n_outputs * N for a batch): n * sigma / 2^f.
        """
        public = self.public
        if not public.flooding_bits:
            return -math.inf
        revealed = public.n_outputs * (public.degree if batch else 1)
        sigma = (self.batch_noise_bound if batch else self.single_noise_bound) / TAIL_SIGMAS
        return math.log2(revealed * sigma) - public.flooding_bits


def noise_bound(degree: int, weight_norm: float) -> float:
    """The 8-sigma noise of a reply coefficient that is a dot product with weights of L2 norm `weight_norm`:
    e * w (the client's error) and the rounding of round(Q m / t) times w, then the re-randomization's
    fresh noise (e2 * s + e_pk * u + e1); plus the rounding of the plaintext the server adds
    (intercepts, a batch's pad, a network's masks), at its worst."""
    fresh = ERROR_SIGMA * math.sqrt(2 * degree * 2 / 3 + 1)
    sigma = math.sqrt((ERROR_SIGMA ** 2 + 1 / 12) * weight_norm ** 2 + fresh ** 2)
    return TAIL_SIGMAS * sigma + PLAINTEXT_ROUNDING


def reply_bits(params: RingParameters, noise_bound: float) -> int:
    """Smallest b with 2^b / (2t) > (noise / Q) * 2^b + rounding error of the switch to 2^b,
    rounded up to a multiple of 4 (two values pack into whole bytes) where that stays exact."""
    degree, t = params.degree, params.plain_modulus
    rounding = TAIL_SIGMAS * math.sqrt((degree * 2 / 3 + 1) / 12) + 1
    headroom = 1 / (2 * t) - noise_bound / params.data_modulus
    limit = FLOAT_EXACT_BITS - int(math.log2(degree))
    if headroom <= 0:
        raise PlanError(f"noise of up to 2^{math.log2(noise_bound):.1f} exceeds the budget of profile "
                        f"{params.profile} with a {params.plain_modulus.bit_length()}-bit plaintext modulus")
    bits = math.ceil(math.log2(rounding / headroom))
    if bits > limit:
        raise PlanError(f"replies would need {bits}-bit values, but the client sums N = {degree} of them "
                        f"exactly in float64 only up to {limit} bits (N * 2^bits <= 2^{FLOAT_EXACT_BITS}); "
                        f"encode the inputs on fewer levels (input_max) or use fewer weight bits")
    return min(bits + -bits % 4, limit)


def _flooding_bits(params: RingParameters, honest: float) -> int:
    """2^FLOODING_MARGIN_BITS times the honest noise bound, or as close to it as the modulus allows."""
    base = math.ceil(math.log2(honest))
    for margin in range(FLOODING_MARGIN_BITS, MIN_FLOODING_MARGIN_BITS - 1, -1):
        try:
            reply_bits(params, honest + 2.0 ** (base + margin))
        except PlanError:
            continue
        return base + margin
    raise PlanError(f"profile {params.profile} has no room for {MIN_FLOODING_MARGIN_BITS} bits of flooding "
                    f"with a {params.plain_modulus.bit_length()}-bit plaintext modulus")


def build_plan(model: LinearModel, inputs: InputEncoding, profile: str = "compact",
               weight_bits: int = WEIGHT_BITS) -> Plan:
    """Quantize `model` for inputs encoded by `inputs`, pick the plaintext modulus and reply widths,
    and check that every reply decrypts exactly; raises PlanError with the reason otherwise."""
    quantized = quantize(model, inputs, weight_bits)
    plain_bits = (2 * quantized.score_bound).bit_length() + 1
    if plain_bits > MAX_PLAIN_BITS:
        raise PlanError(f"scores of inputs up to |{quantized.input_max}| reach {quantized.score_bound} quantized "
                        f"units: a {plain_bits}-bit plaintext modulus, over the {MAX_PLAIN_BITS} bits the "
                        f"arithmetic allows; encode the inputs on fewer levels or use fewer weight bits")
    params = ring_parameters(profile, plain_bits)
    degree, (outputs, features) = params.degree, quantized.weights.shape
    if features > degree:
        raise PlanError(f"{features} features do not fit the {degree} coefficients of profile {profile}")
    groups = reply_groups(outputs, degree // features)
    weight_norms = np.sqrt((quantized.weights.astype(np.float64) ** 2).sum(axis=1))
    single = group_noise_bound(degree, groups, weight_norms)
    batch = noise_bound(degree, float(weight_norms.max()))
    flooding = _flooding_bits(params, max(single, batch)) if PROFILES[profile].flooding else 0
    flood = 2.0 ** flooding if flooding else 0.0
    classes = None if quantized.classes is None else tuple(c.item() if isinstance(c, np.generic) else c
                                                             for c in quantized.classes)
    public = PublicPlan(params=params, n_features=features, n_outputs=outputs, groups=groups,
                        flooding_bits=flooding, single_reply_bits=reply_bits(params, single + flood),
                        batch_reply_bits=reply_bits(params, batch + flood), inputs=inputs,
                        weight_bits=weight_bits, score_scale=quantized.score_scale, classes=classes)
    return Plan(public=public, model=quantized, single_noise_bound=single, batch_noise_bound=batch)
