"""Clients of the scoring service.

`scoring` is the v1 protocol's client (`ScoringClient`; with `connection` and `labels` it needs
only the base install); `azureml` drives the tutorial's unmodified `EILinearRegressionClient`
through the Azure ML notebook's flow (the `tutorial` extra); `python -m client` is the command line
(the `client` extra).
"""


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
