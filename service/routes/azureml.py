"""`POST /score`: the Azure ML contract, for the tutorial's unmodified `EILinearRegressionClient`.

The handler does not parse the body: it charges the caller one image and hands the body to a
worker, which parses, checks and scores it (`service.azureml.contract.score_body`). So checking a
request costs the event loop nothing and costs the caller its quota, valid or not; the body's size
was bounded before it was read (`score_body_rule`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.azureml import contract
from service.azureml.contract import ScoreRequest
from service.http.auth import caller
from service.http.bodies import BodyRule, read_body
from service.routes.scoring import Scoring

SCORE_PATH = "/score"

ERROR_RESPONSES = {
    code: {"description": text, "content": {"application/json": {"example": {"message": "..."}}}}
    for code, text in {
        400: "Body is not JSON, or conn_str is malformed",
        401: "No valid credentials (Authorization: Bearer <API key or Entra token>)",
        403: "conn_str names a storage account outside ALLOWED_STORAGE_ACCOUNTS",
        404: "Unknown key_id or container",
        413: "Body larger than the model's ciphertexts can be",
        422: "Missing, ill-typed or malformed fields (including ciphertexts that are not SEAL 3.5 ciphertexts "
             "for the tutorial's parameters, or not as many as the model takes); it costs an image of quota",
        429: "The caller's image quota (RATE_LIMIT) is used up; see Retry-After",
        502: "The key store cannot be reached",
        503: "Model not loaded (yet), queue full, or a worker died during the request; see Retry-After",
        504: "Not scored within SCORING_TIMEOUT_MS",
    }.items()
}


SCORE_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": ScoreRequest.model_json_schema()}}}}
SCORE_REPLY = {"description": "Encrypted scores: one base64 SEAL ciphertext per model output, for "
                              "`EILinearRegressionClient.decrypt()`.",
               "content": {"application/json": {"schema": {"type": "array", "items": {"type": "string"}}}}}


def score_body_rule(n_features: int) -> BodyRule:
    """For `BoundedBodies`: a /score body is at most what the default model's ciphertexts can take."""
    return BodyRule(contract.body_limit(n_features))


def azureml_router(scoring: Scoring, engine: str) -> APIRouter:
    router = APIRouter()

    @router.post(SCORE_PATH, summary="Score encrypted input (Azure ML encrypted-inference contract)",
                 responses={200: SCORE_REPLY, **ERROR_RESPONSES}, openapi_extra=SCORE_BODY)
    async def score(request: Request) -> JSONResponse:
        identity = await caller(request)
        body = await read_body(request)
        # The tutorial's model takes one image per request.
        reply, headers = await scoring(identity, 1, engine, contract.score_body, body)
        return JSONResponse(reply, headers=headers)

    return router
