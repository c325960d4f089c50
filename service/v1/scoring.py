"""The v1 protocol in a worker process: a plan, an evaluator and a public-key store per model.

Built once per worker from the loaded models. A request arrives as its model, its header (checked
by the web process, `service.v1.protocol`) and its raw bytes, read here in numpy before any
coefficient reaches SEAL. Public keys are fetched from Blob Storage by their owner, model and
SHA-256 (`service.v1.keys`), so an identity can only ever use its own keys, made for that model;
they are checked and prepared once, and cached like the Azure ML contract's keys (revalidated every
NATIVE_KEY_REVALIDATE_S, refused after KEY_TTL_DAYS).
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from bfv import kernels
from bfv.evaluation import Evaluator
from bfv.inputs import InputEncoding
from bfv.network_plan import NETWORK_WEIGHT_BITS, NetworkPlan, build_network_plan
from bfv.network_rounds import NetworkEvaluator, RoundTokens, TokenError
from bfv.plan import Plan, PlanError, build_plan
from bfv.wire import Kind, RequestHeader, WireError, request_from_header
from model.catalog import ModelEntry
from model.description import declared_inputs
from model.loading import LinearModel
from model.network import NetworkModel
from service.errors import ModelUnavailable, NotFound, Unprocessable
from service.settings import Settings
from service.storage.keystore import KeyCache, KeyStore, PreparedKeys
from service.v1.keys import key_name
from service.v1.protocol import RoundRoute
from service.workers.outcome import ScoringOutcome, evaluate_timed

log = logging.getLogger(__name__)


@dataclass
class _Scorer:
    evaluator: Evaluator | NetworkEvaluator
    keys: KeyStore

    def make_ahead(self) -> bool:
        """One step of what the evaluator prepares between requests (a linear model's encryptions of
        zero for its last key, a network's u and errors); whether more steps remain."""
        if isinstance(self.evaluator, NetworkEvaluator):
            return self.evaluator.make_ahead()
        return self.evaluator.zeros.make_ahead()


_scorers: dict[str, _Scorer] = {}  # by model key, `name/version`
_last_scored: _Scorer | None = None  # whose encryptions of zero the idle steps prepare


class InputsNotDeclared(Exception):
    """The v1 protocol needs the range of every input, and nothing declares them for this model."""


def plan_model(settings: Settings, model: LinearModel | NetworkModel, entry: ModelEntry) -> Plan | NetworkPlan:
    """The model's v1 plan, its inputs declared by model-settings.json, else by NATIVE_INPUT_SCALE and
    NATIVE_INPUT_MAX, else by its being the tutorial's MNIST model; raises `InputsNotDeclared` (saying
    how to declare them) or `PlanError`."""
    description = entry.description
    inputs: InputEncoding | None = description.inputs if description is not None else None
    if inputs is None and settings.native_input_scale is not None and settings.native_input_max is not None:
        inputs = InputEncoding.uniform(model.n_features, settings.native_input_scale, settings.native_input_max)
    if inputs is None:
        inputs = declared_inputs(entry.path.name, model.n_features)
    if inputs is None:
        raise InputsNotDeclared(
            f"the v1 protocol needs the range of each of this model's {model.n_features} inputs, and nothing declares "
            f"them: prepare the model with `python -m model.prepare {entry.path.name} --calibration DATA --out DIR` "
            "(DATA: .npy or .csv of its input features) and serve DIR, or set NATIVE_INPUT_SCALE and "
            "NATIVE_INPUT_MAX")
    prepared = description is not None and description.inputs is not None  # its weight bits chosen too
    if isinstance(model, NetworkModel):
        bits = description.weight_bits if prepared else NETWORK_WEIGHT_BITS
        return build_network_plan(model.network, inputs, settings.native_profile, bits, classes=model.classes)
    if prepared:
        return build_plan(model, inputs, settings.native_profile, description.weight_bits)
    return build_plan(model, inputs, settings.native_profile)


def init(settings: Settings, entry: ModelEntry, model: LinearModel | NetworkModel, key_cache: KeyCache) -> dict:
    """Plan one model for the v1 protocol: what `/v1/models` says of it, with its `/v1/model` body
    ("v1"), or why the v1 protocol cannot serve it ("v1_unavailable")."""
    network = isinstance(model, NetworkModel)
    listing = {"name": entry.name, "version": entry.version, "features": model.n_features,
               "outputs": model.n_outputs, **({"kind": model.outputs.kind} if model.outputs else {}),
               **({"model_kind": "square-network"} if network else {})}
    try:
        plan = plan_model(settings, model, entry)
    except (InputsNotDeclared, PlanError) as exc:
        reason = f"the v1 protocol cannot serve model {entry.key}: {exc}"
        log.warning("%s", reason)
        return {**listing, "v1": None, "v1_unavailable": reason}
    if isinstance(plan, NetworkPlan):
        tokens = RoundTokens(bytes.fromhex(settings.native_round_key.get_secret_value()), settings.native_round_ttl_s)
        evaluator: Evaluator | NetworkEvaluator = NetworkEvaluator(plan, tokens)
    else:
        evaluator = Evaluator(plan)

    def prepare(blob: bytes) -> PreparedKeys:
        try:
            key = evaluator.prepare_key(blob)
        except WireError as exc:
            raise Unprocessable(f"stored public key is malformed: {exc}") from None
        return PreparedKeys(value=key, nbytes=key.nbytes)

    # Key ids are content hashes (never a new version under the same name), so revalidation only has to
    # notice deletions, and may be spaced out. One store per model: its cache entries are its own.
    keys = KeyStore(settings, prepare, key_cache, f"v1:{entry.key}",
                    revalidate_after_s=settings.native_key_revalidate_s, ttl_s=settings.key_ttl_s)
    _scorers[entry.key] = _Scorer(evaluator=evaluator, keys=keys)
    if isinstance(plan, NetworkPlan):
        public = plan.public
        log.info("v1 protocol ready for %s: a square network of %d rounds, profile %s, t = %s, %d digits of %d bits; "
                 "%s; loops: %s, transforms: %s", entry.key, len(public.rounds), public.params.profile,
                 " x ".join(map(str, public.moduli)), public.digits, public.digit_bits,
                 public.batch_refusal if public.batch is None else
                 f"batches of up to {public.degree}, {public.batch.digits} digits of {public.batch.digit_bits} bits",
                 kernels.STATUS, "compiled" if evaluator.compiled_transforms else "SEAL")
        return {**listing, "v1": {**public.describe(), "name": entry.name, "version": entry.version,
                                  "outputs": model.outputs.describe()}}
    log.info("v1 protocol ready for %s: profile %s, t = %d, replies at %d/%d bits, loops: %s", entry.key,
             plan.public.params.profile, plan.public.params.plain_modulus, plan.public.single_reply_bits,
             plan.public.batch_reply_bits, kernels.STATUS)
    if plan.public.flooding_bits:  # what the flooded profile buys, for the operator who chose it
        log.info("flooded replies: statistical distance from score-only replies <= 2^%.0f per image, "
                 "2^%.0f per batch", plan.flooding_distance_log2(batch=False), plan.flooding_distance_log2(batch=True))
    body = {**plan.public.describe(), "name": entry.name, "version": entry.version}
    if model.outputs is not None:
        body["outputs"] = model.outputs.describe()
    return {**listing, "v1": body}


def _scorer(model: str, kind: type) -> _Scorer:
    scorer = _scorers.get(model)
    if scorer is None or not isinstance(scorer.evaluator, kind):
        raise ModelUnavailable(f"the v1 protocol does not serve model {model} this way in this worker")
    return scorer


def _key(scorer: _Scorer, namespace: str, model: str, key: str):
    try:
        return scorer.keys.get(key_name(namespace, model, key))
    except NotFound:
        raise NotFound(f"no public keys with id {key} for this identity and model {model}: keys are "
                       "made and stored per model (POST it to this model's keys route)") from None


def prepare_ahead() -> bool:
    """One step of what the last scored model's evaluator prepares between requests; whether more steps remain."""
    return _last_scored is not None and _last_scored.make_ahead()


def score(model: str, header: RequestHeader, body: bytes | memoryview, namespace: str) -> ScoringOutcome:
    """Score a request for `model` (`name/version`) whose header the web process checked: read its
    ciphertexts, fetch its public key among `namespace`'s keys for that model, evaluate."""
    global _last_scored
    scorer = _scorer(model, Evaluator)
    public = scorer.evaluator.plan.public
    ciphertexts, _ = public.request_shape(header.kind)
    try:
        request = request_from_header(header, body, ciphertexts, public.params)
    except WireError as exc:
        raise Unprocessable(f"malformed request: {exc}") from None
    lookup = _key(scorer, namespace, model, request.key_id)
    _last_scored = scorer
    single = header.kind is Kind.SINGLE
    evaluate = scorer.evaluator.score_single if single else scorer.evaluator.score_batch

    def evaluated() -> bytes:
        try:
            return evaluate(request, lookup.keys.value)
        except WireError as exc:
            raise Unprocessable(str(exc)) from None

    return evaluate_timed(evaluated, keys_cached=lookup.cached, key_cache_bytes=lambda: scorer.keys.cached_bytes)


def score_round(model: str, round_route: RoundRoute, header: RequestHeader, body: bytes | memoryview,
                namespace: str) -> ScoringOutcome:
    """One round of a square network for `model`, whose first request header the web process checked:
    fetch the key it names among `namespace`'s keys for that model, evaluate the round. The round's
    token is bound to the key, the model, the layout and the number of samples."""
    global _last_scored
    scorer = _scorer(model, NetworkEvaluator)
    lookup = _key(scorer, namespace, model, header.key_id)
    _last_scored = scorer
    context = bytes.fromhex(header.key_id) + model.encode() + struct.pack("<BH", round_route.kind, header.images)
    batch = round_route.kind is Kind.BATCH

    def evaluated() -> bytes:
        try:
            return scorer.evaluator.score_round(round_route.index, body, lookup.keys.value, context, batch)
        except (WireError, TokenError) as exc:
            raise Unprocessable(str(exc)) from None

    return evaluate_timed(evaluated, keys_cached=lookup.cached, key_cache_bytes=lambda: scorer.keys.cached_bytes)
