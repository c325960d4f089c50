"""What a worker process runs: the model loaded once, both protocols set up from it.

The worker pool (`service.workers`) knows no protocol; the app gives it `PROGRAM`. Each worker
loads the model for the Azure ML contract (`service.azureml.contract`), plans it for the v1
protocol (`service.v1.scoring`), and reports the v1 model description (None when the v1
protocol cannot serve the model) to the web process. Both protocols' key stores share one cache,
so `KEY_CACHE_BYTES` bounds the worker.
"""

from __future__ import annotations

from service.azureml import contract
from service.errors import ModelUnavailable
from service.logs import configure_logging
from service.settings import Settings
from service.storage.keystore import KeyCache
from service.v1 import scoring as v1_scoring
from service.workers.channel import WorkerProgram


def set_up(settings: Settings) -> dict | None:
    """Load and plan the model; returns the v1 description. Raises with the reason if it cannot load."""
    configure_logging(settings.log_level, settings.log_format)
    cache = KeyCache(settings.key_cache_bytes)
    try:
        model = contract.init(settings, cache)
    except Exception as exc:  # noqa: BLE001 - any reason the model does not load is the answer of /ready
        raise ModelUnavailable(f"the model could not be loaded: {exc}") from None
    return v1_scoring.init(settings, model, cache)


def work_while_idle() -> bool:
    """One step of what a worker prepares between requests (the v1 protocol's encryptions of zero);
    whether more steps remain. A request that arrives waits for one step (one encryption of zero) at most."""
    return v1_scoring.prepare_ahead()


PROGRAM = WorkerProgram(setup=set_up, idle_step=work_while_idle)
