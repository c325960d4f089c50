"""HTTP routes of the v1 protocol: describe the model, store and delete a public key, score.

Bodies are binary (`application/octet-stream`, formats in `bfv.wire` and docs/protocol.md); errors
are JSON `{"message": ...}` like everywhere else. Keys belong to the identity that stored them
(`service.v1.keys`); scoring costs images from the identity's quota, and batches need
BATCH_IDENTITIES.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from bfv.wire import Kind, WireError, key_id, read_public_key
from service.errors import Unprocessable
from service.http.auth import Identity, caller
from service.http.bodies import read_body
from service.routes.scoring import Scoring
from service.settings import Settings
from service.v1 import scoring as v1_scoring
from service.v1.keys import delete_owned_key, store_owned_key
from service.v1.protocol import V1Protocol

BINARY_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
BINARY_REPLY = {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                "description": "An encrypted reply (bfv.wire), for `ScoringClient` to decrypt."}


class RequestOnlyRoute(APIRoute):
    """A route whose endpoint takes the `Request` alone and returns a `Response`: FastAPI's
    per-request dependency solving and response handling are skipped on the hot path, while the
    route's OpenAPI entry is made from its declaration as for any other route. Its endpoint calls
    what it needs itself (`caller(request)` for the identity `Authentication` decided)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


def v1_router(protocol: V1Protocol, scoring: Scoring, settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["v1 protocol"])

    @router.get("/model", summary="The model's encoding parameters, for ScoringClient")
    async def describe() -> dict:
        return protocol.plan.describe()

    @router.post("/keys", status_code=201, openapi_extra=BINARY_BODY,
                 summary="Store a public key of the caller; its id is the SHA-256 of its bytes. Storing it "
                         "again renews it (KEY_TTL_DAYS); 409 beyond MAX_KEYS_PER_IDENTITY")
    async def store_key(request: Request, identity: Annotated[Identity, Depends(caller)]) -> dict:
        body = bytes(await read_body(request))  # small; the Blob SDK wants bytes
        try:
            read_public_key(body, protocol.plan.params)
        except WireError as exc:
            raise Unprocessable(f"malformed public key: {exc}") from None
        identifier = key_id(body)
        await run_in_threadpool(store_owned_key, protocol.storage(), settings.key_container, identity.namespace,
                                identifier, body, settings.max_keys_per_identity, settings.key_ttl_s)
        return {"key_id": identifier, "bytes": len(body)}

    @router.delete("/keys/{key_id}", status_code=204, response_class=Response,
                   summary="Delete one of the caller's public keys (404 for keys of other identities)")
    async def delete_key(key_id: Annotated[str, Path(pattern="^[0-9a-f]{64}$")],
                         identity: Annotated[Identity, Depends(caller)]) -> Response:
        await run_in_threadpool(delete_owned_key, protocol.storage(), settings.key_container, identity.namespace,
                                key_id)
        return Response(status_code=204)

    async def score(kind: Kind, request: Request) -> Response:
        identity = await caller(request)
        body = await read_body(request)
        header = protocol.request_header(kind, request, body)  # 503/404/422 before the body goes to a worker
        reply, headers = await scoring(identity, header.images, "native", v1_scoring.score, header, body,
                                       identity.namespace)
        return Response(reply, media_type="application/octet-stream", headers=headers)

    async def score_single(request: Request) -> Response:
        return await score(Kind.SINGLE, request)

    async def score_batch(request: Request) -> Response:
        return await score(Kind.BATCH, request)

    router.add_api_route("/score", score_single, methods=["POST"], route_class_override=RequestOnlyRoute,
                         openapi_extra=BINARY_BODY, responses={200: BINARY_REPLY}, response_class=Response,
                         summary="Score one encrypted sample (costs 1 image of the quota)")
    router.add_api_route("/score/batch", score_batch, methods=["POST"], route_class_override=RequestOnlyRoute,
                         openapi_extra=BINARY_BODY, responses={200: BINARY_REPLY}, response_class=Response,
                         summary="Score up to max_batch encrypted samples at once "
                                 "(BATCH_IDENTITIES only; costs the images it declares)")
    return router
