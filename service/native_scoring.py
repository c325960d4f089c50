"""The native protocol (v1) in a worker process: plan, evaluator and public-key store.

Built once per worker from the loaded model. Requests arrive as raw bytes and are parsed here,
in numpy, before any coefficient reaches SEAL; public keys are fetched from Blob Storage by their
owner and SHA-256 (`native-v1/<identity namespace>/<key id>` in KEY_CONTAINER of the service's own
account), so an identity can only ever use its own keys; they are checked and prepared once, and
cached like the seed protocol's keys (revalidated every NATIVE_KEY_REVALIDATE_S, refused after
KEY_TTL_DAYS).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from model.loading import LinearModel
from native import kernels
from native.evaluation import NativeEvaluator
from native.plan import PlanError, PublicPlan, build_plan
from native.wire import Kind, WireError, read_request
from service import worker_deadline
from service.engines import PreparedKeys
from service.errors import ModelUnavailable, Unprocessable
from service.keystore import KeyCache, KeyStore
from service.settings import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "native-v1/"


def owner_prefix(namespace: str) -> str:
    """Where one identity's keys live (`Identity.namespace`)."""
    return f"{KEY_PREFIX}{namespace}/"


def key_name(namespace: str, key_id: str) -> str:
    return owner_prefix(namespace) + key_id


@dataclass(frozen=True)
class NativeOutcome:
    reply: bytes
    engine_seconds: float
    keys_cached: bool
    key_cache_bytes: int
    worker: int


@dataclass
class _NativeScorer:
    evaluator: NativeEvaluator
    keys: KeyStore


_scorer: _NativeScorer | None = None
_unavailable: str | None = None


def init(settings: Settings, model: LinearModel, key_cache: KeyCache) -> dict | None:
    """Plan the model for the native protocol; returns the public description, or None if it cannot be served."""
    global _scorer, _unavailable
    try:
        plan = build_plan(model, settings.native_profile, settings.native_input_scale, settings.native_input_max)
    except PlanError as exc:
        _unavailable = f"the native protocol cannot serve this model: {exc}"
        log.warning("%s", _unavailable)
        return None
    evaluator = NativeEvaluator(plan)

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
    _scorer = _NativeScorer(evaluator=evaluator, keys=keys)
    log.info("native protocol ready: profile %s, t = %d, replies at %d/%d bits, loops: %s", plan.public.params.profile,
             plan.public.params.plain_modulus, plan.public.single_reply_bits, plan.public.batch_reply_bits,
             kernels.STATUS)
    return plan.public.describe()


def prepare_ahead() -> bool:
    """One step of preparing the last scored key's encryptions of zero; whether more steps remain."""
    return _scorer is not None and _scorer.evaluator.zeros.make_ahead()


def request_shape(kind: Kind, plan: PublicPlan) -> tuple[int, int]:
    """(ciphertexts, most images) a request of `kind` holds for this model; the web process checks
    a body's header with it, the worker the whole body."""
    return (1, 1) if kind is Kind.SINGLE else (plan.n_features, plan.degree)


def score(kind: Kind, body: bytes, namespace: str) -> NativeOutcome:
    """Parse a native request, fetch its public key among `namespace`'s, and score it (in a worker process)."""
    if _scorer is None:
        raise ModelUnavailable(_unavailable or "the native protocol is not initialised in this worker")
    public = _scorer.evaluator.plan.public
    ciphertexts, max_images = request_shape(kind, public)
    try:
        request = read_request(body, kind, ciphertexts, max_images, public.params)
    except WireError as exc:
        raise Unprocessable(f"malformed request: {exc}") from None
    lookup = _scorer.keys.get(key_name(namespace, request.key_id))
    worker_deadline.check()
    started = time.perf_counter()
    try:
        if kind is Kind.SINGLE:
            reply = _scorer.evaluator.score_single(request, lookup.keys.value)
        else:
            reply = _scorer.evaluator.score_batch(request, lookup.keys.value)
    except WireError as exc:
        raise Unprocessable(str(exc)) from None
    return NativeOutcome(reply=reply, engine_seconds=time.perf_counter() - started, keys_cached=lookup.cached,
                         key_cache_bytes=_scorer.keys.cached_bytes, worker=os.getpid())
