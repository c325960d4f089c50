"""Square networks as the v1 protocol scores them: integer layers, masked rounds, several moduli.

A network `dense_0, x^2, dense_1, ..., x^2, dense_L` is quantized layer by layer (`quantize_network`):

    h_0 = Q_0 x_int + B_0                  per-unit scales alpha_i: h_0[i] ~ alpha_i * (float h_0[i])
    h_l = Q_l (h_{l-1})^2 + B_l            the previous scales folded in: Q_l ~ alpha_l * W_l / alpha_{l-1}^2
    score = h_L / score_scale              one scale for every output, so argmax and softmax hold

Every value is an exact integer. The service computes the layers on ciphertexts, one round per
dense layer (`bfv.network_rounds`), and never the squares: after each dense layer but the last it
adds a fresh mask r, uniform modulo t, and the client decrypts z = h + r (uniform: it says nothing
of h), squares it, and sends back Enc(z^2) and Enc(B^d z) for the digits d of r's base-B
expansion. The server knows r, so

    Q (z - r)^2 = Q z^2 - 2 sum_d (Q diag(r_d)) B^d z + Q r^2 = Q h^2        (mod t)

with small weights only (the digits r_d < B): a plaintext factor of the size of t would cost the
noise budget log2(t) bits more. So a round is one more linear layer on a fresh ciphertext, and the
noise never accumulates across rounds.

Everything is modulo t, so only the scores have to fit: they are computed modulo several batching
primes t_m < 2^32 (each round once per modulus, the masks independent) and the client recovers them
by the Chinese remainder theorem, exact whenever the largest score any admissible input can produce
(`score_bound`, by interval arithmetic over the declared input ranges) is below prod(t_m) / 2.
`build_network_plan` picks the ring (the first of the setting's `NETWORK_PROFILES` that holds both
layouts), then the fewest moduli, then the smallest ones, for which every round's replies decrypt
exactly (the linear plans' 8-sigma noise bound, with the digits' worst case), or refuses with the
reason. Round 0 carries only the inputs the first layer weighs (`sent_features`): a network trained on
a crop of its images pays for the pixels it reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from bfv.inputs import InputEncoding
from bfv.params import (MAX_PLAIN_BITS, MIN_PLAIN_BITS, NETWORK_PROFILES, PROFILES, RingParameters, _batching_prime,
                         ring_parameters)
from bfv.plan import (MAX_WEIGHT_BITS, PlanError, PublicPlan, _flooding_bits, describe_ring, group_noise_bound,
                      noise_bound, reply_bits, reply_groups, ring_from_description)
from bfv.ring import FLOAT_EXACT_BITS
from bfv.wire import reply_size, request_size

if TYPE_CHECKING:  # the float network, for annotations only: bfv/ does not import the model package
    from model.network import SquareNetwork

NETWORK_WEIGHT_BITS = 8
# The most samples a batch round of a network takes, whatever its ring: blocks of N samples (one
# batch request per modulus each), as many as fit (two at N = 2048, one at N = 4096 or 8192).
BATCH_SAMPLES = 4096
MAX_MODULI = 4
MAX_CHUNKS = 16  # ciphertexts one round's inputs may be split over, for each modulus
INT64_SAFE = 2**62


@dataclass(frozen=True)
class QuantizedNetwork:
    """The integer network: layer l computes Q_l v + B_l on v = x_int (l = 0) or the previous layer squared."""

    weights: tuple[np.ndarray, ...]  # int64 (outputs, inputs) per layer
    biases: tuple[np.ndarray, ...]  # object arrays of Python ints (outputs,) per layer
    input_low: np.ndarray  # int64 (features,): the lowest x_int an admissible input encodes to
    input_high: np.ndarray
    weight_bits: tuple[int, ...]
    unit_scales: tuple[np.ndarray, ...]  # alpha per layer: h_l[i] ~ alpha_l[i] * (float h_l[i])
    classes: np.ndarray | None = None

    @property
    def score_scale(self) -> float:
        """The last layer's one scale: score = h_L / score_scale."""
        return float(self.unit_scales[-1][0])

    def output_ranges(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(lowest, highest) of each layer's outputs over every admissible input, as Python ints."""
        low, high = self.input_low.astype(object), self.input_high.astype(object)
        ranges = []
        for index, (weights, bias) in enumerate(zip(self.weights, self.biases)):
            if index:  # the square of [low, high]
                crosses = (low <= 0) & (high >= 0)
                low, high = (np.where(crosses, 0, np.minimum(low * low, high * high)),
                             np.maximum(low * low, high * high))
            w = weights.astype(object)
            low, high = (np.minimum(w * low, w * high).sum(axis=1) + bias,
                         np.maximum(w * low, w * high).sum(axis=1) + bias)
            ranges.append((low, high))
        return ranges

    @property
    def score_bound(self) -> int:
        low, high = self.output_ranges()[-1]
        return int(max(max(-value for value in low), max(high)))

    def scores(self, inputs: np.ndarray) -> np.ndarray:
        """The exact integer scores (samples, outputs) of integer inputs, as the encrypted rounds give them:
        int64 while every partial sum of a layer stays below 2^62 (by the magnitudes of its terms), Python
        ints from the first layer that could pass it."""
        values = np.asarray(inputs, dtype=np.int64)
        largest = np.maximum(np.abs(self.input_low), np.abs(self.input_high)).astype(np.float64)
        for index, (weights, bias) in enumerate(zip(self.weights, self.biases)):
            if index:
                largest = largest * largest
                if values.dtype != object and float(largest.max()) >= INT64_SAFE:
                    values = values.astype(object)
                values = values * values
            largest = np.abs(weights).astype(np.float64) @ largest + np.array([abs(float(b)) for b in bias])
            if values.dtype != object and float(largest.max()) >= INT64_SAFE:
                values = values.astype(object)
            if values.dtype == object:
                values = values @ weights.T.astype(object) + bias
            else:
                values = values @ weights.T + bias.astype(np.int64)
        return values


def _integer_input_range(inputs: InputEncoding) -> tuple[np.ndarray, np.ndarray]:
    """The x_int every admissible (or clipped) value of each feature encodes to."""
    ends = [np.clip(np.rint((side - inputs.offsets) * inputs.scales), -inputs.input_max, inputs.input_max)
            for side in (inputs.low, inputs.high)]
    return np.minimum(*ends).astype(np.int64), np.maximum(*ends).astype(np.int64)


def _as_bits(weight_bits: int | tuple[int, ...], layers: int) -> tuple[int, ...]:
    bits = (weight_bits,) * layers if isinstance(weight_bits, int) else tuple(weight_bits)
    if len(bits) != layers or not all(2 <= b <= MAX_WEIGHT_BITS for b in bits):
        raise PlanError(f"weight bits {weight_bits}: one value (or one per layer, {layers}) between 2 and "
                        f"{MAX_WEIGHT_BITS}")
    return bits


def quantize_network(network: SquareNetwork, inputs: InputEncoding,
                     weight_bits: int | tuple[int, ...] = NETWORK_WEIGHT_BITS,
                     classes: np.ndarray | None = None) -> QuantizedNetwork:
    """The integer network of `network` on inputs encoded by `inputs` (the encoding folded into layer 0)."""
    if inputs.n_features != network.n_features:
        raise PlanError(f"the input encoding is declared for {inputs.n_features} features; the network takes "
                        f"{network.n_features}")
    bits = _as_bits(weight_bits, len(network.layers))
    weights, biases, scales = [], [], []
    previous = None  # the scale of each input of the current layer (squared scales of the previous outputs)
    for index, layer in enumerate(network.layers):
        if index == 0:
            folded = layer.weights / inputs.scales
            bias = layer.bias + layer.weights @ inputs.offsets
        else:
            folded = layer.weights / previous
            bias = layer.bias
        largest = np.abs(folded).max(axis=1)
        last = index == len(network.layers) - 1
        if last:  # one scale for all scores: they are compared (argmax) and exponentiated (softmax) together
            largest = np.full_like(largest, largest.max())
        if not (largest > 0).all():
            dead = int(np.flatnonzero(~(largest > 0))[0])
            raise PlanError(f"layer {index}, output {dead} has no non-zero weight: remove it from the network")
        alpha = (2 ** (bits[index] - 1) - 1) / largest
        weights.append(np.rint(folded * alpha[:, None]).astype(np.int64))
        biases.append(np.array([int(v) for v in np.rint(bias * alpha)], dtype=object))
        scales.append(alpha)
        previous = alpha ** 2
    low, high = _integer_input_range(inputs)
    return QuantizedNetwork(weights=tuple(weights), biases=tuple(biases), input_low=low, input_high=high,
                            weight_bits=bits, unit_scales=tuple(scales), classes=classes)


@dataclass(frozen=True)
class BatchLayout:
    """A network's batch rounds: digits of B = 2^digit_bits for the masks' slot polynomials, and a plan
    per round and modulus (round l >= 1 takes z^2 and the D values B^d z of each masked value)."""

    digit_bits: int
    digits: int
    rounds: tuple[tuple[PublicPlan, ...], ...]  # [round][modulus]

    def describe(self) -> dict:
        return {"digit_bits": self.digit_bits, "digits": self.digits,
                "n_features": [plans[0].n_features for plans in self.rounds],
                "reply_bits": [[plan.batch_reply_bits for plan in plans] for plans in self.rounds],
                "flooding_bits": [[plan.flooding_bits for plan in plans] for plans in self.rounds]}

    @classmethod
    def from_description(cls, body: dict, single: tuple[tuple[PublicPlan, ...], ...]) -> BatchLayout:
        """The layout `describe` gave, on the single rounds' plans (the same ring, outputs and scales)."""
        rounds = []
        for plans, features, bits, flooding in zip(single, body["n_features"], body["reply_bits"],
                                                   body["flooding_bits"], strict=True):
            widest = max(int(b) for b in bits)
            if plans[0].degree << widest > 2**FLOAT_EXACT_BITS:
                raise PlanError(f"{widest}-bit batch replies cannot be decrypted exactly by this client")
            rounds.append(tuple(batch_round_plan(plan, int(features), int(b), int(f))
                                for plan, b, f in zip(plans, bits, flooding, strict=True)))
        return cls(digit_bits=int(body["digit_bits"]), digits=int(body["digits"]), rounds=tuple(rounds))


def batch_round_plan(single: PublicPlan, features: int, bits: int, flooding: int) -> PublicPlan:
    """A batch round's plan from the same round's single plan: `features` ciphertexts per request, replies
    of `bits`. (Its single-image fields, chunks and groups, are only made consistent: they are not used.)"""
    chunks = -(-features // single.degree)
    groups = reply_groups(single.n_outputs, single.degree // -(-features // chunks))
    return replace(single, n_features=features, chunks=chunks, groups=groups, batch_reply_bits=bits,
                   flooding_bits=flooding)


@dataclass(frozen=True)
class NetworkPublicPlan:
    """What both ends know: one linear plan per round and modulus, the digits, the scales."""

    params: RingParameters  # the shared ring (its plain_modulus is the first modulus')
    moduli: tuple[int, ...]
    digit_bits: int  # B = 2^digit_bits
    digits: int  # D: r = sum_d r_d B^d, d < D
    rounds: tuple[tuple[PublicPlan, ...], ...]  # [round][modulus]
    inputs: InputEncoding
    score_scale: float
    classes: tuple | None
    # The inputs round 0 carries, ascending: those the first layer weighs (an input whose quantized
    # weights are all zero changes no score, so its ciphertext coefficients or slots are not sent).
    sent_features: tuple[int, ...]
    # The batch layout (one ciphertext per value, a sample per slot): its own digits, since a mask's
    # digit multiplies a whole slot polynomial there (`bfv.network_batch`), and its plans per round
    # and modulus; None, with the reason in `batch_refusal`, where the noise budget does not hold it.
    batch: BatchLayout | None = None
    batch_refusal: str | None = None

    @property
    def n_features(self) -> int:
        """The inputs the network takes (round 0 carries `sent_features` of them)."""
        return self.inputs.n_features

    @property
    def n_outputs(self) -> int:
        return self.rounds[-1][0].n_outputs

    def sent(self, inputs: np.ndarray) -> np.ndarray:
        """The values round 0 carries of integer inputs (..., n_features): those of `sent_features`."""
        return np.asarray(inputs)[..., list(self.sent_features)]

    @property
    def degree(self) -> int:
        return self.params.degree

    @property
    def batch_blocks(self) -> int:
        """The most blocks of N samples a batch round carries (`BATCH_SAMPLES`)."""
        return max(1, BATCH_SAMPLES // self.degree)

    @property
    def max_batch(self) -> int:
        """The most samples of one request: a batch round's blocks, or 1 where batches are refused."""
        return 1 if self.batch is None else self.batch_blocks * self.degree

    def describe(self) -> dict:
        return {
            "protocol": "ei-native-1",
            "scheme": "bfv",
            "model_kind": "square-network",
            **describe_ring(self.params, plain_moduli=list(self.moduli)),
            "n_features": self.n_features,
            "n_outputs": self.n_outputs,
            "classes": None if self.classes is None else list(self.classes),
            **self.inputs.describe(),
            "sent_features": list(self.sent_features),
            "score_scale": self.score_scale,
            "digit_bits": self.digit_bits,
            "digits": self.digits,
            "rounds": [{"n_features": plans[0].n_features, "n_outputs": plans[0].n_outputs, "chunks": plans[0].chunks,
                        "groups": [list(group) for group in plans[0].groups], "weight_bits": plans[0].weight_bits,
                        "reply_bits": [plan.single_reply_bits for plan in plans],
                        "flooding_bits": [plan.flooding_bits for plan in plans]} for plans in self.rounds],
            "batch": None if self.batch is None else self.batch.describe(),
            **({"batch_refused": self.batch_refusal} if self.batch_refusal else {}),
            "max_batch": self.max_batch,
        }

    @classmethod
    def from_description(cls, body: dict) -> NetworkPublicPlan:
        if body.get("protocol") != "ei-native-1" or body.get("model_kind") != "square-network" \
                or body.get("profile") not in PROFILES:
            raise PlanError(f"not a square network of the v1 protocol: {body.get('protocol')!r}, "
                            f"{body.get('model_kind')!r}, profile {body.get('profile')!r}")
        moduli = tuple(int(t) for t in body["plain_moduli"])
        params = [ring_from_description(body, t) for t in moduli]
        if not 1 <= len(moduli) <= MAX_MODULI or len(set(moduli)) != len(moduli) \
                or any(t >= 2**MAX_PLAIN_BITS for t in moduli):
            raise PlanError(f"plaintext moduli {moduli}: 1 to {MAX_MODULI} distinct ones below 2^{MAX_PLAIN_BITS}")
        inputs = InputEncoding.from_description(body)
        if "sent_features" not in body:
            raise PlanError("the service's description of this network names no sent_features: it is older than "
                            "this client")
        sent = tuple(int(index) for index in body["sent_features"])
        if not sent or list(sent) != sorted(set(sent)) or sent[0] < 0 or sent[-1] >= inputs.n_features \
                or len(sent) != int(body["rounds"][0]["n_features"]):
            raise PlanError(f"sent_features must be the ascending indices of round 0's "
                            f"{body['rounds'][0]['n_features']} inputs among the network's {inputs.n_features}")
        classes = body.get("classes")
        classes = None if classes is None else tuple(classes)
        rounds = []
        for index, shape in enumerate(body["rounds"]):
            last = index == len(body["rounds"]) - 1
            plans = []
            for param, bits, flooding in zip(params, shape["reply_bits"], shape["flooding_bits"], strict=True):
                if param.degree << int(bits) > 2**FLOAT_EXACT_BITS:
                    raise PlanError(f"{bits}-bit replies cannot be decrypted exactly by this client")
                plans.append(PublicPlan(
                    params=param, n_features=int(shape["n_features"]), n_outputs=int(shape["n_outputs"]),
                    groups=tuple(tuple(int(i) for i in group) for group in shape["groups"]),
                    flooding_bits=int(flooding), single_reply_bits=int(bits), batch_reply_bits=int(bits),
                    inputs=None, weight_bits=int(shape["weight_bits"]),
                    score_scale=float(body["score_scale"]) if last else 1.0, classes=classes if last else None,
                    chunks=int(shape["chunks"])))
            rounds.append(tuple(plans))
        batch = body.get("batch")
        if batch is not None and int(batch["n_features"][0]) != len(sent):
            raise PlanError(f"the batch layout's round 0 takes {batch['n_features'][0]} inputs, not the "
                            f"{len(sent)} of sent_features")
        return cls(params=params[0], moduli=moduli, digit_bits=int(body["digit_bits"]), digits=int(body["digits"]),
                   rounds=tuple(rounds), inputs=inputs, score_scale=float(body["score_scale"]), classes=classes,
                   sent_features=sent,
                   batch=None if batch is None else BatchLayout.from_description(batch, tuple(rounds)),
                   batch_refusal=body.get("batch_refused"))

    def masked_features(self, masked: np.ndarray, modulus: int, batch: bool = False) -> np.ndarray:
        """What the client sends after decrypting z = h + r (mod t) (values (..., n)): z^2, then B^d z for
        each digit d of the layout (single or batch), mod t, along the last axis (..., n * (1 + D))."""
        bits, digits = (self.batch.digit_bits, self.batch.digits) if batch else (self.digit_bits, self.digits)
        t = np.uint64(modulus)
        z = np.mod(np.asarray(masked, dtype=np.int64), modulus).astype(np.uint64)  # below t < 2^32: products fit
        parts = [z * z % t] + [z * np.uint64(pow(2, bits * digit, modulus)) % t for digit in range(digits)]
        return np.concatenate(parts, axis=-1).astype(np.int64)

    def combine(self, residues: list[np.ndarray]) -> list[int]:
        """The scores, centred, from their residues modulo each t (Chinese remainder theorem)."""
        total = math.prod(self.moduli)
        scores = []
        for values in zip(*residues):
            value = 0
            for residue, modulus in zip(values, self.moduli):
                rest = total // modulus
                value += int(residue) % modulus * rest * pow(rest, -1, modulus)
            value %= total
            scores.append(value - total if value > total // 2 else value)
        return scores


@dataclass(frozen=True)
class NetworkPlan:
    """The server's plan: the public part plus the integer network."""

    public: NetworkPublicPlan
    network: QuantizedNetwork
    score_bound: int

    def quantized_scores(self, samples: np.ndarray, clip: bool = False) -> np.ndarray:
        """The exact integer scores the rounds give for `samples` (as the float network takes them),
        encoded as the client encodes them (`InputEncoding.encode`)."""
        return self.network.scores(self.public.inputs.encode(samples, clip))


def sent_features(quantized: QuantizedNetwork) -> tuple[int, ...]:
    """The inputs the first layer weighs: those with a non-zero quantized weight (at least one, since
    `quantize_network` refuses a unit without any)."""
    return tuple(int(index) for index in np.flatnonzero(np.abs(quantized.weights[0]).sum(axis=0)))


def base_digits(values: np.ndarray, digit_bits: int, digits: int) -> np.ndarray:
    """The base-2^digit_bits digits (digits, ...) of values below 2^(digit_bits * digits), lowest first."""
    values = np.asarray(values, dtype=np.uint64)
    mask = np.uint64((1 << digit_bits) - 1)
    return np.stack([(values >> np.uint64(digit_bits * d)) & mask for d in range(digits)]).astype(np.int64)


def _round_plan(params: RingParameters, features: int, outputs: int, row_norms: np.ndarray, largest: int,
                score_scale: float, classes: tuple | None) -> PublicPlan:
    """A linear plan of one round for one modulus, for weights of at most these norms per row: its
    inputs split over the number of ciphertexts that makes a round's request and reply smallest."""
    degree = params.degree
    best: PublicPlan | None = None
    for chunks in range(1, MAX_CHUNKS + 1):
        width = -(-features // chunks)
        if width > degree:
            continue
        groups = reply_groups(outputs, degree // width)
        single = group_noise_bound(degree, groups, row_norms)
        flooding = _flooding_bits(params, single) if PROFILES[params.profile].flooding else 0
        bits = reply_bits(params, single + (2.0 ** flooding if flooding else 0.0))
        plan = PublicPlan(params=params, n_features=features, n_outputs=outputs, groups=groups,
                          flooding_bits=flooding, single_reply_bits=bits, batch_reply_bits=bits, inputs=None,
                          weight_bits=int(largest).bit_length() + 1, score_scale=score_scale, classes=classes,
                          chunks=chunks)
        if best is None or _round_bytes(plan) < _round_bytes(best):
            best = plan
    if best is None:
        raise PlanError(f"a round of {features} inputs does not fit {MAX_CHUNKS} ciphertexts of {degree} "
                        f"coefficients (profile {params.profile})")
    return best


def _round_bytes(plan: PublicPlan) -> int:
    """Bytes of one round for one modulus: its request and its reply."""
    return request_size(plan.chunks, plan.params) + reply_size(plan.single_reply_values, plan.single_reply_bits)


def _moduli_candidates(bound: int, degree: int):
    """(moduli) to try: the fewest, then the smallest batching primes whose product exceeds 2 * bound."""
    needed = 2 * bound + 1
    for count in range(1, MAX_MODULI + 1):
        for first in range(MIN_PLAIN_BITS, MAX_PLAIN_BITS - count + 2):
            try:
                moduli = tuple(_batching_prime(degree, first + index) for index in range(count))
            except ValueError:
                continue
            if len(set(moduli)) == count and math.prod(moduli) >= needed:
                yield moduli
                break


def _plans_for(quantized: QuantizedNetwork, inputs: InputEncoding, profile: str, moduli: tuple[int, ...]
               ) -> NetworkPublicPlan:
    shared = ring_parameters(profile, MIN_PLAIN_BITS)
    params = [replace(shared, plain_modulus=t) for t in moduli]
    classes = None if quantized.classes is None else tuple(c.item() if isinstance(c, np.generic) else c
                                                             for c in quantized.classes)
    widest = max(moduli).bit_length()
    sent = sent_features(quantized)
    problem = None
    for digits in range(1, widest + 1):  # the fewest digits (inputs per round) whose weights the noise allows
        digit_bits = -(-widest // digits)
        try:
            rounds = []
            for index, weights in enumerate(quantized.weights):
                w = weights.astype(np.float64)
                last = index == len(quantized.weights) - 1
                scale, names = (quantized.score_scale, classes) if last else (1.0, None)
                if index == 0:
                    norms, largest, features = np.sqrt((w * w).sum(axis=1)), int(np.abs(weights).max()), len(sent)
                else:  # Q for z^2, then -2 Q r_d for each digit, r_d < B
                    spread = 1 + 4 * digits * ((1 << digit_bits) - 1) ** 2
                    norms = np.sqrt((w * w).sum(axis=1) * spread)
                    largest = int(np.abs(weights).max()) * 2 * ((1 << digit_bits) - 1)
                    features = w.shape[1] * (1 + digits)
                rounds.append(tuple(_round_plan(param, features, w.shape[0], norms, largest, scale, names)
                                    for param in params))
            try:
                batch, refusal = _batch_layout(quantized, tuple(rounds), widest, len(sent)), None
            except PlanError as exc:
                batch, refusal = None, f"batches of this network are not served: {exc}"
            return NetworkPublicPlan(params=params[0], moduli=moduli, digit_bits=digit_bits, digits=digits,
                                     rounds=tuple(rounds), inputs=inputs, score_scale=quantized.score_scale,
                                     classes=classes, sent_features=sent, batch=batch, batch_refusal=refusal)
        except PlanError as exc:
            problem = exc
    raise PlanError(f"with plaintext moduli {moduli}: {problem}")


def _batch_layout(quantized: QuantizedNetwork, single: tuple[tuple[PublicPlan, ...], ...], widest: int,
                  sent: int) -> BatchLayout:
    """The batch rounds with the fewest digits whose replies decrypt exactly, or PlanError with the reason.

    Round 0 is the linear batch: output j's noise is the error times W_j. Round l >= 1 adds, for every
    masked value, -2 Q_kj times the product of Enc(B^d z_j) with the digit polynomial R_jd of the masks'
    slot encoding: N coefficients below B, so each term's error is spread over N (B - 1)^2."""
    degree = single[0][0].degree
    problem: PlanError | None = None
    for digits in range(1, widest + 1):
        digit_bits = -(-widest // digits)
        spread = 1 + 4 * digits * degree * ((1 << digit_bits) - 1) ** 2
        try:
            rounds = []
            for index, (weights, plans) in enumerate(zip(quantized.weights, single)):
                w = weights.astype(np.float64)
                norm = float(np.sqrt((w * w).sum(axis=1)).max()) * (math.sqrt(spread) if index else 1.0)
                features = w.shape[1] * (1 + digits) if index else sent
                honest = noise_bound(degree, norm)
                plan_round = []
                for plan in plans:
                    flooding = _flooding_bits(plan.params, honest) if plan.flooding_bits else 0
                    bits = reply_bits(plan.params, honest + (2.0 ** flooding if flooding else 0.0))
                    plan_round.append(batch_round_plan(plan, features, bits, flooding))
                rounds.append(tuple(plan_round))
            return BatchLayout(digit_bits=digit_bits, digits=digits, rounds=tuple(rounds))
        except PlanError as exc:
            problem = exc
    raise PlanError(str(problem))


def build_network_plan(network: SquareNetwork, inputs: InputEncoding, profile: str = "compact",
                       weight_bits: int | tuple[int, ...] = NETWORK_WEIGHT_BITS,
                       classes: np.ndarray | None = None) -> NetworkPlan:
    """Quantize `network`, pick the ring, moduli and digits, check that every round decrypts exactly;
    raises PlanError with the reason otherwise (the largest ring's, where none holds the network).

    The ring is the first of the setting's profiles (`NETWORK_PROFILES`) that holds both layouts, or
    else the first that holds one image per request: for the bundled network N = 2048 has 217 KB of
    single-image rounds where N = 4096 has 308 KB, for the same server time."""
    quantized = quantize_network(network, inputs, weight_bits, classes)
    first: NetworkPlan | None = None
    problem: PlanError | None = None
    for ring in NETWORK_PROFILES[profile]:
        try:
            plan = _plan_on(quantized, inputs, ring)
        except PlanError as exc:
            problem = exc
            continue
        if plan.public.batch is not None:
            return plan
        first = first or plan
    if first is not None:
        return first
    raise problem


def _plan_on(quantized: QuantizedNetwork, inputs: InputEncoding, profile: str) -> NetworkPlan:
    """The plan of `quantized` on one profile's ring: the fewest, then the smallest moduli that hold it."""
    bound = quantized.score_bound
    problem: PlanError | None = None
    for moduli in _moduli_candidates(bound, PROFILES[profile].degree):
        try:
            return NetworkPlan(public=_plans_for(quantized, inputs, profile, moduli), network=quantized,
                               score_bound=bound)
        except PlanError as exc:
            problem = exc
    limit = MAX_MODULI * (MAX_PLAIN_BITS - 1)
    raise PlanError(f"scores of up to {bound:.3g} ({bound.bit_length()} bits) quantized units"
                    + (f": {problem}" if problem else f" need more than {MAX_MODULI} plaintext moduli (~{limit} bits)")
                    + "; use fewer weight bits, fewer input levels or fewer square layers")
