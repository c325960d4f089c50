"""HTTP routes of the native protocol v1: describe the model, register a public key, score.

Bodies are binary (`application/octet-stream`, formats in `native.wire`); errors are JSON
`{"message": ...}` like everywhere else. The plan comes from the workers' start-up reports, so
the web process never loads SEAL objects itself; it only checks sizes and the public key's
structure before storing it. Keys belong to the identity that stored them (`native-v1/<its
namespace>/<key id>`); scoring costs images from the identity's quota, and batches need
BATCH_IDENTITIES.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from native.plan import PublicPlan
from native.wire import (
    KEY_HEADER_SIZE,
    REQUEST_HEADER_SIZE,
    Kind,
    RequestHeader,
    WireError,
    check_public_key_header,
    check_request_header,
    key_id,
    public_key_size,
    read_public_key,
    request_size,
)
from service import native_scoring
from service.errors import ModelUnavailable, NotFound, Unprocessable
from service.http.auth import Identity, caller
from service.http.bodies import BodyRule, read_body
from service.http.metering import ImageQuota
from service.keystore import delete_public_key, store_owned_key
from service.observability import Metrics
from service.runtime import RuntimeState, ScoringRuntime
from service.settings import Settings
from service.storage import StorageAccess

# Scoring paths: metered in images (and batches allowed to BATCH_IDENTITIES only) by `Admission`.
NATIVE_SINGLE_PATH, NATIVE_BATCH_PATH = "/v1/score", "/v1/score/batch"
NATIVE_SCORING_PATHS = frozenset({NATIVE_SINGLE_PATH, NATIVE_BATCH_PATH})

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
        self._body_rules: dict[str, BodyRule] | None = None

    @property
    def plan(self) -> PublicPlan:
        if self._plan is None:
            if self._runtime.state is not RuntimeState.READY:
                raise ModelUnavailable(self._runtime.failure or "the model is still loading")
            if self._runtime.native_description is None:
                raise NotFound("this model cannot be served by the native protocol; see the service log")
            self._plan = PublicPlan.from_description(self._runtime.native_description)
        return self._plan

    def body_rule(self, path: str) -> BodyRule | None:
        """The exact size a native body can have on `path` and the check of its header, for
        `BoundedBodies`; None for other paths."""
        if self._runtime.native_description is None:
            return None
        if self._body_rules is None:  # the plan never changes once known, so neither do the rules
            self._body_rules = self._make_body_rules()
        return self._body_rules.get(path)

    def _make_body_rules(self) -> dict[str, BodyRule]:
        params = self.plan.params
        rules = {"/v1/keys": BodyRule(public_key_size(params), KEY_HEADER_SIZE, self._check_key_head)}
        for path, kind in ((NATIVE_SINGLE_PATH, Kind.SINGLE), (NATIVE_BATCH_PATH, Kind.BATCH)):
            ciphertexts, _ = native_scoring.request_shape(kind, self.plan)
            rules[path] = BodyRule(request_size(ciphertexts, params), REQUEST_HEADER_SIZE,
                                   functools.partial(self._check_request_head, kind))
        return rules

    def _check_key_head(self, head: bytes, size: int) -> None:
        try:
            check_public_key_header(head, size, self.plan.params)
        except WireError as exc:
            raise Unprocessable(f"malformed public key: {exc}") from None

    def _check_request_head(self, kind: Kind, head: bytes, size: int) -> RequestHeader:
        ciphertexts, max_images = native_scoring.request_shape(kind, self.plan)
        try:
            return check_request_header(head, size, kind, ciphertexts, max_images, self.plan.params)
        except WireError as exc:
            raise Unprocessable(f"malformed request: {exc}") from None

    def images_in(self, kind: Kind, body: bytes | memoryview) -> int:
        """How many images a (whole) request body declares: what metering charges."""
        return self._check_request_head(kind, bytes(body[:REQUEST_HEADER_SIZE]), len(body)).images

    def storage(self) -> StorageAccess:
        if self._storage is None:
            self._storage = StorageAccess(self._settings)
        return self._storage


class RequestOnlyRoute(APIRoute):
    """A route whose endpoint takes the `Request` alone and returns a `Response`: FastAPI's
    per-request dependency solving and response handling are skipped (measured in-process, the
    web process's own work on a single-image scoring went from ~180 to ~140 µs), while the route's
    OpenAPI entry is made from its declaration as for any other route. Its endpoint calls what it
    needs itself (`caller(request)` for the identity `Authentication` decided)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


def native_router(protocol: NativeProtocol, runtime: ScoringRuntime, settings: Settings, metrics: Metrics,
                  quota: ImageQuota) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["native protocol v1"])
    ttl_s = settings.key_ttl_s

    @router.get("/model", summary="The model's encoding parameters, for ScoringClient")
    async def describe() -> dict:
        return protocol.plan.describe()

    @router.post("/keys", status_code=201, openapi_extra=BINARY_BODY,
                 summary="Store a public key of the caller; its id is the SHA-256 of its bytes. Storing it "
                         "again renews it (KEY_TTL_DAYS); 409 beyond MAX_KEYS_PER_IDENTITY")
    async def register_key(request: Request, identity: Annotated[Identity, Depends(caller)]) -> dict:
        body = bytes(await read_body(request))  # small; the Blob SDK wants bytes
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
        body = await read_body(request)
        images = protocol.images_in(kind, body)  # answers 503/404 before the body is shipped to a worker
        await quota.charge(identity, images)
        started = time.perf_counter()
        outcome = await runtime.run(native_scoring.score, kind, body, identity.namespace)
        metrics.record_scoring("native", outcome)
        metrics.record_images(identity.name, images)
        headers = {"x-ms-run-fn-exec-ms": f"{(time.perf_counter() - started) * 1000:.3f}",
                   "x-engine-ms": f"{outcome.engine_seconds * 1000:.3f}"}
        return Response(outcome.reply, media_type="application/octet-stream", headers=headers)

    async def score_single(request: Request) -> Response:
        return await score(Kind.SINGLE, request, await caller(request))

    async def score_batch(request: Request) -> Response:
        return await score(Kind.BATCH, request, await caller(request))

    router.add_api_route("/score", score_single, methods=["POST"], route_class_override=RequestOnlyRoute,
                         openapi_extra=BINARY_BODY, responses={200: BINARY_REPLY}, response_class=Response,
                         summary="Score one encrypted sample (costs 1 image of the quota)")
    router.add_api_route("/score/batch", score_batch, methods=["POST"], route_class_override=RequestOnlyRoute,
                         openapi_extra=BINARY_BODY, responses={200: BINARY_REPLY}, response_class=Response,
                         summary="Score up to max_batch encrypted samples at once "
                                 "(BATCH_IDENTITIES only; costs the images it declares)")

    return router
