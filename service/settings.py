"""Every setting of the service, read from the environment (names are case-insensitive)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model import BUNDLED_MODEL_DIR, DEFAULT_MODEL_FILE

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
AZURITE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Service configuration. Defaults run the bundled model against a local Azurite."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore",
                                      protected_namespaces=())

    host: str = Field("127.0.0.1", description="Interface to listen on (0.0.0.0 in containers).")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field("text", description="`json`: one JSON object per line.")

    azureml_model_dir: Path = Field(BUNDLED_MODEL_DIR, description="Folder holding the pickled model.")
    model_file: str = Field(DEFAULT_MODEL_FILE, description="Model file name inside AZUREML_MODEL_DIR.")
    scoring_engine: Literal["seal", "eiserver"] = Field(
        "seal", description="Homomorphic evaluator: `seal` (fast, SEAL 4) or `eiserver` (the seed's reference).")
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
    key_cache_bytes: int = Field(256 * MiB, ge=0, description="Bound of the in-memory public-key cache.")
    max_key_bytes: int = Field(32 * MiB, ge=1, description="Largest public-key blob accepted.")
    storage_timeout_s: float = Field(10.0, gt=0, description="Connect/read timeout towards Blob Storage.")

    max_request_bytes: int = Field(4 * MiB, ge=1024, description="Largest request body accepted.")
    max_concurrent: int | None = Field(None, ge=1, description="Scorings running at once (default: WORKER_COUNT).")
    max_queue: int = Field(64, ge=0, description="Scorings waiting for a worker; beyond that, 503.")
    scoring_timeout_ms: int = Field(60_000, ge=1, description="Longest wait for one scoring, queue included.")

    native_profile: Literal["compact", "flooded"] = Field(
        "compact", description="Native protocol parameters: `compact` (N=4096) or `flooded` (N=8192, "
                               "60-bit statistical noise flooding of replies).")
    native_input_scale: float = Field(
        255.0, gt=0, description="Native protocol: the model sees integer inputs divided by this (MNIST: 255).")
    native_input_max: int = Field(255, ge=1, le=2**20, description="Native protocol: largest |integer input|.")

    @field_validator("allowed_storage_accounts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @property
    def model_path(self) -> Path:
        return self.azureml_model_dir / self.model_file
