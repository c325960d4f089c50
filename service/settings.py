"""Every setting of the service, read from the environment (names are case-insensitive)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from client import AZURITE_CONNECTION_STRING  # the development account's public string, kept once
from model import BUNDLED_MODEL_DIR, DEFAULT_MODEL_FILE

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Service configuration. Defaults run the bundled model against a local Azurite."""

    # Values never appear in validation errors: several settings hold credentials.
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore",
                                      protected_namespaces=(), hide_input_in_errors=True)

    host: str = Field("127.0.0.1", description="Interface to listen on (0.0.0.0 in containers).")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log level written, by the web process and the workers alike.")
    log_format: Literal["text", "json"] = Field("text", description="`json`: one JSON object per line.")

    azureml_model_dir: Path = Field(
        BUNDLED_MODEL_DIR, description="Folder of the model (its model-settings.json or MODEL_FILE), or of one "
                                       "<name>/<version>/ folder per model (Azure ML's layout).")
    model_file: str = Field(DEFAULT_MODEL_FILE, description="Model file name inside AZUREML_MODEL_DIR (or inside each "
                                                           "<name>/<version>/ folder) where no model-settings.json "
                                                           "names one.")
    model_name: str | None = Field(
        None, description="The default model, which POST /score, /v1/model and /v1/score serve, when "
                          "AZUREML_MODEL_DIR holds several (its latest version).")
    scoring_engine: Literal["seal", "eiserver"] = Field(
        "seal", description="Homomorphic evaluator: `seal` (fast, SEAL 4) or `eiserver` (the tutorial's reference).")
    worker_count: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=64,
                              description="Scoring worker processes (default: number of cores).")

    azure_storage_connection_string: str = Field(
        AZURITE_CONNECTION_STRING, repr=False,
        description="Connection string of the storage account that holds public keys.")
    azure_storage_account_url: str | None = Field(
        None, description="Blob endpoint of the key account, reached with DefaultAzureCredential (managed "
                          "identity); takes precedence over the connection string.")
    allowed_storage_accounts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Accounts a request's conn_str may name (comma-separated); "
                                          "default: the service's own account only.")
    storage_endpoint_suffix: str = Field("core.windows.net", description="Endpoint suffix of other accounts.")
    key_container: str = Field("public-keys", description="Container used when a request names none.")
    key_cache_bytes: int = Field(256 * MiB, ge=0, description="Bound of each worker's cache of prepared public "
                                                               "keys, both protocols together.")
    missing_key_ttl_s: float = Field(5.0, ge=0, description="How long a worker remembers that a key id does not "
                                                            "exist, so repeats do not cost a storage round trip.")
    max_key_bytes: int = Field(32 * MiB, ge=1, description="Largest public-key blob accepted.")
    storage_timeout_s: float = Field(10.0, gt=0, description="Connect/read timeout towards Blob Storage.")

    max_request_bytes: int = Field(4 * MiB, ge=1024, description="Largest request body accepted.")
    max_concurrent: int | None = Field(None, ge=1, description="Scorings running at once (default: WORKER_COUNT).")
    max_queue: int = Field(64, ge=0, description="Scorings waiting for a worker; beyond that, 503.")
    scoring_timeout_ms: int = Field(60_000, ge=1, description="Longest wait for one scoring, queue included.")
    max_queue_bytes: int = Field(128 * MiB, ge=1024, description="Request-body bytes held at once (being received, "
                                                                 "queued or scored); beyond, 503 before reading.")
    max_identity_share: float = Field(
        0.5, gt=0, le=1, description="Most of MAX_QUEUE_BYTES, and of MAX_QUEUE, one identity may hold: this "
                                     "share of what the other identities leave free (one queue place at least); "
                                     "1 turns the fairness off.")
    body_timeout_s: float = Field(10.0, gt=0, description="Longest pause in a request body; beyond, 408.")
    body_min_bytes_per_s: int = Field(256 * 1024, ge=1, description="Slowest average rate a request body may "
                                                                    "arrive at (after BODY_TIMEOUT_S of grace).")
    header_timeout_s: float = Field(10.0, gt=0, description="Longest a connection may take to send a request's "
                                                            "headers, or stay idle before its first request.")
    keep_alive_timeout_s: int = Field(5, ge=1, description="Idle time after an answer before the connection closes.")
    max_connections: int = Field(256, ge=1, description="Connections and requests at once (uvicorn's "
                                                        "limit_concurrency); beyond, 503.")
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="Largest request head (request line and headers).")
    tls_cert_file: Path | None = Field(None, description="PEM certificate (chain): the service itself serves HTTPS.")
    tls_key_file: Path | None = Field(None, description="PEM private key of TLS_CERT_FILE.")

    native_profile: Literal["compact", "flooded"] = Field(
        "compact", description="v1 protocol parameters: `compact` (N=4096; a square network on N=2048 where "
                               "its noise allows) or `flooded` (N=8192, 60-bit statistical noise flooding of "
                               "replies).")
    native_input_scale: float | None = Field(
        None, gt=0, description="v1 protocol, for a model without model-settings.json: every feature is sent as "
                                "round(x * NATIVE_INPUT_SCALE) (set with NATIVE_INPUT_MAX; default: not declared).")
    native_input_max: int | None = Field(
        None, ge=1, lt=2**24, description="v1 protocol, with NATIVE_INPUT_SCALE: the largest |round(x * scale)|, "
                                          "so inputs lie in +-NATIVE_INPUT_MAX / NATIVE_INPUT_SCALE.")

    # Identities (service/http/auth.py): who may call, and what each caller may spend.
    auth_mode: Literal["key", "entra", "none"] = Field(
        "key", description="`key`: `Authorization: Bearer <key>` from API_KEYS / API_KEYS_FILE; `entra`: Microsoft "
                           "Entra ID access tokens; `none`: no authentication (explicit only).")
    api_keys: SecretStr | None = Field(
        None, description="Comma-separated `identity=key` pairs; several keys per identity allow rotation.")
    api_keys_file: Path | None = Field(None, description="File of `identity=key` lines (same format as API_KEYS).")
    entra_tenant_id: str | None = Field(None, description="Entra tenant id: gives the default issuer and JWKS URL.")
    entra_issuer: str | None = Field(None, description="Expected `iss` (default: the tenant's v2.0 issuer).")
    entra_audience: str | None = Field(None, description="Expected `aud`: the service's application id URI or id.")
    entra_jwks_url: str | None = Field(None, description="Signing keys (default: the tenant's discovery keys).")
    entra_required_role: str | None = Field(None, description="App role a token must carry in `roles`, if set.")
    entra_jwks_min_refresh_s: float = Field(
        300.0, ge=0, description="Least time between two JWKS downloads caused by unknown key ids; a failed "
                                 "download is not retried sooner either (until then, tokens that need a new key "
                                 "are answered 503 at once).")
    entra_jwks_timeout_s: float = Field(
        10.0, gt=0, description="Longest wait for one JWKS download. One download runs at a time; requests that "
                                "need it share it, so none waits longer than this.")
    entra_jwks_grace_s: float = Field(
        3 * 86400.0, ge=0, description="How long the last good JWKS stays in use past its daily refresh while the "
                                       "tenant's endpoint cannot be reached (each failure logs a warning); after "
                                       "that, every token is refused (503) until a download succeeds. Keys the "
                                       "tenant withdraws stay trusted this much longer during an outage.")
    api_docs: Literal["open", "protected", "off"] = Field(
        "protected", description="`/docs` (Swagger UI from the package's own files) and `/swagger.json`: open to "
                                 "all (logged as a warning at start), behind authentication, or not served.")
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve /metrics without authentication on this port too (for scrapers).")

    rate_limit: str = Field(
        "", description="Images per identity, in the `limits` notation (`20000/hour;200000/day`); empty: unmetered. "
                        "A sliding-window counter: at most the amount in each clock-aligned window, so up to twice "
                        "the amount in an interval of the window's length that straddles two windows.")
    rate_limit_storage_uri: str = Field(
        "memory://", repr=False, description="Where quota counters live: `memory://`, or `redis://host:port` to "
                                             "share them between replicas.")
    batch_identities: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Identities allowed on /v1/score/batch (comma-separated, `*` for all).")
    max_keys_per_identity: int = Field(
        16, ge=1, description="v1 public keys one identity may store, all models together; storing one more "
                              "replaces its least recently stored key.")
    key_ttl_days: float = Field(30.0, gt=0, description="v1 public keys expire this long after their upload.")
    native_key_revalidate_s: float = Field(
        60.0, ge=0, description="How long a worker uses a cached v1 public key before checking it still exists.")
    native_round_key: SecretStr = Field(
        default_factory=lambda: SecretStr(secrets.token_hex(32)),
        description="64 hex digits: the key that seals a square network's round tokens (the masks between "
                    "rounds). Replicas behind one address must share it; by default each start of the service "
                    "draws its own, and a round begun before a restart is then refused (422).")
    native_round_ttl_s: float = Field(
        60.0, gt=0, description="How long a square network's round token stays valid: the longest a client may "
                                "take between two rounds of one sample.")

    @field_validator("rate_limit")
    @classmethod
    def _limits_notation(cls, value: str) -> str:
        from limits import parse_many  # the notation's own parser, so no invalid limit reaches a request

        if value.strip():
            parse_many(value)
        return value.strip()

    @field_validator("rate_limit_storage_uri")
    @classmethod
    def _known_storage_scheme(cls, value: str) -> str:
        from limits.storage import SCHEMES  # what `limits` can connect to

        scheme = value.partition("://")[0]
        if scheme not in SCHEMES:  # the message names the scheme only: the URI may hold a password
            raise ValueError(f"unknown scheme '{scheme}'; one of: memory, redis, rediss, valkey, ...")
        return value

    @field_validator("native_round_key")
    @classmethod
    def _round_key_hex(cls, value: SecretStr) -> SecretStr:
        try:
            if len(bytes.fromhex(value.get_secret_value())) == 32:
                return value
        except ValueError:
            pass
        raise ValueError("NATIVE_ROUND_KEY is 64 hex digits (32 bytes): `python -c 'import secrets; "
                         "print(secrets.token_hex(32))'`")

    @property
    def key_ttl_s(self) -> float:
        return self.key_ttl_days * 86400

    @field_validator("allowed_storage_accounts", "batch_identities", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @model_validator(mode="after")
    def _input_scale_with_max(self) -> Settings:
        if (self.native_input_scale is None) != (self.native_input_max is None):
            raise ValueError("NATIVE_INPUT_SCALE and NATIVE_INPUT_MAX declare a model's inputs together: set both "
                             "or neither")
        return self
