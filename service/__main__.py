"""`python -m service`: check the model, then serve the app with uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn

from model.loading import ModelLoadError, load_linear_model
from native.plan import PlanError, build_plan
from service.app import create_app
from service.logs import configure_logging
from service.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        # Fail fast, with the reason, rather than serve a readiness probe that never turns green.
        model = load_linear_model(settings.model_path)
        build_plan(model, settings.native_profile, settings.native_input_scale, settings.native_input_max)
    except ModelLoadError as exc:
        logging.getLogger("service").error("cannot start: %s", exc)
        sys.exit(2)
    except PlanError as exc:  # a plan it accepts decrypts exactly; anything else is refused here
        logging.getLogger("service").error("cannot start: the native protocol cannot serve this model: %s", exc)
        sys.exit(2)
    # Access lines come from RequestTracking (with request ids); uvicorn keeps the logging set up here.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                log_config=None, access_log=False, timeout_graceful_shutdown=60)


if __name__ == "__main__":
    main()
