"""The HTTP layer: routes of the Azure ML inference server, translated to the scoring runtime.

Handlers only translate: request -> `ScoringRuntime`, `ScoringError` -> JSON `{"message": ...}`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import demo
from service.contract import SeedScoreRequest
from service.errors import ScoringError, describe_validation_errors
from service.http.auth import Authentication, Identity, authenticator, caller, configured_api_keys
from service.http.bodies import BodyBudget, BodyMetrics, BoundedBodies
from service.http.metering import Admission, ImageQuota
from service.http.responses import error_response
from service.native_routes import NATIVE_BATCH_PATH, NATIVE_SCORING_PATHS, NativeProtocol, native_router
from service.observability import Metrics, RequestTracking
from service.runtime import RuntimeState, ScoringRuntime
from service.settings import Settings

log = logging.getLogger(__name__)

_ERROR_RESPONSES = {
    code: {"description": text, "content": {"application/json": {"example": {"message": "..."}}}}
    for code, text in {
        400: "Body is not JSON, or conn_str is malformed",
        401: "No valid credentials (Authorization: Bearer <API key or Entra token>)",
        403: "conn_str names a storage account outside ALLOWED_STORAGE_ACCOUNTS",
        404: "Unknown key_id or container",
        413: "Body or public keys too large",
        422: "Missing, ill-typed or malformed fields (including ciphertexts that are not SEAL 3.5 ciphertexts "
             "for the seed parameters)",
        429: "The caller's image quota (RATE_LIMIT) is used up; see Retry-After",
        502: "The key store cannot be reached",
        503: "Model not loaded (yet), queue full, or a worker died during the request; see Retry-After",
        504: "Not scored within SCORING_TIMEOUT_MS",
    }.items()
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    authenticate = authenticator(settings)  # raises AuthConfigError before anything starts
    runtime = ScoringRuntime(settings)
    metrics = Metrics(identities=[*configured_api_keys(settings), *settings.batch_identities])
    metrics.track_runtime(lambda: runtime.queued, lambda: runtime.running)
    quota = ImageQuota(settings)
    docs_open = settings.api_docs == "open"
    docs_served = settings.api_docs != "off"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load in the background: liveness answers at once, readiness turns 200 when workers are up.
        starting = asyncio.create_task(runtime.start())
        scraper = None
        if settings.metrics_port:  # for a scraper that holds no credential: a port kept off the public network
            scraper, _ = start_http_server(settings.metrics_port, settings.host, registry=metrics.registry)
        yield
        if scraper:
            scraper.shutdown()
        await starting
        await runtime.stop()

    app = FastAPI(
        title="Encrypted scoring service",
        description="Scores scikit-learn linear models on homomorphically encrypted inputs. "
                    "`POST /score` is the Azure ML encrypted-inference contract; `/v1/` is the native "
                    "protocol (BFV, no evaluation keys, binary bodies).",
        version="0.1.0",
        openapi_url="/swagger.json" if docs_served else None,
        docs_url="/docs" if docs_served else None,
        redoc_url=None,
        lifespan=lifespan,
        # Metrics are Prometheus (`Metrics`); FastAPI's OpenTelemetry hooks would only cost time per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    native = NativeProtocol(runtime, settings)
    app.include_router(native_router(native, runtime, settings, metrics, quota))
    budget = BodyBudget(settings.max_queue_bytes)
    app.add_middleware(BoundedBodies, default_limit=settings.max_request_bytes, rule_for=native.body_rule,
                       budget=budget, metrics=BodyMetrics(metrics.registry, budget),
                       stall_timeout_s=settings.body_timeout_s, min_bytes_per_s=settings.body_min_bytes_per_s)
    # Batch permission and a quota with an image left, decided from the headers (identity known by then).
    app.add_middleware(Admission, quota=quota, scoring_paths=frozenset({"/score", *NATIVE_SCORING_PATHS}),
                       batch_paths=frozenset({NATIVE_BATCH_PATH}))
    # Credentials before anything reads or limits the body; health probes (and docs if API_DOCS=open) stay open.
    docs = {"/docs", "/docs/oauth2-redirect", "/swagger.json"} if docs_open else set()
    open_paths = frozenset({"/", "/ready", *docs, *demo.OPEN_PATHS})
    app.add_middleware(Authentication, authenticate=authenticate, open_paths=open_paths,
                       batch_identities=frozenset(settings.batch_identities))
    app.add_middleware(RequestTracking, metrics=metrics)  # outermost: sees every answer, 401s and 413s included

    @app.exception_handler(ScoringError)
    async def scoring_error(_: Request, exc: ScoringError) -> JSONResponse:
        return error_response(exc.status_code, exc.message, retry_after=exc.retry_after)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        error = describe_validation_errors(exc.errors())
        return error_response(error.status_code, error.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error; the service log has the details")

    @app.get("/", response_class=PlainTextResponse, summary="Liveness")
    async def liveness() -> str:
        return "Healthy"

    @app.get("/ready", summary="Readiness: 200 once every worker has loaded the model",
             responses={503: _ERROR_RESPONSES[503]})
    async def readiness() -> JSONResponse:
        if runtime.state is RuntimeState.READY:
            return JSONResponse({"status": "ready", "workers": runtime.worker_count})
        return error_response(503, runtime.failure or "the model is still loading")

    @app.post("/score", summary="Score encrypted input (Azure ML encrypted-inference contract)",
              response_description="Encrypted scores: one base64 SEAL ciphertext per model output, "
                                   "for `EILinearRegressionClient.decrypt()`.",
              responses=_ERROR_RESPONSES)
    async def score(request: SeedScoreRequest, response: Response,
                    identity: Annotated[Identity, Depends(caller)]) -> list[str]:
        await quota.charge(identity, 1)  # the seed model takes one image per request
        started = time.perf_counter()
        outcome = await runtime.score(request)
        # As Azure ML's inference server: the time spent running the scoring function.
        response.headers["x-ms-run-fn-exec-ms"] = f"{(time.perf_counter() - started) * 1000:.3f}"
        response.headers["x-engine-ms"] = f"{outcome.engine_seconds * 1000:.3f}"
        metrics.record_scoring(settings.scoring_engine, outcome)
        metrics.record_images(identity.name, 1)
        return outcome.reply

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # GET /demo: the browser client and its page. Routes are matched in order, and a router that
    # does not match still costs a few microseconds: the probes and /score come before it.
    app.include_router(demo.router)
    return app
