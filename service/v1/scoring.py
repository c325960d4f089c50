"""The v1 protocol in a worker process: plan, evaluator and public-key store.

Built once per worker from the loaded model. A request arrives as its header (checked by the web
process, `service.v1.protocol`) and its raw bytes, read here in numpy before any coefficient
reaches SEAL. Public keys are fetched from Blob Storage by their owner and SHA-256
(`service.v1.keys`), so an identity can only ever use its own keys; they are checked and prepared
once, and cached like the Azure ML contract's keys (revalidated every NATIVE_KEY_REVALIDATE_S,
refused after KEY_TTL_DAYS).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bfv import kernels
from bfv.evaluation import Evaluator
from bfv.plan import PlanError, build_plan
from bfv.wire import Kind, RequestHeader, WireError, request_from_header
from model.loading import LinearModel
from service.errors import ModelUnavailable, Unprocessable
from service.settings import Settings
from service.storage.keystore import KeyCache, KeyStore, PreparedKeys
from service.v1.keys import key_name
from service.workers.outcome import ScoringOutcome, evaluate_timed

log = logging.getLogger(__name__)


@dataclass
class _Scorer:
    evaluator: Evaluator
    keys: KeyStore


_scorer: _Scorer | None = None
_unavailable: str | None = None


def init(settings: Settings, model: LinearModel, key_cache: KeyCache) -> dict | None:
    """Plan the model for the v1 protocol; returns the public description, or None if it cannot be served."""
    global _scorer, _unavailable
    try:
        plan = build_plan(model, settings.native_profile, settings.native_input_scale, settings.native_input_max)
    except PlanError as exc:
        _unavailable = f"the v1 protocol cannot serve this model: {exc}"
        log.warning("%s", _unavailable)
        return None
    evaluator = Evaluator(plan)

    def prepare(blob: bytes) -> PreparedKeys:
        try:
            key = evaluator.prepare_key(blob)
        except WireError as exc:
            raise Unprocessable(f"stored public key is malformed: {exc}") from None
        return PreparedKeys(value=key, nbytes=key.nbytes)

    # Key ids are content hashes (never a new version under the same name), so revalidation only has to
    # notice deletions, and may be spaced out.
    keys = KeyStore(settings, prepare, key_cache, "native", revalidate_after_s=settings.native_key_revalidate_s,
                    ttl_s=settings.key_ttl_s)
    _scorer = _Scorer(evaluator=evaluator, keys=keys)
    log.info("v1 protocol ready: profile %s, t = %d, replies at %d/%d bits, loops: %s", plan.public.params.profile,
             plan.public.params.plain_modulus, plan.public.single_reply_bits, plan.public.batch_reply_bits,
             kernels.STATUS)
    if plan.public.flooding_bits:  # what the flooded profile buys, for the operator who chose it
        log.info("flooded replies: statistical distance from score-only replies <= 2^%.0f per image, "
                 "2^%.0f per batch", plan.flooding_distance_log2(batch=False), plan.flooding_distance_log2(batch=True))
    return plan.public.describe()


def prepare_ahead() -> bool:
    """One step of preparing the last scored key's encryptions of zero; whether more steps remain."""
    return _scorer is not None and _scorer.evaluator.zeros.make_ahead()


def score(header: RequestHeader, body: bytes | memoryview, namespace: str) -> ScoringOutcome:
    """Score a request whose header the web process checked: read its ciphertexts, fetch its public
    key among `namespace`'s, evaluate."""
    if _scorer is None:
        raise ModelUnavailable(_unavailable or "the v1 protocol is not initialised in this worker")
    scorer = _scorer
    public = scorer.evaluator.plan.public
    ciphertexts, _ = public.request_shape(header.kind)
    try:
        request = request_from_header(header, body, ciphertexts, public.params)
    except WireError as exc:
        raise Unprocessable(f"malformed request: {exc}") from None
    lookup = scorer.keys.get(key_name(namespace, request.key_id))
    single = header.kind is Kind.SINGLE
    evaluate = scorer.evaluator.score_single if single else scorer.evaluator.score_batch

    def evaluated() -> bytes:
        try:
            return evaluate(request, lookup.keys.value)
        except WireError as exc:
            raise Unprocessable(str(exc)) from None

    return evaluate_timed(evaluated, keys_cached=lookup.cached, key_cache_bytes=lambda: scorer.keys.cached_bytes)
