"""`ScoringClient`: the v1 protocol's Python API.

    client = ScoringClient("http://127.0.0.1:8000", api_key="...")
    labels, scores = client.predict(images)        # uint8 MNIST images (a model that takes pixels), or
                                                   # features as sklearn sees them (pixels / 255 for mnist-square)

The client fetches the model's encoding parameters (`GET /v1/model`), makes a key pair (or takes
the one `keys` gives, `client.keyfile`), uploads the public key (`POST /v1/keys`; its id is its
SHA-256, and storing it again renews it), then encrypts, posts and decrypts. The secret key never
leaves the process. Samples go one request each (`batch_size=1`) or in batches of up to
`max_batch` per request.

Every route is under one prefix (`model_prefix`): `/v1` for the service's default model,
`/v1/models/{name}` for a named one and `/v1/models/{name}/versions/{version}` for one version;
`ModelRoutes` names the routes under it. `EncryptedModel` (client/estimator.py) is the
scikit-learn-like estimator over this transport.

A square network (its description says `"model_kind": "square-network"`) is scored in rounds, one
request per round for each sample or batch (`bfv.network_rounds`, `bfv.network_batch`): the client
decrypts each round's masked values, squares them and sends them back, so `predict` looks the same
for both kinds of model.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np

from client import bearer
from client.connection import Connection, Response, Verify
from client.keyfile import Keys, Plan, keys_for
from model.outputs import labels_from_scores
from bfv.inputs import InputRangeError
from bfv.network_plan import NetworkPublicPlan
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


DEFAULT_PREFIX = "/v1"


def model_prefix(model: str | None = None, version: str | None = None) -> str:
    """The prefix of a model's v1 routes: `/v1` (the service's default model), `/v1/models/{name}`
    or `/v1/models/{name}/versions/{version}` (name and version quoted as path segments)."""
    if model is None:
        if version is not None:
            raise ValueError(f"version {version!r} names a version of a model: give the model's name too")
        return DEFAULT_PREFIX
    if not model:
        raise ValueError("a model's name cannot be empty (None names the service's default model)")
    prefix = f"{DEFAULT_PREFIX}/models/{quote(model, safe='')}"
    return prefix if version is None else f"{prefix}/versions/{quote(str(version), safe='')}"


@dataclass(frozen=True)
class ModelRoutes:
    """The v1 routes of one model, all under `prefix` (`model_prefix`)."""

    prefix: str = DEFAULT_PREFIX

    @property
    def model(self) -> str:
        """The model's description: `/v1/model` for the default model, the prefix itself for a named one."""
        return f"{DEFAULT_PREFIX}/model" if self.prefix == DEFAULT_PREFIX else self.prefix

    @property
    def keys(self) -> str:
        return f"{self.prefix}/keys"

    @property
    def score(self) -> str:
        return f"{self.prefix}/score"

    @property
    def batch(self) -> str:
        return f"{self.prefix}/score/batch"

    def round(self, index: int, batch: bool = False) -> str:
        return f"{self.prefix}/score{'/batch' if batch else ''}/rounds/{index}"


class ScoringClient:
    def __init__(self, url: str, timeout: float = 120.0, verify: Verify = True, api_key: str | None = None, *,
                 prefix: str = DEFAULT_PREFIX, keys: Callable[[Plan], Keys] | None = None) -> None:
        """`api_key` (or an Entra access token) is sent as `Authorization: Bearer` on every request.

        `verify` checks an https server's certificate against the system's CAs (True), a CA file or
        folder, or an `ssl.SSLContext`; False turns the check off. `timeout` bounds each socket operation.
        `prefix` (`model_prefix`) chooses the model: `/v1`, the service's default. `keys` gives the
        key pair for the service's plan (`client.keyfile.kept_keys`); by default a fresh pair.
        """
        self.routes = ModelRoutes(prefix.rstrip("/") or DEFAULT_PREFIX)
        self._http = Connection(url, timeout, verify, headers=bearer(api_key))
        try:
            self.description: dict = self._call("GET", self.routes.model).json()
            network = self.description.get("model_kind") == "square-network"
            self.plan: Plan = (NetworkPublicPlan if network else PublicPlan).from_description(self.description)
            self._keys = keys_for(self.plan) if keys is None else keys(self.plan)
            self.key_bytes = len(self._keys.public_key)
            self._call("POST", self.routes.keys, self._keys.public_key, OCTET_STREAM)  # again: renews it
        except BaseException:
            self._http.close()
            raise
        self.traffic = Traffic()

    @property
    def key_id(self) -> str:
        """The id of the public key the service holds for this client (its SHA-256)."""
        return self._keys.key_id

    def stored_keys(self) -> list[dict]:
        """The caller's public keys the service stores for this model, least recently stored first
        (`GET {prefix}/keys`; for `/v1`, every model's): key_id, bytes, model, version, stored, expires."""
        return self._call("GET", self.routes.keys).json()["keys"]

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

    def integer_inputs(self, samples: np.ndarray, clip: bool = False) -> np.ndarray:
        """Samples (as scikit-learn sees them; images flattened) to the integers that are encrypted
        (`bfv.inputs`); uint8 images of a model that takes pixels pass as they are."""
        samples = np.asarray(samples)
        samples = samples.reshape(samples.shape[0], -1)
        if samples.dtype == np.uint8 and self.plan.inputs.takes_pixels:
            return samples.astype(np.int64)
        inputs = self.plan.inputs
        if samples.dtype == np.uint8 and samples.shape[1] == inputs.n_features and inputs.high.max() <= 1 \
                and (found := inputs.out_of_range(samples)) is not None:  # pixels, even with clip: never clipped to 1
            sample, feature = found
            raise InputRangeError(f"sample {sample}, feature {feature}: uint8 value {samples[sample, feature]} is "
                                  f"outside the range [{inputs.low[feature]:g}, {inputs.high[feature]:g}] the model's "
                                  "inputs were declared for; uint8 images are taken as pixels only by a model "
                                  "that takes the pixels themselves: pass images / 255.0 if it takes pixels / 255")
        return inputs.encode(samples, clip)

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
        if isinstance(self.plan, NetworkPublicPlan):
            return self._network_scores(inputs, batch_size, progress)
        started = time.perf_counter()
        scores = np.empty((inputs.shape[0], self.plan.n_outputs), dtype=np.int64)
        step = max(1, min(batch_size, self.plan.degree))
        path = self.routes.score if step == 1 else self.routes.batch
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

    def _network_scores(self, inputs: np.ndarray, batch_size: int, progress: Callable[[int], None] | None
                        ) -> np.ndarray:
        """A square network's exact integer scores: each sample (or batch of up to its blocks of N samples,
        `NetworkPublicPlan.batch_blocks`) through every round, one request per round. A single sample's
        successor is encrypted while the server works on its last round; a batch's after it, as in
        `integer_scores`."""
        plan: NetworkPublicPlan = self.plan
        step = max(1, min(batch_size, plan.batch_blocks * plan.degree))
        if step > 1 and plan.batch is None:
            raise ScoringFailed(f"{plan.batch_refusal or 'batches of this network are not served'}: use batch_size=1")
        started = time.perf_counter()
        keys, rounds, batch = self._keys, len(plan.rounds), step > 1

        def first(chunk: np.ndarray) -> bytes:
            return keys.first_batch_request(chunk) if batch else keys.first_request(chunk[0])

        scores = np.empty((inputs.shape[0], plan.n_outputs), dtype=object)
        body = first(inputs[:step]) if len(inputs) else b""
        for start in range(0, len(inputs), step):
            chunk, after = inputs[start : start + step], inputs[start + step : start + 2 * step]
            following: list[bytes] = []

            def encrypt_next() -> None:
                following.append(first(after))

            for round_index in range(rounds):
                last = round_index == rounds - 1
                overlap = last and not batch and len(after) > 0
                reply = self._post(self.routes.round(round_index, batch), body, len(chunk) if round_index == 0 else 0,
                                   while_waiting=encrypt_next if overlap else None)
                body = b"" if last else keys.next_request(round_index, reply, batch)
            scores[start : start + len(chunk)] = keys.batch_scores(reply) if batch else [keys.scores(reply)]
            if progress:
                progress(len(chunk))
            if len(after) and not following:
                encrypt_next()
            body = following[-1] if following else b""
        self.traffic.total_seconds += time.perf_counter() - started
        return scores

    def _encrypt(self, chunk: np.ndarray, step: int) -> bytes:
        return self._keys.encrypt_single(chunk[0]) if step == 1 else self._keys.encrypt_batch(chunk)

    def predict(self, samples: np.ndarray, batch_size: int = 1,
                progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Labels and real-valued scores (samples, n_outputs), as the plaintext model would give them.

        For regressors (LinearRegression) the scores are the predictions.
        """
        integers = self.integer_scores(self.integer_inputs(samples), batch_size, progress)
        scores = np.asarray(integers, dtype=np.float64) / self.plan.score_scale
        return labels_from_scores(scores, self.plan.classes), scores

