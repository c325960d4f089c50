"""The tutorial notebook's flow with the unmodified `EILinearRegressionClient`, as a reusable API.

keys -> upload to a blob container -> encrypt -> POST /score -> decrypt -> argmax.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
import numpy as np
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from encrypted.inference.eiclient import EILinearRegressionClient

from client import bearer

# One EIServer prediction takes 11-18 s of CPU; queued behind others it can take minutes.
DEFAULT_TIMEOUT_S = 600.0


class ScoringFailed(Exception):
    """The service answered with an error; `message` is its JSON `{"message": ...}`."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code, self.message = status_code, message


@dataclass
class AzureMLSession:
    """One client key set, uploaded under `key_id` to `container` of the account in `conn_str`.

    With `send_conn_str=False` requests leave `conn_str` out and the service reads the keys from its
    own storage account. `api_key` goes out as `Authorization: Bearer`, beside the tutorial's JSON.
    """

    url: str
    conn_str: str
    container: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    send_conn_str: bool = True
    api_key: str | None = None

    def __post_init__(self) -> None:
        self.encryptor = EILinearRegressionClient(verbose=False)
        self.key_id, public_keys = self.encryptor.get_public_keys()
        self.key_bytes = len(public_keys)
        self._blobs = BlobServiceClient.from_connection_string(self.conn_str)
        container = self._blobs.get_container_client(self.container)
        try:
            container.create_container()
        except ResourceExistsError:
            pass
        container.upload_blob(self.key_id, public_keys, overwrite=True)
        self._http = httpx.Client(base_url=self.url.rstrip("/"), timeout=self.timeout_s, headers=bearer(self.api_key))

    def request_body(self, features: np.ndarray) -> str:
        """The tutorial notebook's request: `json.dumps({"data", "key_id", "conn_str", "container"})`."""
        body = {"data": self.encryptor.encrypt(features), "key_id": self.key_id, "container": self.container}
        if self.send_conn_str:
            body["conn_str"] = self.conn_str
        return json.dumps(body)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Encrypt one sample, have the service score it, decrypt the scores."""
        return self.encryptor.decrypt(self.post(self.request_body(features)))

    def post(self, body: str, url: str | None = None) -> list[str]:
        """Send one request body to `POST /score` (of `url`, default the session's service).

        Returns the encrypted scores, or raises `ScoringFailed`."""
        target = f"{url.rstrip('/')}/score" if url else "/score"
        response = self._http.post(target, content=body, headers={"Content-Type": "application/json"})
        if response.status_code != 200:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise ScoringFailed(response.status_code, message)
        return response.json()

    def close(self, delete_keys: bool = True) -> None:
        """Step 6 of the notebook: remove the uploaded keys."""
        self._http.close()
        if delete_keys:
            self._blobs.get_blob_client(self.container, self.key_id).delete_blob()

    def __enter__(self) -> AzureMLSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
