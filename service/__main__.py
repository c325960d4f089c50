"""`python -m service`: check the model, then serve the app with uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from bfv.plan import PlanError
from model.catalog import CatalogError, default_entry, discover
from model.description import DescriptionError
from model.loading import ModelLoadError, load_entry
from service.app import create_app
from service.http.auth import AuthConfigError
from service.http.connections import with_head_bounds
from service.logs import configure_logging
from service.model_runtime import CheckedModels
from service.settings import Settings
from service.v1.scoring import InputsNotDeclared, plan_model


def check_models(settings: Settings) -> CheckedModels:
    """Every model loads and, where its inputs are declared, has a plan that decrypts exactly; the models
    by key, for the workers."""
    entries = discover(settings.azureml_model_dir, settings.model_file)
    default_entry(entries, settings.model_name)
    checked: CheckedModels = {}
    for entry in entries:
        model = checked[entry.key] = load_entry(entry)
        try:
            plan_model(settings, model, entry)
        except InputsNotDeclared as exc:  # served on /score if it is the default; /v1 answers 409 with this
            logging.getLogger("service").warning("model %s: %s", entry.key, exc)
    return checked


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:  # the values are hidden (they may be credentials); the reasons are not
        reasons = "; ".join(f"{'.'.join(map(str, error['loc'])).upper()}: {error['msg']}" for error in exc.errors())
        print(f"cannot start: invalid settings: {reasons}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings.log_level, settings.log_format)
    try:
        # Fail fast, with the reason, rather than serve a readiness probe that never turns green.
        app = create_app(settings, check_models(settings))
    except (ModelLoadError, DescriptionError, CatalogError, AuthConfigError) as exc:
        logging.getLogger("service").error("cannot start: %s", exc)
        sys.exit(2)
    except PlanError as exc:  # a plan it accepts decrypts exactly; anything else is refused here
        logging.getLogger("service").error("cannot start: the v1 protocol cannot serve this model: %s", exc)
        sys.exit(2)
    # Access lines come from RequestTracking (with request ids); uvicorn keeps the logging set up here.
    # Connections are bounded here (count, head size and time, keep-alive); bodies in BoundedBodies.
    # httptools and uvloop rather than uvicorn's pure-Python h11 and asyncio: about half the cost per request.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                log_config=None, access_log=False, timeout_graceful_shutdown=60, loop="uvloop",
                http=with_head_bounds(settings.header_timeout_s, settings.max_header_bytes),
                limit_concurrency=settings.max_connections, timeout_keep_alive=settings.keep_alive_timeout_s,
                ssl_certfile=settings.tls_cert_file, ssl_keyfile=settings.tls_key_file)


if __name__ == "__main__":
    main()
