"""The reference engine: encrypted-inference 0.9's `EIServer`, exactly as the seed tutorial runs it.

EIServer evaluates CKKS (N=8192, 4,096 slots per ciphertext), so a model with d features needs
ceil(d / 4096) ciphertexts. Its native library aborts the process on malformed input, which is
why requests are checked before they get here and why it only runs in worker processes.
"""

from __future__ import annotations

import math

from encrypted.inference.eiserver import EIServer

from model.loading import LinearModel
from service.errors import Unprocessable

CKKS_SLOTS = 4096


class EIServerEngine:
    def __init__(self, model: LinearModel) -> None:
        self._server = EIServer(model.coef, model.intercept, verbose=False)
        self.expected_ciphertexts = math.ceil(model.n_features / CKKS_SLOTS)

    def predict(self, ciphertexts: list[str], public_keys: bytes) -> list[str]:
        if len(ciphertexts) != self.expected_ciphertexts:
            raise Unprocessable(
                f"the model takes {self.expected_ciphertexts} ciphertext(s); the request has {len(ciphertexts)}")
        try:
            return self._server.predict(ciphertexts, public_keys)
        except OSError:
            raise Unprocessable("the encryption library rejected the ciphertext or the public keys") from None
