"""Clients of the scoring service.

`seed` drives the unmodified seed client (`encrypted-inference`'s `EILinearRegressionClient`)
through the Azure ML notebook's flow; `python -m client` is the command line.
"""


def bearer(api_key: str | None) -> dict[str, str]:
    """The `Authorization` header for an API key or Entra access token (none without one)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}
