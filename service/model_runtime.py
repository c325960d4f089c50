"""What a worker process runs: the models loaded once, both protocols set up from them.

The worker pool (`service.workers`) knows no protocol; the app gives it `program(...)`. Each worker
loads the default model for the Azure ML contract (`service.azureml.contract`), plans every model
of `AZUREML_MODEL_DIR` (`model.catalog`) for the v1 protocol (`service.v1.scoring`), and reports
their descriptions (or why the v1 protocol cannot serve one) to the web process. All key stores
share one cache, so `KEY_CACHE_BYTES` bounds the worker. `python -m service` has loaded and checked
every model before it starts the workers, and hands them those arrays: a worker then reads no model
file (nor imports scikit-learn or onnx, about 2 s of a worker's start).
"""

from __future__ import annotations

from functools import partial

from model.catalog import ModelEntry, discover
from model.loading import LinearModel, load_entry
from model.network import NetworkModel
from service.azureml import contract
from service.errors import ModelUnavailable
from service.logs import configure_logging
from service.settings import Settings
from service.storage.keystore import KeyCache
from service.v1 import scoring as v1_scoring
from service.workers.channel import WorkerProgram

CheckedModels = dict[str, LinearModel | NetworkModel]  # by catalog key ("name/version")


def set_up(settings: Settings, checked: CheckedModels | None = None) -> dict:
    """Load (or take from `checked`) and plan the models; returns {"default": its key, "models": what
    `service.v1.scoring.init` says of each}. Raises with the reason if a model cannot load."""
    configure_logging(settings.log_level, settings.log_format)
    cache = KeyCache(settings.key_cache_bytes)

    def load(entry: ModelEntry) -> LinearModel | NetworkModel:
        return checked[entry.key] if checked is not None and entry.key in checked else load_entry(entry)

    try:
        default, model = contract.init(settings, cache, load)
        models = {default.key: v1_scoring.init(settings, default, model, cache)}
        for entry in discover(settings.azureml_model_dir, settings.model_file):
            if entry.key != default.key:
                models[entry.key] = v1_scoring.init(settings, entry, load(entry), cache)
    except Exception as exc:  # noqa: BLE001 - any reason a model does not load is the answer of /ready
        raise ModelUnavailable(f"the model could not be loaded: {exc}") from None
    return {"default": default.key, "models": models}


def work_while_idle() -> bool:
    """One step of what a worker prepares between requests (the v1 protocol's encryptions of zero);
    whether more steps remain. A request that arrives waits for one step (one encryption of zero) at most."""
    return v1_scoring.prepare_ahead()


def program(checked: CheckedModels | None = None) -> WorkerProgram:
    """What the pool runs in each worker: `set_up` (on the `checked` models, where given) and the idle step."""
    return WorkerProgram(setup=set_up if checked is None else partial(set_up, checked=checked),
                         idle_step=work_while_idle)
