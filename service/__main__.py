"""`python -m service`: check the model, then serve the app with uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn

from model.loading import ModelLoadError, load_linear_model
from service.app import create_app
from service.http.auth import AuthConfigError
from service.logs import configure_logging
from service.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        # Fail fast, with the reason, rather than serve a readiness probe that never turns green.
        load_linear_model(settings.model_path)
        app = create_app(settings)
    except (ModelLoadError, AuthConfigError) as exc:
        logging.getLogger("service").error("cannot start: %s", exc)
        sys.exit(2)
    # Access lines come from RequestTracking (with request ids); uvicorn keeps the logging set up here.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                log_config=None, access_log=False, timeout_graceful_shutdown=60)


if __name__ == "__main__":
    main()
