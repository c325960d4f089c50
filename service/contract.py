"""The seed's scoring contract: Azure ML's `init()` / `run(raw_data)` entry script.

This module works on its own as an Azure ML entry script (`init()` loads the model, `run()` takes
the request body). The HTTP service wraps the same two steps, `parse_request` in the web process
and `score_measured` in a worker process, so both paths run the same code. Worker processes also
plan the native protocol (`native_scoring`) from the same model.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from model.loading import LinearModel, load_linear_model
from service import native_scoring, worker_deadline
from service.engines import ScoringEngine, create_engine
from service.errors import ModelUnavailable, describe_validation_errors
from service.keystore import KeyCache, KeyStore
from service.logs import configure_logging
from service.engines.seal_wire import read_client_ciphertext
from service.engines.seed_params import MAX_INFLATED_CIPHERTEXT
from service.seal_format import SealFormatError, decode_base64
from service.settings import Settings

log = logging.getLogger(__name__)

MAX_CIPHERTEXTS = 16


class SeedScoreRequest(BaseModel):
    """The body `EILinearRegressionClient` users send: exactly the seed notebook's JSON."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    data: list[str] = Field(
        min_length=1, max_length=MAX_CIPHERTEXTS,
        description="What `EILinearRegressionClient.encrypt()` returned: base64 SEAL 3.5 ciphertexts.")
    key_id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$",  # starts with a letter or digit: not `.` nor `..`
        description="Name of the blob holding the client's public keys (`get_public_keys()[0]`).")
    conn_str: str | None = Field(
        None, min_length=1, max_length=4096,
        description="Azure Storage connection string of the key blob; the service's own account when omitted.")
    container: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$",
        description="Blob container of the key blob; the service's KEY_CONTAINER when omitted.")

    @field_validator("data")
    @classmethod
    def _ciphertexts_are_seal_objects(cls, data: list[str]) -> list[str]:
        for index, text in enumerate(data):
            try:
                read_client_ciphertext(decode_base64(text), MAX_INFLATED_CIPHERTEXT)
            except SealFormatError as exc:
                raise ValueError(f"ciphertext {index} is malformed: {exc}") from None
        return data


@dataclass
class _Scorer:
    model: LinearModel
    engine: ScoringEngine
    keys: KeyStore
    key_cache: KeyCache  # shared with the native protocol's key store: one byte bound per worker


_scorer: _Scorer | None = None
_init_error: str | None = None


def init(settings: Settings | None = None) -> None:
    """Load the model from `$AZUREML_MODEL_DIR/$MODEL_FILE` and build the engine and key store."""
    global _scorer
    settings = settings or Settings()
    model = load_linear_model(settings.model_path)
    engine = create_engine(settings.scoring_engine, model)
    cache = KeyCache(settings.key_cache_bytes)
    _scorer = _Scorer(model=model, engine=engine, keys=KeyStore(settings, engine.prepare_keys, cache, "seed"),
                      key_cache=cache)
    log.info("%s engine ready for a model of %d outputs x %d features", settings.scoring_engine, model.n_outputs, model.n_features)


def close() -> None:
    """Release the engine's native resources while the interpreter is still whole."""
    global _scorer
    _scorer = None


def parse_request(raw_data: str | bytes) -> SeedScoreRequest:
    """Parse and check a request body; raises a 400/422 `ScoringError` with a readable message."""
    try:
        return SeedScoreRequest.model_validate_json(raw_data)
    except ValidationError as exc:
        raise describe_validation_errors(exc.errors()) from None


@dataclass(frozen=True)
class ScoreOutcome:
    """Encrypted scores and what producing them cost, for the web process's metrics."""

    reply: list[str]
    engine_seconds: float
    keys_cached: bool
    key_cache_bytes: int
    worker: int


def score_measured(request: SeedScoreRequest) -> ScoreOutcome:
    """Fetch the request's public keys and evaluate the model on its ciphertexts."""
    if _scorer is None:
        raise ModelUnavailable(_init_error or "init() has not run: no model is loaded")
    lookup = _scorer.keys.get(request.key_id, request.container, request.conn_str)
    worker_deadline.check()
    started = time.perf_counter()
    reply = _scorer.engine.predict(request.data, lookup.keys)
    return ScoreOutcome(reply=reply, engine_seconds=time.perf_counter() - started, keys_cached=lookup.cached,
                        key_cache_bytes=_scorer.keys.cached_bytes, worker=os.getpid())


def run(raw_data: str | bytes) -> list[str]:
    """Azure ML's entry point: the request body in, the JSON-serializable encrypted scores out."""
    return score_measured(parse_request(raw_data)).reply


@dataclass(frozen=True)
class WorkerReport:
    pid: int
    error: str | None
    native_description: dict | None


def init_worker(settings: Settings) -> WorkerReport:
    """A worker process's start: `init()`, then its report to the web process (pid, the native
    protocol's plan). A failure is kept and reported rather than raised: the web process states
    it, and later calls answer 503 with it.
    """
    global _init_error
    configure_logging(settings.log_level, settings.log_format)
    native_description = None
    try:
        init(settings)
        native_description = native_scoring.init(settings, _scorer.model, _scorer.key_cache)
    except Exception as exc:  # noqa: BLE001 - reported to the web process
        _init_error = f"the model could not be loaded: {exc}"
        log.error("%s", _init_error)
    return WorkerReport(pid=os.getpid(), error=_init_error, native_description=native_description)


def work_while_idle() -> bool:
    """One step of what a worker prepares between requests (the native protocol's encryptions of
    zero); whether more steps remain. The worker's loop calls it only while no request waits, so a
    request that arrives waits for one step (one encryption of zero, ~0.35 ms here) at most."""
    return native_scoring.prepare_ahead()
