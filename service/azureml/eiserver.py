"""The reference engine: encrypted-inference 0.9's `EIServer`, exactly as the tutorial runs it.

EIServer evaluates CKKS (N=8192, 4,096 slots per ciphertext), so a model with d features needs
ceil(d / 4096) ciphertexts. It re-parses the raw key blob on every call. Its native library aborts
the process on malformed input, which is why requests are checked before they get here and why it
only runs in worker processes.
"""

from __future__ import annotations

from encrypted.inference.eiserver import EIServer

from model.loading import LinearModel
from service.azureml.parameters import ciphertexts_for
from service.azureml.seal_wire import read_tutorial_keys
from service.errors import Unprocessable
from service.storage.keystore import PreparedKeys


class EIServerEngine:
    def __init__(self, model: LinearModel) -> None:
        self._server = EIServer(model.coef, model.intercept, verbose=False)
        self.expected_ciphertexts = ciphertexts_for(model.n_features)

    def prepare_keys(self, public_keys: bytes) -> PreparedKeys:
        read_tutorial_keys(public_keys, kept_rows=set())  # the fast engine's checks, nothing kept: EIServer re-parses
        return PreparedKeys(public_keys, len(public_keys))

    def predict(self, ciphertexts: list[str], keys: PreparedKeys) -> list[str]:
        if len(ciphertexts) != self.expected_ciphertexts:
            raise Unprocessable(
                f"the model takes {self.expected_ciphertexts} ciphertext(s); the request has {len(ciphertexts)}")
        try:
            return self._server.predict(ciphertexts, keys.value)
        except OSError:
            raise Unprocessable("the encryption library rejected the ciphertext or the public keys") from None
