"""`POST /score`: the Azure ML contract, for the tutorial's unmodified `EILinearRegressionClient`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from service.azureml import contract
from service.azureml.contract import ScoreRequest
from service.http.auth import Identity, caller
from service.routes.scoring import Scoring

SCORE_PATH = "/score"

ERROR_RESPONSES = {
    code: {"description": text, "content": {"application/json": {"example": {"message": "..."}}}}
    for code, text in {
        400: "Body is not JSON, or conn_str is malformed",
        401: "No valid credentials (Authorization: Bearer <API key or Entra token>)",
        403: "conn_str names a storage account outside ALLOWED_STORAGE_ACCOUNTS",
        404: "Unknown key_id or container",
        413: "Body or public keys too large",
        422: "Missing, ill-typed or malformed fields (including ciphertexts that are not SEAL 3.5 ciphertexts "
             "for the tutorial's parameters)",
        429: "The caller's image quota (RATE_LIMIT) is used up; see Retry-After",
        502: "The key store cannot be reached",
        503: "Model not loaded (yet), queue full, or a worker died during the request; see Retry-After",
        504: "Not scored within SCORING_TIMEOUT_MS",
    }.items()
}


def azureml_router(scoring: Scoring, engine: str) -> APIRouter:
    router = APIRouter()

    @router.post(SCORE_PATH, summary="Score encrypted input (Azure ML encrypted-inference contract)",
                 response_description="Encrypted scores: one base64 SEAL ciphertext per model output, "
                                      "for `EILinearRegressionClient.decrypt()`.",
                 responses=ERROR_RESPONSES)
    async def score(request: ScoreRequest, response: Response,
                    identity: Annotated[Identity, Depends(caller)]) -> list[str]:
        # The tutorial's model takes one image per request.
        reply, headers = await scoring(identity, 1, engine, contract.score, request)
        response.headers.update(headers)
        return reply

    return router
