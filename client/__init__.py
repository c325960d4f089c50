"""Clients of the scoring service.

`EncryptedModel` (`estimator`) is a served model used like its scikit-learn estimator, over
`scoring`, the v1 protocol's client (`ScoringClient`); with `connection` and `keyfile` (the key
pair kept across runs) they need only the base install. `azureml` drives the tutorial's unmodified
`EILinearRegressionClient` through the Azure ML notebook's flow (the `tutorial` extra);
`python -m client` is the command line (the `client` extra).

This module imports nothing heavy: `EncryptedModel` is imported on first use.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from client.estimator import EncryptedModel

__all__ = ["AZURITE_CONNECTION_STRING", "EncryptedModel", "bearer"]


# Azurite's well-known development account (public, documented by Microsoft; not a secret): where
# `python -m client demo` uploads keys by default, and the service's default key store.
AZURITE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)


def bearer(api_key: str | None) -> dict[str, str]:
    """The `Authorization` header for an API key or Entra access token (none without one)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def __getattr__(name: str) -> Any:
    """`client.EncryptedModel`, imported when first asked for (it brings numpy and SEAL)."""
    if name == "EncryptedModel":
        from client.estimator import EncryptedModel

        return EncryptedModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
