"""What a worker process runs: the models loaded once, both protocols set up from them.

The worker pool (`service.workers`) knows no protocol; the app gives it `PROGRAM`. Each worker
loads the default model for the Azure ML contract (`service.azureml.contract`), plans every model
of `AZUREML_MODEL_DIR` (`model.catalog`) for the v1 protocol (`service.v1.scoring`), and reports
their descriptions (or why the v1 protocol cannot serve one) to the web process. All key stores
share one cache, so `KEY_CACHE_BYTES` bounds the worker.
"""

from __future__ import annotations

from model.catalog import discover
from model.loading import load_entry
from service.azureml import contract
from service.errors import ModelUnavailable
from service.logs import configure_logging
from service.settings import Settings
from service.storage.keystore import KeyCache
from service.v1 import scoring as v1_scoring
from service.workers.channel import WorkerProgram


def set_up(settings: Settings) -> dict:
    """Load and plan the models; returns {"default": its key, "models": what `service.v1.scoring.init`
    says of each}. Raises with the reason if a model cannot load."""
    configure_logging(settings.log_level, settings.log_format)
    cache = KeyCache(settings.key_cache_bytes)
    try:
        default, model = contract.init(settings, cache)
        models = {default.key: v1_scoring.init(settings, default, model, cache)}
        for entry in discover(settings.azureml_model_dir, settings.model_file):
            if entry.key != default.key:
                models[entry.key] = v1_scoring.init(settings, entry, load_entry(entry), cache)
    except Exception as exc:  # noqa: BLE001 - any reason a model does not load is the answer of /ready
        raise ModelUnavailable(f"the model could not be loaded: {exc}") from None
    return {"default": default.key, "models": models}


def work_while_idle() -> bool:
    """One step of what a worker prepares between requests (the v1 protocol's encryptions of zero);
    whether more steps remain. A request that arrives waits for one step (one encryption of zero) at most."""
    return v1_scoring.prepare_ahead()


PROGRAM = WorkerProgram(setup=set_up, idle_step=work_while_idle)
