"""Square networks in rounds: exact or refused, masks uniform, tokens bound to their key, model and round.

Every round is run in-process here (the server's `NetworkEvaluator`, the client's `NetworkKeys`,
real encryption), one sample per request and in the batch layout; tests/v1/test_square_network.py
runs them over HTTP.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bfv.inputs import InputEncoding
from bfv.network_plan import MAX_CHUNKS, NetworkPublicPlan, build_network_plan
from bfv.network_rounds import (MASK_SEED_BYTES, TOKEN_BYTES, NetworkEvaluator, NetworkKeys, RoundTokens, TokenError,
                                masks, round_reply_size, round_request_size)
from bfv.params import MAX_PLAIN_BITS
from bfv.plan import PlanError
from bfv.network_rounds import batch_reply_size
from bfv.wire import WireError, request_size
from model.network import Dense, SquareNetwork

CONTEXT = bytes(32) + b"test/1"
IMAGES_AT = 8  # the image count's offset in bfv.wire's request and reply headers (after magic, kind, profile, 0)


def _network(seed: int, sizes: tuple[int, ...], spread: float) -> SquareNetwork:
    rng = np.random.default_rng(seed)
    return SquareNetwork(tuple(Dense(rng.normal(0, spread, (after, before)), rng.normal(0, spread, after))
                               for before, after in zip(sizes, sizes[1:])))


def _scored(plan, inputs: np.ndarray, tokens: RoundTokens | None = None) -> list[list[int]]:
    """Every sample through every round: the client's side from the public description only."""
    evaluator = NetworkEvaluator(plan, tokens or RoundTokens(os.urandom(32), 60))
    keys = NetworkKeys(NetworkPublicPlan.from_description(plan.public.describe()))
    key = evaluator.prepare_key(keys.public_key)
    results = []
    for sample in inputs:
        body = keys.first_request(sample)
        for index in range(len(plan.public.rounds)):
            assert len(body) == round_request_size(plan.public, index)
            reply = evaluator.score_round(index, body, key, CONTEXT)
            assert len(reply) == round_reply_size(plan.public, index)
            if index < len(plan.public.rounds) - 1:
                body = keys.next_request(index, reply)
        results.append(keys.scores(reply))
    return results


def _scored_batch(plan, inputs: np.ndarray, tokens: RoundTokens | None = None, declared: int | None = None,
                  every_slot: bool = False) -> list[list[int]]:
    """All samples in one batch through every round (`declared` of them in the headers, all by default);
    `every_slot`: the last reply read as if it declared every slot."""
    evaluator = NetworkEvaluator(plan, tokens or RoundTokens(os.urandom(32), 60))
    keys = NetworkKeys(NetworkPublicPlan.from_description(plan.public.describe()))
    key = evaluator.prepare_key(keys.public_key)
    body = keys.first_batch_request(inputs)
    blocks = -(-len(inputs) // plan.public.degree)
    if declared is not None:
        body = _declare(body, plan.public, 0, declared)
    for index in range(len(plan.public.rounds)):
        assert len(body) == round_request_size(plan.public, index, batch=True, blocks=blocks)
        reply = evaluator.score_round(index, body, key, CONTEXT, batch=True)
        assert len(reply) == round_reply_size(plan.public, index, batch=True, blocks=blocks)
        if index < len(plan.public.rounds) - 1:
            body = keys.next_request(index, reply, batch=True)
            if declared is not None:
                body = _declare(body, plan.public, index + 1, declared)
    if every_slot:
        reply, offset = bytearray(reply), 0
        for round_plan in plan.public.batch.rounds[-1]:
            reply[offset + IMAGES_AT : offset + IMAGES_AT + 4] = plan.public.degree.to_bytes(4, "little")
            offset += batch_reply_size(round_plan)
    return keys.batch_scores(bytes(reply))


def _declare(body: bytes, public, round_index: int, images: int) -> bytes:
    """The round's batch requests with `images` declared in each header (a client paying for fewer)."""
    out, offset = bytearray(body), 0
    for plan in public.batch.rounds[round_index]:
        out[offset + IMAGES_AT : offset + IMAGES_AT + 4] = images.to_bytes(4, "little")
        offset += request_size(plan.n_features, plan.params)
    return bytes(out)


def _extremes(plan, rng: np.random.Generator, count: int) -> np.ndarray:
    """Admissible integer inputs: each feature at its lowest, its highest, or anywhere between."""
    low, high = plan.network.input_low, plan.network.input_high
    rows = [low, high, np.where(rng.integers(0, 2, low.size) == 1, high, low)]
    rows += [rng.integers(low, high + 1) for _ in range(count)]
    return np.stack(rows)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), features=st.integers(2, 60), hidden=st.lists(st.integers(1, 24), min_size=1,
       max_size=2), outputs=st.integers(1, 6), input_max=st.sampled_from([1, 15, 255, 4095]),
       bits=st.integers(3, 10), spread=st.sampled_from([0.01, 1.0, 50.0]), ignored=st.floats(0, 0.9))
def test_every_accepted_network_decrypts_exactly_and_every_other_is_refused_with_the_reason(
        seed: int, features: int, hidden: list[int], outputs: int, input_max: int, bits: int, spread: float,
        ignored: float) -> None:
    network = _network(seed, (features, *hidden, outputs), spread)
    rng = np.random.default_rng(seed)
    # A share of the inputs the first layer does not weigh (its receptive field): round 0 leaves them out.
    first = network.layers[0]
    weighed = rng.random(features) >= ignored
    weighed[rng.integers(features)] = True
    network = SquareNetwork((Dense(first.weights * weighed, first.bias),) + network.layers[1:])
    low = rng.uniform(-2, 0, features)
    inputs = InputEncoding.from_ranges(low, low + rng.uniform(0.1, 3, features), input_max)
    try:
        plan = build_network_plan(network, inputs, "compact", bits)
    except PlanError as exc:
        event("refused")
        assert any(word in str(exc) for word in ("moduli", "noise", "fit", "weight")), str(exc)
        return
    event(f"accepted: {len(plan.public.rounds)} rounds, {len(plan.public.moduli)} moduli, "
          f"profile {plan.public.params.profile}")
    assert set(plan.public.sent_features) <= set(np.flatnonzero(weighed))
    assert plan.public.params.meets_128_bit_security()
    assert all(t < 2**MAX_PLAIN_BITS for t in plan.public.moduli)
    assert np.prod([float(t) for t in plan.public.moduli]) > 2 * plan.score_bound
    samples = _extremes(plan, rng, 2)
    expected = [[int(v) for v in row] for row in plan.network.scores(samples)]
    assert _scored(plan, samples) == expected
    if plan.public.batch is None:
        event("batch refused")
        assert "noise" in plan.public.batch_refusal or "bits" in plan.public.batch_refusal, plan.public.batch_refusal
        return
    assert _scored_batch(plan, samples) == expected


def test_the_flooded_profile_decrypts_a_network_exactly_too() -> None:
    network = _network(5, (30, 12, 4), 1.0)
    plan = build_network_plan(network, InputEncoding.from_ranges(np.zeros(30), np.ones(30), 255), "flooded", 8)
    assert plan.public.params.profile == "flooded" and all(p.flooding_bits for r in plan.public.rounds for p in r)
    samples = _extremes(plan, np.random.default_rng(0), 2)
    expected = [[int(v) for v in row] for row in plan.network.scores(samples)]
    assert _scored(plan, samples) == expected
    assert all(p.flooding_bits for r in plan.public.batch.rounds for p in r)
    assert _scored_batch(plan, samples) == expected


def test_the_compact_setting_plans_a_network_on_n_2048_and_one_too_wide_for_it_on_n_4096() -> None:
    """`NETWORK_PROFILES`: N = 2048 first; a first layer of more inputs than 16 chunks of 2048 hold goes
    to N = 4096, exact there too, and leaves out the inputs it does not weigh."""
    small = build_network_plan(_network(3, (30, 6, 3), 1.0), InputEncoding.from_ranges(np.zeros(30), np.ones(30), 15),
                               "compact", 6)
    assert small.public.params.profile == "compact-2048" and small.public.params.degree == 2048
    features = MAX_CHUNKS * 2048 + 100
    rng = np.random.default_rng(4)
    weights = rng.choice([-1.0, 1.0], (2, features)) * rng.uniform(0.5, 1.0, (2, features))  # none rounds to 0
    weights[:, :50] = 0.0  # inputs the first layer does not weigh
    wide = SquareNetwork((Dense(weights, rng.normal(0, 1, 2)), Dense(rng.normal(0, 1, (2, 2)), rng.normal(0, 1, 2))))
    plan = build_network_plan(wide, InputEncoding.from_ranges(np.zeros(features), np.ones(features), 1), "compact", 4)
    assert plan.public.params.profile == "compact" and plan.public.params.degree == 4096
    assert plan.public.sent_features == tuple(range(50, features))
    samples = _extremes(plan, np.random.default_rng(1), 1)
    assert _scored(plan, samples) == [[int(v) for v in row] for row in plan.network.scores(samples)]


def test_a_batch_of_more_than_n_samples_goes_in_blocks_of_n_each_with_its_own_masks() -> None:
    """At N = 2048 a batch round carries up to two blocks (`BATCH_SAMPLES`): the scores of all samples
    exact, a block short of N before the last refused, and more samples than the blocks hold refused."""
    network = _network(6, (12, 5, 3), 1.0)
    plan = build_network_plan(network, InputEncoding.from_ranges(np.zeros(12), np.ones(12), 15), "compact", 6)
    public = plan.public
    assert public.degree == 2048 and public.batch_blocks == 2 and public.max_batch == 4096
    rng = np.random.default_rng(6)
    samples = rng.integers(plan.network.input_low, plan.network.input_high + 1, (public.degree, 12))
    samples = np.concatenate([samples, samples[:5]])  # the second block repeats the first block's first samples
    assert _scored_batch(plan, samples) == [[int(v) for v in row] for row in plan.network.scores(samples)]
    evaluator = NetworkEvaluator(plan, RoundTokens(os.urandom(32), 60))
    keys = NetworkKeys(public)
    key = evaluator.prepare_key(keys.public_key)
    body = bytearray(keys.first_batch_request(samples))
    assert len(body) == round_request_size(public, 0, batch=True, blocks=2)
    reply = evaluator.score_round(0, bytes(body), key, CONTEXT, batch=True)
    masked = keys._residues(0, reply, batch=True)[1][0]
    first, second = masked[: public.degree], masked[public.degree :]
    assert (first[:5] != second).all()  # the same hidden values, under masks of their own block
    body[IMAGES_AT : IMAGES_AT + 4] = (public.degree - 1).to_bytes(4, "little")
    with pytest.raises(WireError, match="every block"):
        evaluator.score_round(0, bytes(body), key, CONTEXT, batch=True)
    with pytest.raises(WireError, match="holds 1 to 4096 samples"):
        keys.first_batch_request(np.zeros((4097, 12), dtype=np.int64))


def test_an_output_whose_weights_all_round_to_zero_is_exact_in_both_layouts() -> None:
    """The last layer shares one scale, so a row far smaller than the others quantizes to zeros: its
    batch ciphertext sums nothing (a zero polynomial, which SEAL's transforms refuse) and is still exact."""
    network = _network(8, (12, 5, 3), 1.0)
    last = network.layers[-1]
    weights = last.weights.copy()
    weights[1] *= 1e-9
    network = SquareNetwork(network.layers[:-1] + (Dense(weights, last.bias),))
    plan = build_network_plan(network, InputEncoding.from_ranges(np.zeros(12), np.ones(12), 15), "compact", 6)
    assert not plan.network.weights[-1][1].any()
    samples = _extremes(plan, np.random.default_rng(3), 2)
    expected = [[int(v) for v in row] for row in plan.network.scores(samples)]
    assert _scored(plan, samples) == expected
    assert _scored_batch(plan, samples) == expected


def test_a_batch_fills_every_slot_exactly_and_pads_the_slots_its_headers_do_not_declare() -> None:
    """A full batch (N samples) is exact in every slot; declared as fewer, the others decrypt to a pad."""
    network = _network(7, (16, 6, 3), 1.0)
    plan = build_network_plan(network, InputEncoding.from_ranges(np.zeros(16), np.ones(16), 255), "compact", 7)
    samples = np.random.default_rng(2).integers(0, 256, (plan.public.degree, 16))
    expected = [[int(v) for v in row] for row in plan.network.scores(samples)]
    assert _scored_batch(plan, samples) == expected
    declared = 100
    assert _scored_batch(plan, samples, declared=declared) == expected[:declared]
    padded = _scored_batch(plan, samples, declared=declared, every_slot=True)
    assert padded[:declared] == expected[:declared]
    undeclared_equal = sum(row == want for row, want in zip(padded[declared:], expected[declared:]))
    assert undeclared_equal == 0  # each a uniform pad: one chance in t^3 per slot of matching


def test_a_network_whose_scores_no_moduli_hold_is_refused_with_the_reason() -> None:
    network = _network(1, (40, 30, 20, 10, 3), 30.0)  # three squares of 24-bit weights: far beyond 4 moduli
    with pytest.raises(PlanError, match="quantized units"):
        build_network_plan(network, InputEncoding.from_ranges(np.zeros(40), np.ones(40), 2**20 - 1), "compact", 24)


def test_the_clients_view_of_a_hidden_value_is_a_uniform_mask_independent_of_it() -> None:
    """z = h + r (mod t) for the same input over many round 0s: the client sees exactly h plus the
    keystream's masks, and those are uniform (a chi-square test on a small modulus, 10^5 draws)."""
    network = _network(2, (10, 3, 2), 1.0)
    plan = build_network_plan(network, InputEncoding.from_ranges(np.zeros(10), np.ones(10), 15), "compact", 6)
    public = plan.public
    keys = NetworkKeys(NetworkPublicPlan.from_description(public.describe()))
    tokens = RoundTokens(os.urandom(32), 60)
    evaluator = NetworkEvaluator(plan, tokens)
    key = evaluator.prepare_key(keys.public_key)
    sample = np.full(10, 7)
    hidden = np.asarray(plan.network.weights[0]) @ sample + np.array([int(b) for b in plan.network.biases[0]])
    seen = []
    for _ in range(3):
        reply = evaluator.score_round(0, keys.first_request(sample), key, CONTEXT)
        _, masked = keys._residues(0, reply)
        seed = tokens.open(reply[:TOKEN_BYTES], 1, CONTEXT)
        for index, t in enumerate(public.moduli):
            r = masks(seed, 0, index, t, len(hidden)).astype(object)
            assert [int(z) for z in masked[index]] == [int(v) % t for v in (hidden.astype(object) + r)]
        seen.append(tuple(int(z) for z in masked[0]))
    assert len(set(seen)) == 3  # fresh masks for every round 0
    # The batch layout: every slot, declared or not, is h + the keystream's mask of that slot.
    samples = np.tile(sample, (5, 1))
    reply = evaluator.score_round(0, keys.first_batch_request(samples), key, CONTEXT, batch=True)
    _, masked = keys._residues(0, reply, batch=True)
    seed = tokens.open(reply[:TOKEN_BYTES], 1, CONTEXT)
    for index, t in enumerate(public.moduli):
        r = masks(seed, 0, index, t, len(hidden) * public.degree).reshape(len(hidden), public.degree)
        assert (masked[index] == (hidden[None, :] + r[:, :5].T.astype(np.int64)) % t).all()
        assert len({tuple(row) for row in masked[index].tolist()}) == 5  # same sample, a fresh mask per slot
    draws = masks(os.urandom(MASK_SEED_BYTES), 0, 0, 97, 100_000)
    counts = np.bincount(draws.astype(np.int64), minlength=97)
    chi_square = float(((counts - len(draws) / 97) ** 2 / (len(draws) / 97)).sum())
    assert chi_square < 160  # 96 degrees of freedom: above 160 has probability below 1e-4


def test_replies_are_rerandomized_so_the_same_request_never_gets_the_same_bytes() -> None:
    network = _network(3, (12, 4, 2), 1.0)
    plan = build_network_plan(network, InputEncoding.from_ranges(np.zeros(12), np.ones(12), 15), "compact", 6)
    keys = NetworkKeys(NetworkPublicPlan.from_description(plan.public.describe()))
    tokens = RoundTokens(os.urandom(32), 60)
    evaluator = NetworkEvaluator(plan, tokens)
    key = evaluator.prepare_key(keys.public_key)
    body = keys.first_request(np.arange(12) % 16)
    first, second = (evaluator.score_round(0, body, key, CONTEXT) for _ in range(2))
    assert first[TOKEN_BYTES:] != second[TOKEN_BYTES:]
    last = keys.next_request(0, first)
    assert evaluator.score_round(1, last, key, CONTEXT) != evaluator.score_round(1, last, key, CONTEXT)


def test_a_token_opens_only_for_its_service_key_model_and_round_and_not_after_it_expires() -> None:
    now = [1000.0]
    tokens = RoundTokens(os.urandom(32), 60, clock=lambda: now[0])
    seed = os.urandom(MASK_SEED_BYTES)
    token = tokens.seal(1, seed, CONTEXT)
    assert len(token) == TOKEN_BYTES and tokens.open(token, 1, CONTEXT) == seed
    with pytest.raises(TokenError, match="round 1, not round 2"):
        tokens.open(token, 2, CONTEXT)
    with pytest.raises(TokenError, match="not issued"):
        tokens.open(token, 1, bytes(31) + b"\x01" + b"test/1")  # another key
    with pytest.raises(TokenError, match="not issued"):
        RoundTokens(os.urandom(32), 60).open(token, 1, CONTEXT)  # another service
    with pytest.raises(TokenError, match="not issued"):
        tokens.open(token[:-1] + bytes([token[-1] ^ 1]), 1, CONTEXT)
    now[0] += 61
    with pytest.raises(TokenError, match="expired"):
        tokens.open(token, 1, CONTEXT)


def test_a_round_of_the_wrong_size_or_for_another_key_is_refused() -> None:
    network = _network(4, (12, 4, 2), 1.0)
    plan = build_network_plan(network, InputEncoding.from_ranges(np.zeros(12), np.ones(12), 15), "compact", 6)
    public = NetworkPublicPlan.from_description(plan.public.describe())
    evaluator = NetworkEvaluator(plan, RoundTokens(os.urandom(32), 60))
    mine, other = NetworkKeys(public), NetworkKeys(public)
    body = mine.first_request(np.zeros(12, dtype=np.int64))
    with pytest.raises(WireError, match="takes"):
        evaluator.score_round(0, body[:-1], evaluator.prepare_key(mine.public_key), CONTEXT)
    with pytest.raises(WireError, match="another public key"):
        evaluator.score_round(0, body, evaluator.prepare_key(other.public_key), CONTEXT)


def test_rounds_are_exact_with_the_numpy_loops_too(monkeypatch) -> None:
    """Where no C compiler built the compiled loops, the numpy products give the same exact scores."""
    from bfv import kernels

    monkeypatch.setattr(kernels, "AVAILABLE", False)
    network = _network(6, (20, 9, 3), 1.0)
    plan = build_network_plan(network, InputEncoding.from_ranges(np.zeros(20), np.ones(20), 63), "compact", 7)
    samples = _extremes(plan, np.random.default_rng(1), 2)
    expected = [[int(v) for v in row] for row in plan.network.scores(samples)]
    assert _scored(plan, samples) == expected
    assert _scored_batch(plan, samples) == expected


def test_single_round_requests_carry_c0_in_the_ntt_domain(monkeypatch) -> None:
    """A round's c0 is, bit for bit, SEAL's transform of the coefficient c0 the same randomness gives."""
    from bfv import ring
    from bfv.encryption import ClientKeys
    from bfv.seal_ring import SealRing
    from bfv.wire import Kind, read_request

    network = _network(8, (700, 20, 3), 1.0)  # round 0 split over two ciphertexts, round 1 in one
    plan = build_network_plan(network, InputEncoding.from_ranges(np.zeros(700), np.ones(700), 63), "compact", 6)
    for round_plan in (plan.public.rounds[0][0], plan.public.rounds[1][0]):
        keys = ClientKeys(round_plan)
        inputs = np.random.default_rng(3).integers(0, 63, round_plan.n_features)
        seed, requests = keys._seed, []
        for ntt_c0 in (False, True):
            stream = np.random.default_rng(11)
            monkeypatch.setattr(ring, "random_bytes", lambda count, stream=stream: stream.bytes(count))
            keys._seed, keys._seed_negated = seed, None
            requests.append(read_request(keys.encrypt_single(inputs, ntt_c0=ntt_c0), Kind.SINGLE, round_plan.chunks,
                                         1, round_plan.params))
        coefficients, transformed = requests
        assert coefficients.seed == transformed.seed == seed
        seal_ring = SealRing(round_plan.params)  # SEAL's own transform, a polynomial at a time
        expected = np.stack([seal_ring.polys(seal_ring.to_ntt(np.stack([row, row])))[0] for row in coefficients.c0])
        assert (transformed.c0 == expected).all()


def test_each_reply_group_takes_fresh_randomness_from_the_pool_once() -> None:
    """`make_ahead` fills the pool between requests; a round takes one u and one set of errors per
    group and modulus, each once, the pooled ones first."""
    network = _network(9, (40, 8, 3), 1.0)
    plan = build_network_plan(network, InputEncoding.from_ranges(np.zeros(40), np.ones(40), 63), "compact", 6)
    evaluator = NetworkEvaluator(plan, RoundTokens(os.urandom(32), 60), noise_pool=2)
    while evaluator.make_ahead():
        pass
    pooled = list(evaluator._ready)
    assert len(pooled) == 2 and not evaluator.make_ahead()
    taken = []
    drawn = evaluator._noise
    evaluator._noise = lambda: taken.append(drawn()) or taken[-1]
    keys = NetworkKeys(plan.public)
    key = evaluator.prepare_key(keys.public_key)
    body = keys.first_request(np.zeros(40, dtype=np.int64))
    for index in range(len(plan.public.rounds)):
        reply = evaluator.score_round(index, body, key, CONTEXT)
        if index < len(plan.public.rounds) - 1:
            body = keys.next_request(index, reply)
    groups = sum(len(round_plan.groups) for plans in plan.public.rounds for round_plan in plans)
    assert len(taken) == groups > len(pooled)
    assert taken[: len(pooled)] == pooled and len({id(noise) for noise in taken}) == groups
    assert len({noise.errors.tobytes() for noise in taken}) == groups  # no two groups share their errors
    assert keys.scores(reply) == [int(v) for v in plan.network.scores(np.zeros((1, 40), dtype=np.int64))[0]]


def test_a_description_whose_sent_features_are_not_round_0s_inputs_in_order_is_refused() -> None:
    network = _network(11, (12, 4, 2), 1.0)
    first = network.layers[0]
    network = SquareNetwork((Dense(first.weights * (np.arange(12) % 3 != 0), first.bias),) + network.layers[1:])
    plan = build_network_plan(network, InputEncoding.from_ranges(np.zeros(12), np.ones(12), 15), "compact", 6)
    body = plan.public.describe()
    assert body["sent_features"] == [i for i in range(12) if i % 3] and body["n_features"] == 12
    assert NetworkPublicPlan.from_description(body).sent_features == tuple(body["sent_features"])
    sent = body["sent_features"]
    for wrong in ([], sent[:-1], sent[::-1], [sent[0]] * len(sent), sent[:-1] + [12], [-1] + sent[1:]):
        with pytest.raises(PlanError, match="sent_features"):
            NetworkPublicPlan.from_description({**body, "sent_features": wrong})
    with pytest.raises(PlanError, match="older than this client"):
        NetworkPublicPlan.from_description({key: value for key, value in body.items() if key != "sent_features"})
