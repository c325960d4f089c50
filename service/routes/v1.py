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
from model.catalog import version_order
from service.errors import NotFound, Unprocessable
from service.http.auth import Identity, caller
from service.http.bodies import read_body
from service.routes.scoring import Scoring
from service.settings import Settings
from service.v1 import scoring as v1_scoring
from service.v1.keys import delete_owned_key, list_owned_keys, store_owned_key
from service.v1.protocol import ROUND_ROUTE_TEMPLATES, V1Protocol, round_of

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


PREFIXES = ("/v1", "/v1/models/{name}", "/v1/models/{name}/versions/{version}")


def v1_router(protocol: V1Protocol, scoring: Scoring, settings: Settings) -> APIRouter:
    router = APIRouter(tags=["v1 protocol"])

    @router.get("/v1/models", summary="The models served: name, version, kind, features, outputs, default")
    async def list_models() -> dict:
        default = protocol.default_key()
        models = sorted(protocol.models().items(), key=lambda item: (item[1].listing["name"],
                                                                     version_order(item[1].listing["version"])))
        return {"models": [{**model.listing, "default": key == default, "v1": model.description is not None}
                           for key, model in models]}

    async def describe(request: Request) -> dict:
        model = protocol.model_of(request)
        model.ring  # 409 with the reason if the v1 protocol cannot serve the model
        return model.description

    async def store_key(request: Request, identity: Annotated[Identity, Depends(caller)]) -> dict:
        model = protocol.model_of(request)
        body = bytes(await read_body(request))  # small; the Blob SDK wants bytes
        try:
            read_public_key(body, model.ring)
        except WireError as exc:
            raise Unprocessable(f"malformed public key: {exc}") from None
        identifier = key_id(body)
        replaced = await run_in_threadpool(store_owned_key, protocol.storage(), settings.key_container,
                                           identity.namespace, model.key, identifier, body,
                                           settings.max_keys_per_identity, settings.key_ttl_s)
        name, version = model.key.split("/", 1)
        return {"key_id": identifier, "bytes": len(body), "model": name, "version": version, "replaced": replaced}

    async def list_keys(request: Request, identity: Annotated[Identity, Depends(caller)]) -> dict:
        """Under a model's prefix its keys; `/v1/keys` every model's."""
        only = protocol.model_of(request).key if "name" in request.path_params else None
        keys = await run_in_threadpool(list_owned_keys, protocol.storage(), settings.key_container,
                                       identity.namespace, settings.key_ttl_s)
        return {"keys": [key.describe() for key in keys if only is None or key.model == only],
                "max_keys": settings.max_keys_per_identity}

    async def delete_key(request: Request, key_id: Annotated[str, Path(pattern="^[0-9a-f]{64}$")],
                         identity: Annotated[Identity, Depends(caller)]) -> Response:
        model = protocol.model_of(request)
        await run_in_threadpool(delete_owned_key, protocol.storage(), settings.key_container, identity.namespace,
                                model.key, key_id)
        return Response(status_code=204)

    async def score(kind: Kind, request: Request) -> Response:
        identity = await caller(request)
        model = protocol.model_of(request)
        body = await read_body(request)
        header = protocol.request_header(model, kind, request, body)  # 503/404/409/422 before a worker sees it
        reply, headers = await scoring(identity, header.images, "native", v1_scoring.score, model.key, header, body,
                                       identity.namespace)
        return Response(reply, media_type="application/octet-stream", headers=headers)

    async def score_round(kind: Kind, request: Request) -> Response:
        identity = await caller(request)
        model = protocol.model_of(request)
        round_route = round_of(ROUND_ROUTE_TEMPLATES[kind].format(round=request.path_params["round"]))
        if round_route is None or round_route.index >= model.rounds():
            model.network_plan  # 409 for a linear model
            raise NotFound(f"model {model.key} is scored in {model.rounds()} rounds, 0 to {model.rounds() - 1}")
        body = await read_body(request)
        header = protocol.round_header(model, round_route, request, body)  # 404/409/422 before a worker sees it
        reply, headers = await scoring(identity, header.images, "native", v1_scoring.score_round, model.key,
                                       round_route, header, body, identity.namespace)
        return Response(reply, media_type="application/octet-stream", headers=headers)

    async def score_single_round(request: Request) -> Response:
        return await score_round(Kind.SINGLE, request)

    async def score_batch_round(request: Request) -> Response:
        return await score_round(Kind.BATCH, request)

    async def score_single(request: Request) -> Response:
        return await score(Kind.SINGLE, request)

    async def score_batch(request: Request) -> Response:
        return await score(Kind.BATCH, request)

    for prefix in PREFIXES:
        which = "the default model" if prefix == "/v1" else "this model"
        router.add_api_route(f"{prefix}/model" if prefix == "/v1" else prefix, describe, methods=["GET"],
                             summary=f"The encoding parameters of {which}, for ScoringClient and EncryptedModel")
        router.add_api_route(f"{prefix}/keys", store_key, methods=["POST"], status_code=201,
                             openapi_extra=BINARY_BODY,
                             summary=f"Store a public key of the caller for {which}; its id is the SHA-256 of its "
                                     "bytes. Storing it again renews it (KEY_TTL_DAYS); beyond "
                                     "MAX_KEYS_PER_IDENTITY the least recently stored key is replaced")
        router.add_api_route(f"{prefix}/keys", list_keys, methods=["GET"],
                             summary="The caller's public keys" + ("" if prefix == "/v1" else f" for {which}"))
        router.add_api_route(f"{prefix}/keys/{{key_id}}", delete_key, methods=["DELETE"], status_code=204,
                             response_class=Response,
                             summary=f"Delete one of the caller's public keys for {which} (404 for keys of other "
                                     "identities)")
        scoring_routes = [
            ("score", score_single, f"Score one encrypted sample with {which} (costs 1 image of the quota)"),
            (ROUND_ROUTE_TEMPLATES[Kind.SINGLE], score_single_round,
             f"One round of scoring a sample with {which}, a square network: round 0 carries the encrypted sample, "
             "each later round the previous reply's masked values and token (costs 1 image of the quota per round)"),
            ("score/batch", score_batch, f"Score up to max_batch encrypted samples at once with {which} "
                                         "(BATCH_IDENTITIES only; costs the images it declares)"),
            (ROUND_ROUTE_TEMPLATES[Kind.BATCH], score_batch_round,
             f"One round of scoring up to max_batch samples with {which}, a square network, one sample per slot "
             "(BATCH_IDENTITIES only; costs the images it declares per round)")]
        for route, handler, summary in scoring_routes:  # binary bodies, read by the handler itself
            router.add_api_route(f"{prefix}/{route}", handler, methods=["POST"], route_class_override=RequestOnlyRoute,
                                 openapi_extra=BINARY_BODY, responses={200: BINARY_REPLY}, response_class=Response,
                                 summary=summary)
    return router
