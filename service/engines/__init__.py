"""Homomorphic evaluators: one interface, chosen by the `SCORING_ENGINE` setting.

An engine is built once per worker process from the model's weights and then scores requests of
the seed protocol: base64 SEAL ciphertexts in, base64 SEAL ciphertexts (one per model output) out.
"""

from __future__ import annotations

from typing import Protocol

from model.loading import LinearModel


class ScoringEngine(Protocol):
    def predict(self, ciphertexts: list[str], public_keys: bytes) -> list[str]:
        """Encrypted scores, one base64 ciphertext per model output, for the client to decrypt."""
        ...


def create_engine(name: str, model: LinearModel) -> ScoringEngine:
    if name == "eiserver":
        from service.engines.eiserver import EIServerEngine

        return EIServerEngine(model)
    raise ValueError(f"unknown scoring engine {name!r}")
