"""HTTP routes of the native protocol v1: describe the model, register a public key, score.

Bodies are binary (`application/octet-stream`, formats in `native.wire`); errors are JSON
`{"message": ...}` like everywhere else. The plan comes from the workers' start-up reports, so
the web process never loads SEAL objects itself; it only checks sizes and the public key's
structure before storing it. Keys belong to the identity that stored them (`native-v1/<its
namespace>/<key id>`); scoring costs images from the identity's quota, and batches need
BATCH_IDENTITIES.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from native.plan import PublicPlan
from native.wire import (Kind, WireError, key_id, public_key_size, read_public_key, request_image_count,
                         request_size)
from service import native_scoring
from service.errors import ModelUnavailable, NotFound, Unprocessable
from service.http.auth import Identity, caller
from service.http.metering import ImageQuota, require_batch_permission
from service.keystore import delete_public_key, store_owned_key
from service.observability import Metrics
from service.runtime import RuntimeState, ScoringRuntime
from service.settings import Settings
from service.storage import StorageAccess

BINARY_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
BINARY_REPLY = {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                "description": "An encrypted reply (native.wire), for `ScoringClient` to decrypt."}


class NativeProtocol:
    """What the routes need: the public plan (once workers are up) and body limits derived from it."""

    def __init__(self, runtime: ScoringRuntime, settings: Settings) -> None:
        self._runtime, self._settings = runtime, settings
        self._plan: PublicPlan | None = None
        self._storage: StorageAccess | None = None

    @property
    def plan(self) -> PublicPlan:
        if self._plan is None:
            if self._runtime.state is not RuntimeState.READY:
                raise ModelUnavailable(self._runtime.failure or "the model is still loading")
            if self._runtime.native_description is None:
                raise NotFound("this model cannot be served by the native protocol; see the service log")
            self._plan = PublicPlan.from_description(self._runtime.native_description)
        return self._plan

    def body_limit(self, path: str) -> int | None:
        """The exact size a native body can have on `path`, or None for other paths."""
        if not path.startswith("/v1/") or self._runtime.native_description is None:
            return None
        params = self.plan.params
        return {"/v1/keys": public_key_size(params), "/v1/score": request_size(1, params),
                "/v1/score/batch": request_size(self.plan.n_features, params)}.get(path)

    def storage(self) -> StorageAccess:
        if self._storage is None:
            self._storage = StorageAccess(self._settings)
        return self._storage


def native_router(protocol: NativeProtocol, runtime: ScoringRuntime, settings: Settings, metrics: Metrics,
                  quota: ImageQuota) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["native protocol v1"])
    ttl_s = settings.key_ttl_days * 86400

    @router.get("/model", summary="The model's encoding parameters, for ScoringClient")
    async def describe() -> dict:
        return protocol.plan.describe()

    @router.post("/keys", status_code=201, openapi_extra=BINARY_BODY,
                 summary="Store a public key of the caller; its id is the SHA-256 of its bytes. Storing it "
                         "again renews it (KEY_TTL_DAYS); 409 beyond MAX_KEYS_PER_IDENTITY")
    async def register_key(request: Request, identity: Annotated[Identity, Depends(caller)]) -> dict:
        body = await request.body()
        try:
            read_public_key(body, protocol.plan.params)
        except WireError as exc:
            raise Unprocessable(f"malformed public key: {exc}") from None
        identifier = key_id(body)
        await run_in_threadpool(store_owned_key, protocol.storage(), settings.key_container,
                                native_scoring.owner_prefix(identity.namespace),
                                native_scoring.key_name(identity.namespace, identifier), body,
                                settings.max_keys_per_identity, ttl_s)
        return {"key_id": identifier, "bytes": len(body)}

    @router.delete("/keys/{key_id}", status_code=204, response_class=Response,
                   summary="Delete one of the caller's public keys (404 for keys of other identities)")
    async def delete_key(key_id: Annotated[str, Path(pattern="^[0-9a-f]{64}$")],
                         identity: Annotated[Identity, Depends(caller)]) -> Response:
        await run_in_threadpool(delete_public_key, protocol.storage(), settings.key_container,
                                native_scoring.key_name(identity.namespace, key_id), key_id)
        return Response(status_code=204)

    async def score(kind: Kind, request: Request, identity: Identity) -> Response:
        body = await request.body()
        plan = protocol.plan  # answers 503/404 before the body is shipped to a worker
        images = 1 if kind is Kind.SINGLE else min(max(request_image_count(body) or 1, 1), plan.degree)
        await quota.charge(identity, images)
        started = time.perf_counter()
        outcome = await runtime.run(native_scoring.score, kind, body, identity.namespace)
        metrics.record_scoring("native", outcome)
        metrics.record_images(identity.name, images)
        headers = {"x-ms-run-fn-exec-ms": f"{(time.perf_counter() - started) * 1000:.3f}",
                   "x-engine-ms": f"{outcome.engine_seconds * 1000:.3f}"}
        return Response(outcome.reply, media_type="application/octet-stream", headers=headers)

    @router.post("/score", openapi_extra=BINARY_BODY, responses={200: BINARY_REPLY},
                 response_class=Response, summary="Score one encrypted sample (costs 1 image of the quota)")
    async def score_single(request: Request, identity: Annotated[Identity, Depends(caller)]) -> Response:
        return await score(Kind.SINGLE, request, identity)

    @router.post("/score/batch", openapi_extra=BINARY_BODY, responses={200: BINARY_REPLY},
                 response_class=Response, summary="Score up to max_batch encrypted samples at once "
                                                  "(BATCH_IDENTITIES only; costs the images it declares)")
    async def score_batch(request: Request, identity: Annotated[Identity, Depends(caller)]) -> Response:
        require_batch_permission(identity)  # before the body is read
        return await score(Kind.BATCH, request, identity)

    return router
