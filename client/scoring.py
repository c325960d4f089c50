"""`ScoringClient`: the v1 protocol's Python API.

    client = ScoringClient("http://127.0.0.1:8000", api_key="...")
    labels, scores = client.predict(images)        # uint8 MNIST images, or features as sklearn sees them

The client fetches the model's encoding parameters (`GET /v1/model`), makes a key pair, uploads
the public key once (`POST /v1/keys`; its id is its SHA-256), then encrypts, posts and decrypts.
The secret key never leaves the process. Samples go one request each (`batch_size=1`) or in
batches of up to `max_batch` per request.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from client import bearer
from client.connection import Connection, Response, Verify
from client.labels import labels_from_scores
from bfv.encryption import ClientKeys
from bfv.plan import PublicPlan

OCTET_STREAM = {"content-type": "application/octet-stream"}


class ScoringFailed(RuntimeError):
    """The service refused or failed a request; the message is its own."""


@dataclass
class Traffic:
    """Bytes and time spent, summed over the client's life, for reports."""

    samples: int = 0
    request_bytes: int = 0
    reply_bytes: int = 0
    server_seconds: float = 0.0
    total_seconds: float = 0.0
    requests: int = 0


class ScoringClient:
    def __init__(self, url: str, timeout: float = 120.0, verify: Verify = True, api_key: str | None = None) -> None:
        """`api_key` (or an Entra access token) is sent as `Authorization: Bearer` on every request.

        `verify` checks an https server's certificate against the system's CAs (True), a CA file or
        folder, or an `ssl.SSLContext`; False turns the check off. `timeout` bounds each socket operation.
        """
        self._http = Connection(url, timeout, verify, headers=bearer(api_key))
        self.plan = PublicPlan.from_description(self._call("GET", "/v1/model").json())
        self._keys = ClientKeys(self.plan)
        self.key_bytes = len(self._keys.public_key)
        self._call("POST", "/v1/keys", self._keys.public_key, OCTET_STREAM)
        self.traffic = Traffic()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ScoringClient":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
              while_waiting: Callable[[], object] | None = None) -> Response:
        try:
            response = self._http.request(method, path, body, headers, while_waiting)
        except (OSError, http.client.HTTPException) as exc:
            raise ScoringFailed(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise ScoringFailed(f"{method} {path} answered {response.status_code}: {message}")
        return response

    def _post(self, path: str, body: bytes, samples: int, while_waiting: Callable[[], object] | None = None) -> bytes:
        response = self._call("POST", path, body, OCTET_STREAM, while_waiting)
        self.traffic.requests += 1
        self.traffic.samples += samples
        self.traffic.request_bytes += len(body)
        self.traffic.reply_bytes += len(response.content)
        self.traffic.server_seconds += float(response.headers.get("x-engine-ms", "nan")) / 1000
        return response.content

    def integer_scores(self, inputs: np.ndarray, batch_size: int = 1,
                       progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Exact integer scores (samples, n_outputs) of integer inputs (samples, n_features).

        Requests go one after another. A single image's successor is encrypted while the server
        scores it: its encryption leaves each request's path. A batch's successor is encrypted after:
        on a machine the client shares with the service, encrypting it meanwhile takes the cores the
        scoring uses.
        """
        started = time.perf_counter()
        scores = np.empty((inputs.shape[0], self.plan.n_outputs), dtype=np.int64)
        step = max(1, min(batch_size, self.plan.degree))
        path = "/v1/score" if step == 1 else "/v1/score/batch"
        body = self._encrypt(inputs[:step], step) if len(inputs) else b""
        for start in range(0, len(inputs), step):
            chunk, after = inputs[start : start + step], inputs[start + step : start + 2 * step]
            following: list[bytes] = []

            def encrypt_after() -> None:
                following.append(self._encrypt(after, step))

            overlap = step == 1 and len(after) > 0
            reply = self._post(path, body, len(chunk), while_waiting=encrypt_after if overlap else None)
            if step == 1:
                scores[start] = self._keys.decrypt_single(reply)
            else:
                scores[start : start + len(chunk)] = self._keys.decrypt_batch(reply)
            if progress:
                progress(len(chunk))
            if len(after) and not following:
                encrypt_after()
            body = following[-1] if following else b""  # the last one, if a retry sent this request twice
        self.traffic.total_seconds += time.perf_counter() - started
        return scores

    def _encrypt(self, chunk: np.ndarray, step: int) -> bytes:
        return self._keys.encrypt_single(chunk[0]) if step == 1 else self._keys.encrypt_batch(chunk)

    def predict(self, samples: np.ndarray, batch_size: int = 1,
                progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Labels and real-valued scores (samples, n_outputs), as the plaintext model would give them.

        For regressors (LinearRegression) the scores are the predictions.
        """
        scores = self.integer_scores(self.plan.quantize_inputs(samples), batch_size, progress) / self.plan.score_scale
        return labels_from_scores(scores, self.plan.classes), scores

