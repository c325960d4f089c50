"""Property-based fuzzing of the HTTP API: schemathesis generates requests from the service's own
OpenAPI spec, hypothesis generates request bodies for the parser.

Requests generated from the schema alone stop at the first check (a random string is no SEAL
ciphertext, random bytes are no v1 request), so the run is seeded with real parts: the tutorial
client's ciphertext (`seed_ciphertext`) under keys uploaded for it (`seed_client`), a v1 public key
and request bodies made with `ClientKeys` from the plan the service describes at GET /v1/model, and
variants of them that differ in one place (a field, a flipped byte, a cut). Those reach the workers,
storage and the engines: each operation's count of answers 200 shows they did. No input may produce
a 5xx or an error without a JSON `{"message"}`, the unchanged seeds must decrypt to the same scores
every time, and the service still scores correctly afterwards.

The run has a service of its own, with its own key container, so what it stores (keys, under the
test identity's MAX_KEYS_PER_IDENTITY) and counts touches no other test.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
import requests
import schemathesis
from azure.storage.blob import BlobServiceClient
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from bench.processes import GENEROUS_SCORING_TIMEOUT_MS, TEST_HEADERS, ServiceProcess, running_service
from bfv.encryption import ClientKeys
from bfv.plan import PublicPlan, build_plan
from bfv.wire import REQUEST_HEADER_SIZE
from model import BUNDLED_MODEL_DIR, DEFAULT_MODEL_FILE
from model.loading import load_linear_model
from service.azureml.contract import parse_request
from service.errors import ScoringError
from tests.expectations import encoded

FUZZ_KEY_CONTAINER = "fuzz-keys"
REQUEST_TIMEOUT_S = 120  # bound on one answer on a loaded machine; never a measure of speed
BINARY = {**TEST_HEADERS, "content-type": "application/octet-stream"}
# CKKS error of the seal engine against scikit-learn's decision_function, measured on the seed input
# and 20 MNIST test images: at most 1.1e-6 (scores up to ~6.4). 1e-4 leaves a margin of ~100x.
CKKS_ATOL = 1e-4

SCORING = ("POST /score", "POST /v1/score", "POST /v1/score/batch")
# Generated requests per operation. A batch body is 24 MB, so batches get fewer. Operations without
# input have one possible request: hypothesis sends it once, and once is all they can be exercised.
EXAMPLES = {"POST /v1/score/batch": 20}
DEFAULT_EXAMPLES = 50
NO_INPUT = ("GET /", "GET /ready", "GET /metrics", "GET /v1/model", "GET /v1/models", "GET /v1/keys")
# The least each operation must have been sent, whatever hypothesis chose (it stops early only when
# it has tried every input, which these operations do not have).
MIN_CASES = {"POST /v1/score/batch": 15}
DEFAULT_MIN_CASES = 30
# Keys are stored first, deleted last: DELETE removes the key the scoring operations use.
ORDER = [*NO_INPUT, "POST /v1/keys", "POST /v1/score", "POST /v1/score/batch", "POST /score",
         "DELETE /v1/keys/{key_id}"]


@pytest.fixture(scope="module")
def fuzz_service(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "WORKER_COUNT": "1", "KEY_CONTAINER": FUZZ_KEY_CONTAINER,
           "SCORING_TIMEOUT_MS": str(GENEROUS_SCORING_TIMEOUT_MS)}
    with running_service(env, tmp_path_factory.mktemp("fuzz") / "service.log") as service:
        yield service


class Opaque:
    """A seed handed to a strategy: hypothesis shows strategies' arguments, and a seed is megabytes."""

    def __init__(self, name: str, value: object) -> None:
        self.name, self.value = name, value

    def __repr__(self) -> str:
        return f"<{self.name}>"


@dataclass
class Seeds:
    """Valid requests for each input-taking operation, and what their replies decrypt to."""

    key_id: str  # of the seed client's keys, uploaded to FUZZ_KEY_CONTAINER
    ciphertexts: list[str]  # Azure ML: `seed_ciphertext`, then MNIST images, each one request's data
    azureml_scores: list[np.ndarray]  # the bundled model's decision_function of each
    decrypt_azureml: Callable[[list[str]], np.ndarray]
    keys: ClientKeys  # v1 keys, public key stored
    singles: list[bytes]  # v1 single-image requests
    single_scores: list[np.ndarray]  # their exact integer scores (the quantized model's)
    batch: bytes
    batch_scores: np.ndarray
    stored_key_ids: set[str] = field(default_factory=set)  # every v1 key id a POST /v1/keys answered

    def azureml(self, index: int = 0) -> dict:
        return {"data": [self.ciphertexts[index]], "key_id": self.key_id}


@pytest.fixture(scope="module")
def seeds(fuzz_service, azurite, seed_client, seed_ciphertext, bundled_estimator, mnist_test_images) -> Seeds:
    client, key_id, public_keys = seed_client
    container = BlobServiceClient.from_connection_string(azurite).get_container_client(FUZZ_KEY_CONTAINER)
    if not container.exists():
        container.create_container()
    container.upload_blob(key_id, public_keys, overwrite=True)
    images = mnist_test_images[0][:3].reshape(3, -1)
    inputs = [np.linspace(0, 1, 784), *(images / 255.0)]  # the first is what `seed_ciphertext` encrypts
    ciphertexts = [seed_ciphertext, *(client.encrypt(features)[0] for features in inputs[1:])]

    http = fuzz_service.http
    plan = PublicPlan.from_description(http.get("/v1/model", timeout=REQUEST_TIMEOUT_S).json())
    keys = ClientKeys(plan)
    assert http.post("/v1/keys", content=keys.public_key, headers=BINARY).status_code == 201
    integers = encoded(plan, images)
    singles, batch = [keys.encrypt_single(row) for row in integers], keys.encrypt_batch(integers)
    # The quantized model's exact integer scores, from the plan the service describes.
    private = build_plan(load_linear_model(BUNDLED_MODEL_DIR / DEFAULT_MODEL_FILE), plan.inputs,
                         plan.params.profile, plan.weight_bits)
    assert private.public.describe() == plan.describe()
    exact = private.model.scores(integers)
    answers = [http.post(path, content=body, headers=BINARY, timeout=REQUEST_TIMEOUT_S)
               for path, body in [*(("/v1/score", single) for single in singles), ("/v1/score/batch", batch)]]
    assert [answer.status_code for answer in answers] == [200] * 4, [answer.text[:200] for answer in answers]
    single_scores = [keys.decrypt_single(answer.content) for answer in answers[:-1]]
    batch_scores = keys.decrypt_batch(answers[-1].content)
    assert np.array_equal(np.array(single_scores), exact) and np.array_equal(batch_scores[: len(singles)], exact)
    return Seeds(key_id=key_id, ciphertexts=ciphertexts, decrypt_azureml=client.decrypt,
                 azureml_scores=list(bundled_estimator.decision_function(np.array(inputs))),
                 keys=keys, singles=singles, single_scores=single_scores, batch=batch, batch_scores=batch_scores,
                 stored_key_ids={keys.key_id})


@dataclass
class OperationCounts:
    cases: int = 0
    seeded: int = 0  # cases with a seed in them (unchanged or a variant)
    statuses: Counter = field(default_factory=Counter)
    generated_200: int = 0  # answers 200 to cases hypothesis drew (the explicit example excluded)


def _flip(body: bytes, position: int, mask: int) -> bytes:
    changed = bytearray(body)
    changed[position % len(changed)] ^= mask
    return bytes(changed)


@st.composite
def _binary_variant(draw, seeds: Opaque) -> tuple[str, bytes]:
    """(variant name, body): a seed itself, or a seed with a byte flipped (in its header, so a
    field is wrong, or in its ciphertexts, so the engine gets it), cut, or lengthened."""
    valid = draw(st.sampled_from(seeds.value))
    variant = draw(st.sampled_from(["seed", "seed", "flip header", "flip ciphertext", "flip ciphertext", "cut",
                                    "longer"]))
    mask = draw(st.integers(1, 255))
    if variant == "flip header":
        return variant, _flip(valid, draw(st.integers(0, REQUEST_HEADER_SIZE - 1)), mask)
    if variant == "flip ciphertext":
        return variant, _flip(valid, draw(st.integers(REQUEST_HEADER_SIZE, len(valid) - 1)), mask)
    if variant == "cut":
        return variant, valid[: draw(st.integers(0, min(len(valid) - 1, 64 * 1024)))]  # small: cut early
    if variant == "longer":
        return variant, valid + draw(st.binary(min_size=1, max_size=16))
    return variant, valid


@st.composite
def _key_variant(draw, seed: Opaque) -> tuple[str, bytes]:
    valid = seed.value
    variant = draw(st.sampled_from(["seed", "seed", "flip", "cut", "longer"]))
    if variant == "flip":
        return variant, _flip(valid, draw(st.integers(0, len(valid) - 1)), draw(st.integers(1, 255)))
    if variant == "cut":
        return variant, valid[: draw(st.integers(0, len(valid) - 1))]
    if variant == "longer":
        return variant, valid + draw(st.binary(min_size=1, max_size=16))
    return variant, valid


@st.composite
def _azureml_variant(draw, seeds: Opaque, generated_bodies: st.SearchStrategy, conn_str: str) -> tuple[str, object]:
    """A seed body (with or without the optional fields), or one with a field taken from a body
    schemathesis generates, a ciphertext changed, or an unknown field."""
    valid = seeds.value.azureml(draw(st.integers(0, len(seeds.value.ciphertexts) - 1)))
    body = dict(valid)
    body.update(draw(st.sampled_from([{}, {"container": FUZZ_KEY_CONTAINER}, {"conn_str": conn_str},
                                      {"container": FUZZ_KEY_CONTAINER, "conn_str": conn_str}])))
    variant = draw(st.sampled_from(["seed", "seed", "seed", "generated field", "ciphertext", "two ciphertexts",
                                    "extra field"]))
    ciphertext = valid["data"][0]
    if variant == "generated field":
        generated = draw(generated_bodies)
        generated = generated if isinstance(generated, dict) else {}
        name = draw(st.sampled_from(["data", "key_id", "container", "conn_str"]))
        if name in generated:
            body[name] = generated[name]
        else:
            body.pop(name, None)
    elif variant == "ciphertext":
        raw = base64.b64decode(ciphertext)
        cut = draw(st.booleans())
        raw = raw[: draw(st.integers(0, len(raw) - 1))] if cut else _flip(raw, draw(st.integers(0, len(raw) - 1)),
                                                                           draw(st.integers(1, 255)))
        body["data"] = [base64.b64encode(raw).decode()]
    elif variant == "two ciphertexts":
        body["data"] = [ciphertext, ciphertext]
    elif variant == "extra field":
        body[draw(st.text(min_size=1, max_size=10))] = draw(st.text(max_size=10) | st.integers())
    return variant, body


class FuzzRun:
    """Sends every operation's cases through one HTTP session and keeps the counts and the failures."""

    def __init__(self, service: ServiceProcess, seeds: Seeds, conn_str: str) -> None:
        self.service, self.seeds, self.conn_str = service, seeds, conn_str
        self.http = requests.Session()
        self.counts: dict[str, OperationCounts] = {}
        self.failures: list[str] = []
        self.seeded: dict[str, str] = {}  # case id -> variant name
        self.explicit: set[str] = set()

    def strategy(self, label: str, operation) -> st.SearchStrategy:
        """Cases from the schema alone (positive, and negative where there is an input to break) and
        seeded ones: half each, or a third and two thirds for binary bodies (random bytes are all
        refused at their first bytes, so more of them would find nothing new)."""
        generated = operation.as_strategy(GenerationMode.POSITIVE)
        takes_json = any("json" in body.media_type for body in operation.body)
        if takes_json or operation.path_parameters:  # negative cases need an input to break
            generated = st.one_of(generated, operation.as_strategy(GenerationMode.NEGATIVE))
        seeded = self._seeded(label, operation)
        if seeded is None:
            return generated
        takes_binary = any("octet-stream" in body.media_type for body in operation.body)
        mix = [seeded, seeded, generated] if takes_binary else [seeded, generated]
        return st.sampled_from(mix).flatmap(lambda chosen: chosen)

    def _tag(self, case, variant: str):
        self.seeded[case.id] = variant
        return case

    def _with_body(self, operation, media_type: str, variants: st.SearchStrategy) -> st.SearchStrategy:
        return variants.map(lambda drawn: self._tag(operation.Case(body=drawn[1], media_type=media_type), drawn[0]))

    def _seeded(self, label: str, operation) -> st.SearchStrategy | None:
        seeds = self.seeds
        binary = "application/octet-stream"
        if label == "POST /v1/keys":
            return self._with_body(operation, binary, _key_variant(Opaque("public key", seeds.keys.public_key)))
        if label == "POST /v1/score":
            return self._with_body(operation, binary, _binary_variant(Opaque("single requests", seeds.singles)))
        if label == "POST /v1/score/batch":
            return self._with_body(operation, binary, _binary_variant(Opaque("batch request", [seeds.batch])))
        if label == "POST /score":
            generated_bodies = operation.as_strategy(GenerationMode.POSITIVE).map(lambda case: case.body)
            return self._with_body(operation, "application/json",
                                   _azureml_variant(Opaque("seeds", seeds), generated_bodies, self.conn_str))
        if label == "DELETE /v1/keys/{key_id}":  # the ids stored so far, each answered 204 once, then 404
            return st.sampled_from(sorted(seeds.stored_key_ids)).map(
                lambda key_id: self._tag(operation.Case(path_parameters={"key_id": key_id}), "stored key id"))
        return None

    def explicit_case(self, label: str, operation):
        """The unchanged seed, sent whatever hypothesis draws: each scoring operation reaches its engine."""
        seeds = self.seeds
        if label == "POST /v1/keys":
            case = operation.Case(body=seeds.keys.public_key, media_type="application/octet-stream")
        elif label == "POST /v1/score":
            case = operation.Case(body=seeds.singles[0], media_type="application/octet-stream")
        elif label == "POST /v1/score/batch":
            case = operation.Case(body=seeds.batch, media_type="application/octet-stream")
        elif label == "POST /score":
            case = operation.Case(body=seeds.azureml(), media_type="application/json")
        elif label == "DELETE /v1/keys/{key_id}":
            case = operation.Case(path_parameters={"key_id": seeds.keys.key_id})
        else:
            return None
        self.explicit.add(case.id)
        return self._tag(case, "seed")

    def send(self, label: str, case) -> None:
        counts = self.counts.setdefault(label, OperationCounts())
        variant = self.seeded.get(case.id)
        counts.cases += 1
        counts.seeded += variant is not None
        described = f"{label} ({variant or 'generated'}) {_describe(case)}"
        try:
            response = case.call(session=self.http, headers=TEST_HEADERS, timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException as exc:
            counts.statuses["no answer"] += 1
            self._fail(f"no answer: {described}: {type(exc).__name__}: {exc}")
            return
        status = response.status_code
        counts.statuses[status] += 1
        if status == 200 and case.id not in self.explicit:
            counts.generated_200 += 1
        if status >= 500:
            self._fail(f"server error {status}: {described}: {response.text[:300]}")
        elif status >= 400:
            try:
                message = response.json().get("message")
            except (ValueError, AttributeError):
                message = None
            if not isinstance(message, str) or not message:
                self._fail(f"error {status} without a JSON message: {described}: {response.text[:300]}")
        elif label == "POST /v1/keys" and status == 201:
            self.seeds.stored_key_ids.add(response.json()["key_id"])
        if status == 200 and variant == "seed":
            self._check_scores(label, case, response)

    def _check_scores(self, label: str, case, response) -> None:
        """The unchanged seeds decrypt to the same scores every time (v1: exact; Azure ML: the model's
        scores within the CKKS error)."""
        seeds = self.seeds
        if label == "POST /v1/score":
            expected = seeds.single_scores[seeds.singles.index(case.body)]
            same = np.array_equal(seeds.keys.decrypt_single(response.content), expected)
        elif label == "POST /v1/score/batch":
            same = np.array_equal(seeds.keys.decrypt_batch(response.content), seeds.batch_scores)
        elif label == "POST /score" and case.body.get("data", [None])[0] in seeds.ciphertexts:
            expected = seeds.azureml_scores[seeds.ciphertexts.index(case.body["data"][0])]
            same = np.allclose(seeds.decrypt_azureml(response.json()), expected, atol=CKKS_ATOL, rtol=0)
        else:
            return
        if not same:
            self._fail(f"the seed's reply decrypts to other scores: {label} {_describe(case)}")

    def _fail(self, failure: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(failure)

    def run(self, label: str, operation) -> None:
        explicit = self.explicit_case(label, operation)

        @settings(max_examples=EXAMPLES.get(label, DEFAULT_EXAMPLES), deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=self.strategy(label, operation))
        def send(case) -> None:
            self.send(label, case)

        if explicit is not None:
            send = example(case=explicit)(send)
        send()


def _describe(case) -> str:
    body = case.body
    if isinstance(body, (bytes, bytearray)):
        shown = f"<{len(body)} bytes>"
    else:
        shown = json.dumps(body, default=str)
        shown = shown if len(shown) <= 200 else f"{shown[:200]}... ({len(shown)} characters)"
    return f"{case.method} {case.formatted_path} query={case.query} body={shown}"


def test_generated_requests_reach_the_engines_and_never_get_a_server_error(fuzz_service, seeds, azurite) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_service.url}/swagger.json", headers=TEST_HEADERS)
    operations = {f"{operation.method.upper()} {operation.path}": operation
                  for operation in (result.ok() for result in schema.get_all_operations())}
    assert set(ORDER) <= set(operations), f"operations not in the spec: {set(ORDER) - set(operations)}"
    run = FuzzRun(fuzz_service, seeds, azurite)
    unknown = [label for label in operations if label not in ORDER]  # new operations are fuzzed too
    for label in [*ORDER[:-1], *unknown, ORDER[-1]]:
        run.run(label, operations[label])

    print("\noperation: cases (seeded), answered 200 [generated ones], statuses")
    for label, counts in run.counts.items():
        statuses = ", ".join(f"{status}: {count}" for status, count in sorted(counts.statuses.items(), key=str))
        print(f"  {label}: {counts.cases} ({counts.seeded}), {counts.statuses[200]} [{counts.generated_200}], "
              f"{statuses}")
    assert run.failures == []
    for label in operations:
        least = 1 if label in NO_INPUT else MIN_CASES.get(label, DEFAULT_MIN_CASES)
        assert run.counts[label].cases >= least, f"{label} was sent {run.counts[label].cases} times, not {least}"
    for label in SCORING:  # drawn cases reached the engine, not only the explicit seed
        assert run.counts[label].generated_200 > 0, f"no generated request to {label} was scored"
    assert run.counts["POST /v1/keys"].statuses[201] > 0
    assert run.counts["DELETE /v1/keys/{key_id}"].statuses[204] > 0

    # The service is alive and scores correctly afterwards (on both protocols).
    assert fuzz_service.process.poll() is None
    for key_id in sorted(seeds.stored_key_ids):  # what the run stored, so the seed key fits under the quota
        assert fuzz_service.http.delete(f"/v1/keys/{key_id}").status_code in (204, 404)
    assert fuzz_service.http.post("/v1/keys", content=seeds.keys.public_key, headers=BINARY).status_code == 201
    for body, expected in zip(seeds.singles, seeds.single_scores):
        single = fuzz_service.http.post("/v1/score", content=body, headers=BINARY, timeout=REQUEST_TIMEOUT_S)
        assert single.status_code == 200, single.text
        assert np.array_equal(seeds.keys.decrypt_single(single.content), expected)
    for index, expected in enumerate(seeds.azureml_scores):
        scored = fuzz_service.http.post("/score", json=seeds.azureml(index), timeout=REQUEST_TIMEOUT_S)
        assert scored.status_code == 200, scored.text
        np.testing.assert_allclose(seeds.decrypt_azureml(scored.json()), expected, atol=CKKS_ATOL, rtol=0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"data": st.lists(st.text(max_size=60) | st.binary(max_size=60).map(bytes.hex),
                                            max_size=3),
                           "key_id": st.text(max_size=20)},
                          optional={"conn_str": st.text(max_size=60), "container": st.text(max_size=20)}
                          ).map(json.dumps),
)


@settings(max_examples=300, deadline=None)
@given(bodies)
def test_the_request_parser_only_ever_raises_client_errors(body) -> None:
    try:
        parse_request(body)
    except ScoringError as error:
        assert 400 <= error.status_code < 500 and error.message
