"""The app: settings in, the HTTP layers, the routes and the worker pool wired together.

Handlers only translate (request -> a worker's scoring, `ScoringError` -> JSON `{"message": ...}`);
what each layer does is in its own module: `service.http` (connections, credentials, admission,
body bounds, request tracking), `service.routes` (the handlers), `service.workers` (the pool),
`service.model_runtime` (what the workers run).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import start_http_server
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import model_runtime
from service.errors import ScoringError, describe_validation_errors
from service.http.auth import Authenticate, Authentication, authenticator, configured_api_keys
from service.fair_share import FairShare
from service.http.bodies import BodyMetrics, BodyRule, BoundedBodies
from service.http.metering import Admission, ImageQuota
from service.http.responses import error_response
from service.http.tracking import RequestTracking
from service.http.transport import StrictTransportSecurity
from service.metrics import Metrics
from service.routes import demo
from service.routes import docs as docs_page
from service.routes.azureml import SCORE_PATH, azureml_router, score_body_rule
from service.routes.health import OPEN_PATHS as HEALTH_PATHS
from service.routes.health import health_router
from service.routes.scoring import Scoring
from service.routes.v1 import v1_router
from service.settings import Settings
from service.v1.protocol import V1Protocol
from service.workers.pool import WorkerPool

log = logging.getLogger(__name__)

# The docs page and its files (no OAuth2 redirect page: no OAuth2 flow to finish), and the OpenAPI document.
DOCS_PATHS = docs_page.PATHS | {"/swagger.json"}


def create_app(settings: Settings | None = None, checked: model_runtime.CheckedModels | None = None) -> FastAPI:
    """The app; its workers load the models themselves, or take `checked` (loaded and checked already)."""
    settings = settings or Settings()
    authenticate = authenticator(settings)  # raises AuthConfigError before anything starts
    pool = WorkerPool(settings, model_runtime.program(checked))
    metrics = Metrics(identities=[*configured_api_keys(settings), *settings.batch_identities])
    metrics.track_pool(lambda: pool.queued, lambda: pool.running)
    quota = ImageQuota(settings)
    scoring = Scoring(pool, quota, metrics)
    v1 = V1Protocol(pool, settings)
    docs_served = settings.api_docs != "off"
    if settings.api_docs == "open":
        log.warning("API_DOCS=open: /docs and /swagger.json answer without credentials, every route shown to anyone")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load in the background: liveness answers at once, readiness turns 200 when workers are up.
        starting = asyncio.create_task(pool.start())
        scraper = None
        if settings.metrics_port:  # for a scraper that holds no credential: a port kept off the public network
            scraper, _ = start_http_server(settings.metrics_port, settings.host, registry=metrics.registry)
        yield
        if scraper:
            scraper.shutdown()
        await starting
        await pool.stop()

    app = FastAPI(
        title="Encrypted scoring service",
        description="Scores scikit-learn linear models on homomorphically encrypted inputs. "
                    "`POST /score` is the Azure ML encrypted-inference contract; `/v1/` is the v1 "
                    "protocol (BFV, no evaluation keys, binary bodies).",
        version="0.1.0",
        openapi_url="/swagger.json" if docs_served else None,
        docs_url=None,  # /docs is service.routes.docs: Swagger UI from this package, FastAPI's page is a CDN's
        redoc_url=None,
        lifespan=lifespan,
        # Metrics are Prometheus (`Metrics`); FastAPI's OpenTelemetry hooks would only cost time per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.pool = pool
    _add_layers(app, settings, authenticate, quota, metrics, v1)
    _add_error_handlers(app)
    # Routes are matched in order, and a router that does not match still costs a few microseconds:
    # the scoring routes first, the demo page's files last.
    app.include_router(v1_router(v1, scoring, settings))
    app.include_router(azureml_router(scoring, settings.scoring_engine))
    app.include_router(health_router(pool, metrics))
    app.include_router(demo.router)
    if docs_served:
        app.include_router(docs_page.router)
    return app


def _add_layers(app: FastAPI, settings: Settings, authenticate: Authenticate | None, quota: ImageQuota,
                metrics: Metrics, v1: V1Protocol) -> None:
    """The ASGI middleware, innermost first: each is added around the ones before it."""
    budget = FairShare(settings.max_queue_bytes, settings.max_identity_share)

    def body_rule(path: str) -> BodyRule | None:
        if path == SCORE_PATH:
            default = v1.default_model()  # None while the workers start: MAX_REQUEST_BYTES bounds it then
            return None if default is None else score_body_rule(default.listing["features"])
        return v1.body_rule(path)

    app.add_middleware(BoundedBodies, default_limit=settings.max_request_bytes, rule_for=body_rule,
                       budget=budget, metrics=BodyMetrics(metrics.registry, budget),
                       stall_timeout_s=settings.body_timeout_s, min_bytes_per_s=settings.body_min_bytes_per_s)
    # Batch permission and a quota with an image left, decided from the headers (identity known by then).
    def scoring(path: str) -> str | None:
        kind = v1.scoring_kind(path)
        return "single" if path == SCORE_PATH else None if kind is None else kind.name.lower()

    app.add_middleware(Admission, quota=quota, scoring=scoring)
    # Credentials before anything reads or limits the body; health probes (and docs if API_DOCS=open) stay open.
    docs = DOCS_PATHS if settings.api_docs == "open" else frozenset()
    app.add_middleware(Authentication, authenticate=authenticate, open_paths=HEALTH_PATHS | docs | demo.OPEN_PATHS,
                       batch_identities=frozenset(settings.batch_identities))
    if settings.tls_cert_file:  # uvicorn serves HTTPS itself: HSTS on every answer (never over plain HTTP)
        app.add_middleware(StrictTransportSecurity)
    app.add_middleware(RequestTracking, metrics=metrics)  # outermost: sees every answer, 401s and 413s included


def _add_error_handlers(app: FastAPI) -> None:
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
