"""Homomorphic evaluators of the Azure ML contract: one interface, chosen by `SCORING_ENGINE`.

An engine is built once per worker process from the model's weights. It turns a client's
public-key blob into whatever it evaluates with (`prepare_keys`, cached by the key store) and
scores requests: base64 SEAL ciphertexts in, base64 SEAL ciphertexts (one per model output) out.
"""

from __future__ import annotations

from typing import Protocol

from model.loading import LinearModel
from service.storage.keystore import PreparedKeys

ENGINE_NAMES = ("seal", "eiserver")


class ScoringEngine(Protocol):
    expected_ciphertexts: int

    def prepare_keys(self, public_keys: bytes) -> PreparedKeys:
        """Check and load a public-key blob; raises `SealFormatError` when it is malformed."""
        ...

    def predict(self, ciphertexts: list[str], keys: PreparedKeys) -> list[str]:
        """Encrypted scores, one base64 ciphertext per model output, for the client to decrypt."""
        ...


def create_engine(name: str, model: LinearModel) -> ScoringEngine:
    if name == "seal":
        from service.azureml.seal4 import Seal4Engine

        return Seal4Engine(model)
    if name == "eiserver":
        from service.azureml.eiserver import EIServerEngine

        return EIServerEngine(model)
    raise ValueError(f"unknown scoring engine {name!r}; expected one of {ENGINE_NAMES}")
