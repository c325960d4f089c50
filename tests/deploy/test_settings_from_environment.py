"""Settings come from the documented environment variables and never print secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from model import BUNDLED_MODEL_DIR, BUNDLED_NETWORK_DIR, BUNDLED_NETWORK_FILE
from model.catalog import default_entry, discover
from service.settings import Settings


def test_defaults_serve_the_bundled_model_on_port_8000_against_local_azurite(monkeypatch) -> None:
    for name in ("AZUREML_MODEL_DIR", "MODEL_FILE", "PORT", "HOST", "AZURE_STORAGE_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    entry, network = discover(settings.azureml_model_dir, settings.model_file)
    assert entry.path == BUNDLED_MODEL_DIR / "sklearn_mnist_model.pkl" and entry.path.is_file()
    assert entry.key == "mnist/1" and entry.description is not None and entry.at_top  # model/model-settings.json
    assert network.key == "mnist-square/1" and network.path == BUNDLED_NETWORK_DIR / BUNDLED_NETWORK_FILE
    assert default_entry([entry, network], None) == entry  # the model at the top is the default
    assert settings.port == 8000
    assert "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1" in settings.azure_storage_connection_string


def test_environment_variables_override(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("MODEL_FILE", "other.pkl")
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("WORKER_COUNT", "3")
    monkeypatch.setenv("SCORING_ENGINE", "eiserver")
    settings = Settings()
    assert (settings.azureml_model_dir, settings.model_file) == (tmp_path, "other.pkl")
    assert (settings.port, settings.worker_count, settings.scoring_engine) == (9001, 3, "eiserver")


@pytest.mark.parametrize("name, value", [("PORT", "0"), ("WORKER_COUNT", "0"), ("SCORING_ENGINE", "magic")])
def test_invalid_values_are_refused(monkeypatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name.lower()):
        Settings()


def test_connection_string_is_not_in_the_repr(monkeypatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=a;AccountKey=c2VjcmV0;")
    assert "c2VjcmV0" not in repr(Settings())
