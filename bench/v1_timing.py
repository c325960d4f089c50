"""In-process timings of the v1 protocol and the floor its goals are expressed against.

Machines (and one machine from day to day) differ by up to 2x, so the v1 protocol's speed
goals are ratios to a floor measured in the same run: one SEAL `multiply_plain` plus one inverse
NTT of an N = 4096 ciphertext with one 60-bit prime, the least any single-image reply needs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from model.loading import LinearModel
from bfv.encryption import ClientKeys
from bfv.evaluation import Evaluator
from bfv.inputs import InputEncoding
from bfv.plan import build_plan
from bfv.ring import random_ternary
from bfv.seal_ring import SealRing
from bfv.network_plan import NetworkPlan, build_network_plan
from bfv.network_rounds import NetworkEvaluator, NetworkKeys, RoundTokens
from bfv.wire import Kind, read_request
from model import BUNDLED_NETWORK_DIR, BUNDLED_NETWORK_FILE
from model.description import ModelDescription
from model.onnx_graphs import read_network

# Goals as multiples of the floor: server time of one image, its end-to-end time over HTTP, and the
# server time per image of a full batch; for the bundled square network, one image over all its rounds.
GOALS = {"single_server": 3.5, "single_end_to_end": 14.0, "batch_server": 0.35,
         "network_server": 35.0, "network_end_to_end": 80.0, "network_batch_server": 1.4}


def _median_seconds(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def seal_floor_seconds(model: LinearModel, repeats: int = 400) -> float:
    """Median time of one multiply_plain and one inverse NTT of a one-prime N = 4096 ciphertext."""
    ring = SealRing(build_plan(model, InputEncoding.pixels(model.n_features), "compact").public.params)
    primes = ring.params.data_primes
    polys = np.stack([np.mod(random_ternary(ring.params.degree), primes[0]).astype(np.uint64)[None]] * 2)
    ciphertext = ring.to_ntt(polys)
    factor = ring.ntt_plaintext(polys[0])
    evaluator = ring.evaluator

    def floor() -> None:
        product = evaluator.multiply_plain(ciphertext, factor)
        evaluator.transform_from_ntt_inplace(product)

    _median_seconds(floor, 50)  # warm caches and SEAL's memory pool
    return _median_seconds(floor, repeats)


def in_process_seconds(model: LinearModel, single_inputs: np.ndarray, batch_inputs: np.ndarray,
                       profile: str = "compact") -> dict[str, dict[str, float]]:
    """Server time (parse + score, as a worker does) per image, mean and median over one-image
    requests, per image of one batch request, and the time spent between requests making encryptions of zero (what
    a worker does in its idle steps while it waits for the next request)."""
    plan = build_plan(model, InputEncoding.pixels(model.n_features), profile)
    public = plan.public
    evaluator = Evaluator(plan)
    keys = ClientKeys(public)
    key = evaluator.prepare_key(keys.public_key)
    single, between = [], []
    for row in single_inputs:
        body = keys.encrypt_single(row)
        started = time.perf_counter()
        evaluator.zeros.fill(key)
        between.append(time.perf_counter() - started)
        started = time.perf_counter()
        reply = evaluator.score_single(read_request(body, Kind.SINGLE, 1, 1, public.params), key)
        single.append(time.perf_counter() - started)
        keys.decrypt_single(reply)
    body = keys.encrypt_batch(batch_inputs)
    started = time.perf_counter()
    evaluator.score_batch(read_request(body, Kind.BATCH, public.n_features, public.degree, public.params), key)
    batch = time.perf_counter() - started
    per_image = batch / len(batch_inputs)
    return {"single_server": {"mean": float(np.mean(single)), "median": float(np.median(single))},
            "single_between": {"mean": float(np.mean(between)), "median": float(np.median(between))},
            "batch_server": {"mean": per_image, "median": per_image}}


def bundled_network_plan() -> NetworkPlan:
    """The plan the service makes of the bundled square network (model/mnist-square/1/)."""
    description = ModelDescription.load(BUNDLED_NETWORK_DIR)
    network = read_network(BUNDLED_NETWORK_DIR / BUNDLED_NETWORK_FILE)
    return build_network_plan(network, description.inputs, "compact", description.weight_bits)


def network_in_process_seconds(inputs: np.ndarray) -> dict[str, dict[str, float]]:
    """The bundled network, one image of `inputs` (integers on its input levels) at a time in-process: the
    server's time over all rounds (parse + score, as a worker does), the client's (encrypt, decrypt, square
    and encrypt again, decrypt), and the server's between requests (its pool of u and errors), mean and
    median; `exact` is the share of images whose scores equal the quantized network's."""
    plan = bundled_network_plan()
    evaluator = NetworkEvaluator(plan, RoundTokens(os.urandom(32), 60))
    keys = NetworkKeys(plan.public)
    key = evaluator.prepare_key(keys.public_key)
    context = bytes.fromhex(keys.key_id) + b"mnist-square/1"
    server, client, between, exact = [], [], [], 0
    rounds = len(plan.public.rounds)
    for row in inputs:
        started = time.perf_counter()
        while evaluator.make_ahead():  # what an idle worker does between requests: u and errors
            pass
        between.append(time.perf_counter() - started)
        server_time = 0.0
        started = time.perf_counter()
        body = keys.first_request(row)
        for index in range(rounds):
            before = time.perf_counter()
            reply = evaluator.score_round(index, body, key, context)
            server_time += time.perf_counter() - before
            body = keys.next_request(index, reply) if index < rounds - 1 else b""
        scores = keys.scores(reply)
        client.append(time.perf_counter() - started - server_time)
        server.append(server_time)
        exact += scores == [int(v) for v in plan.network.scores(row[None])[0]]
    return {"network_server": {"mean": float(np.mean(server)), "median": float(np.median(server))},
            "network_client": {"mean": float(np.mean(client)), "median": float(np.median(client))},
            "network_between": {"mean": float(np.mean(between)), "median": float(np.median(between))},
            "network_exact": {"mean": exact / len(inputs), "median": exact / len(inputs)}}


def network_batch_in_process_seconds(inputs: np.ndarray, repeats: int = 3) -> dict[str, dict[str, float]]:
    """The bundled network, `inputs` (up to N images, integers on its input levels) as one batch in-process,
    `repeats` times: the server's and the client's time per image over both rounds, mean and median over
    the repeats; `exact` is the share of images whose scores equal the quantized network's (over all repeats)."""
    plan = bundled_network_plan()
    evaluator = NetworkEvaluator(plan, RoundTokens(os.urandom(32), 60))
    keys = NetworkKeys(plan.public)
    key = evaluator.prepare_key(keys.public_key)
    context = bytes.fromhex(keys.key_id) + b"mnist-square/1"
    expected = [[int(v) for v in row] for row in plan.network.scores(inputs)]
    rounds, count = len(plan.public.rounds), len(inputs)
    server, client, exact = [], [], 0
    for _ in range(repeats):
        server_time = 0.0
        started = time.perf_counter()
        body = keys.first_batch_request(inputs)
        for index in range(rounds):
            before = time.perf_counter()
            reply = evaluator.score_round(index, body, key, context, batch=True)
            server_time += time.perf_counter() - before
            body = keys.next_request(index, reply, batch=True) if index < rounds - 1 else b""
        scores = keys.batch_scores(reply)
        client.append((time.perf_counter() - started - server_time) / count)
        server.append(server_time / count)
        exact += sum(mine == want for mine, want in zip(scores, expected))
    return {"network_batch_server": {"mean": float(np.mean(server)), "median": float(np.median(server))},
            "network_batch_client": {"mean": float(np.mean(client)), "median": float(np.median(client))},
            "network_batch_exact": {"mean": exact / (repeats * count), "median": exact / (repeats * count)}}
