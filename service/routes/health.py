"""Liveness, readiness and the Prometheus metrics of the main port (without per-identity series)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.http.responses import error_response
from service.metrics import Metrics
from service.routes.azureml import ERROR_RESPONSES
from service.workers.pool import PoolState, WorkerPool

OPEN_PATHS = frozenset({"/", "/ready"})


def health_router(pool: WorkerPool, metrics: Metrics) -> APIRouter:
    router = APIRouter()

    @router.get("/", response_class=PlainTextResponse, summary="Liveness")
    async def liveness() -> str:
        return "Healthy"

    @router.get("/ready", summary="Readiness: 200 once every worker has loaded the model",
                responses={503: ERROR_RESPONSES[503]})
    async def readiness() -> JSONResponse:
        if pool.state is PoolState.READY:
            return JSONResponse({"status": "ready", "workers": pool.worker_count})
        return error_response(503, pool.failure or "the model is still loading")

    @router.get("/metrics", summary="Prometheus metrics, without the series per identity (those: METRICS_PORT)",
                response_class=PlainTextResponse)
    async def prometheus_metrics() -> Response:
        # Any authenticated caller may read this: who else uses the service, and how much, is not for them.
        return Response(generate_latest(metrics.without_identities), media_type=CONTENT_TYPE_LATEST)

    return router
