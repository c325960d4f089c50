"""The Azure ML contract: the tutorial's `init()` / `run(raw_data)` entry script.

This module works on its own as an Azure ML entry script (`init()` loads the model, `run()` takes
the request body). The HTTP service bounds the body's size in the web process (`body_limit`: what
the model's count of ciphertexts can take, before a byte is read) and charges the caller's quota;
`score_body` then parses, checks and scores it in a worker process, so the CPU that checking
ciphertexts costs (base64, zlib, every coefficient) is spent off the event loop, and a request
that fails the checks has cost its image like one that passes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from model.catalog import ModelEntry, default_entry, discover
from model.loading import LinearModel, load_entry
from model.network import NetworkModel
from service.azureml.engines import ScoringEngine, create_engine
from service.azureml.parameters import MAX_INFLATED_CIPHERTEXT, ciphertexts_for
from service.azureml.seal_format import SealFormatError, decode_base64
from service.azureml.seal_wire import check_key_blob, read_client_ciphertext
from service.errors import Conflict, ModelUnavailable, describe_validation_errors
from service.settings import Settings
from service.storage.keystore import KeyCache, KeyStore
from service.workers.outcome import ScoringOutcome, evaluate_timed

log = logging.getLogger(__name__)

MAX_CIPHERTEXTS = 16
# The base64 text of the largest ciphertext `read_client_ciphertext` accepts (unseeded, uncompressed:
# 2 x 3 x 8192 coefficients of 8 bytes and ~150 bytes of headers, deflate's worst case on top), and
# room for the other fields (conn_str up to 4 KiB) and JSON's punctuation.
MAX_CIPHERTEXT_TEXT = 4 * math.ceil(400 * 1024 / 3)
MAX_OTHER_FIELDS_TEXT = 16 * 1024


def body_limit(n_features: int) -> int:
    """The largest body a request for a model of `n_features` can be (json.dumps, as the client writes it)."""
    return ciphertexts_for(n_features) * (MAX_CIPHERTEXT_TEXT + 4) + MAX_OTHER_FIELDS_TEXT


class ScoreRequest(BaseModel):
    """The body `EILinearRegressionClient` users send: exactly the tutorial notebook's JSON."""

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
    def _ciphertexts_are_seal_objects(cls, data: list[str], info: ValidationInfo) -> list[str]:
        expected = (info.context or {}).get("ciphertexts")
        if expected is not None and len(data) != expected:  # counted before any ciphertext is decoded
            raise ValueError(f"the model takes {expected} ciphertext(s); the request has {len(data)}")
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


_scorer: _Scorer | None = None
_unserved: str | None = None  # why POST /score serves nothing though init() ran


def init(settings: Settings | None = None, key_cache: KeyCache | None = None,
         load: Callable[[ModelEntry], LinearModel | NetworkModel] = load_entry
         ) -> tuple[ModelEntry, LinearModel | NetworkModel]:
    """Load the default model of `$AZUREML_MODEL_DIR` (`model.catalog`) with `load` and build the engine
    and key store; returns it. `key_cache` is shared with the v1 protocol in a worker (one byte bound)."""
    global _scorer
    settings = settings or Settings()
    entry = default_entry(discover(settings.azureml_model_dir, settings.model_file), settings.model_name)
    if entry.path.suffix.lower() == ".onnx":  # served on /v1 only
        global _unserved
        _scorer = None
        _unserved = (f"the default model ({entry.key}) is a square network, and POST /score serves the Azure ML "
                     "tutorial's linear models only: score it in rounds on /v1 (docs/networks.md), or set MODEL_NAME "
                     "to a linear model")
        log.warning("%s", _unserved)
        return entry, load(entry)
    model = load(entry)
    engine = create_engine(settings.scoring_engine, model)
    cache = key_cache or KeyCache(settings.key_cache_bytes)
    keys = KeyStore(settings, engine.prepare_keys, cache, "azureml", check_blob=check_key_blob)
    _scorer = _Scorer(model=model, engine=engine, keys=keys)
    log.info("%s engine ready for model %s: %d outputs x %d features", settings.scoring_engine, entry.key,
             model.n_outputs, model.n_features)
    return entry, model


def parse_request(raw_data: str | bytes, ciphertexts: int | None = None) -> ScoreRequest:
    """Parse and check a request body (with exactly `ciphertexts` ciphertexts, if given); raises a
    400/422 `ScoringError` with a readable message."""
    try:
        return ScoreRequest.model_validate_json(raw_data, context={"ciphertexts": ciphertexts})
    except ValidationError as exc:
        raise describe_validation_errors(exc.errors()) from None


def _loaded() -> _Scorer:
    if _scorer is None:
        if _unserved is not None:
            raise Conflict(_unserved)
        raise ModelUnavailable("init() has not run: no model is loaded")
    return _scorer


def score(request: ScoreRequest) -> ScoringOutcome:
    """Fetch the request's public keys and evaluate the model on its ciphertexts."""
    scorer = _loaded()
    lookup = scorer.keys.get(request.key_id, request.container, request.conn_str)
    return evaluate_timed(lambda: scorer.engine.predict(request.data, lookup.keys), keys_cached=lookup.cached,
                          key_cache_bytes=lambda: scorer.keys.cached_bytes)


def score_body(raw_data: str | bytes) -> ScoringOutcome:
    """Parse and check a request body for the loaded model, then score it."""
    return score(parse_request(raw_data, ciphertexts_for(_loaded().model.n_features)))


def run(raw_data: str | bytes) -> list[str]:
    """Azure ML's entry point: the request body in, the JSON-serializable encrypted scores out."""
    return score_body(raw_data).reply
