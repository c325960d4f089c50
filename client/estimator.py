"""`EncryptedModel`: a served model used like the scikit-learn estimator it was prepared from.

    from client import EncryptedModel

    model = EncryptedModel("https://scoring.example", api_key="...")    # the service's default model
    model.predict(X_test)              # labels (classifiers) or float predictions (regressors)
    model.predict_proba(X_test)        # where the estimator has it; AttributeError as scikit-learn's otherwise
    model.decision_function(X_test)    # classifiers only
    model.classes_, model.n_features_in_

Each call encrypts the rows of X on this machine, has the service score the ciphertexts, and
decrypts the scores here: the service never sees X nor the answers. The scores are exact integer
computations on the model's quantized weights, so they differ from scikit-learn's by the
quantization alone (about 1e-4 of the largest score for models prepared by `python -m model.prepare`).

X is checked as scikit-learn checks it, with its messages (a 1-D array, NaN, infinity, the
number of features), and then against the range each feature was declared for when the model was
prepared (`GET /v1/model`, `input_low` / `input_high`): a value outside it cannot be encoded
faithfully and raises `InputRangeError` naming the sample, the feature and its range, unless
`clip=True`, which encodes such values as the nearest end of their range. `clip` is a constructor
argument (and an attribute one may change), not a keyword of the methods: the methods take X
alone, as scikit-learn's do.

The key pair is kept across runs (`client.keyfile`): in `key_file`, else in the per-user cache;
each construction uploads the same public key again, which renews it on the service without
counting as another key. A hundred runs use one of the identity's MAX_KEYS_PER_IDENTITY keys,
where a pair made per run would push the identity's other keys out (beyond its limit the service
replaces the least recently stored key).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bfv.inputs import InputRangeError
from client.connection import Verify
from client.keyfile import Keys, Plan, default_key_file, kept_keys
from client.scoring import ScoringClient, ScoringFailed, Traffic, model_prefix
from model import outputs as rules
from model.outputs import Outputs

__all__ = ["EncryptedModel", "InputRangeError", "ScoringFailed", "check_samples", "served_outputs"]

_RESHAPE = ("Reshape your data either using array.reshape(-1, 1) if your data has a single feature or "
            "array.reshape(1, -1) if it contains a single sample.")


def check_samples(X: Any, n_features: int, estimator: str = "EncryptedModel") -> np.ndarray:
    """X as a float64 array (samples, n_features), refused as scikit-learn's `check_array` and
    `n_features_in_` check refuse it, with their messages (`estimator` named where they name one)."""
    array = np.asarray(X)
    if array.dtype.kind in "USV":
        raise ValueError("dtype='numeric' is not compatible with arrays of bytes/strings."
                         "Convert your data to numeric values explicitly instead.")
    if array.dtype.kind == "c":
        raise ValueError(f"Complex data not supported\n{array}\n")
    if array.dtype.kind == "O":
        array = array.astype(np.float64)
    if array.ndim == 0:
        raise ValueError(f"Expected 2D array, got scalar array instead:\narray={array}.\n{_RESHAPE}")
    if array.ndim == 1:
        raise ValueError(f"Expected 2D array, got 1D array instead:\narray={array}.\n{_RESHAPE}")
    if array.ndim >= 3:
        raise ValueError(f"Found array with dim {array.ndim}, while dim <= 2 is required by {estimator}.")
    if array.dtype.kind == "f":
        if np.isnan(array).any():
            raise ValueError(f"Input X contains NaN.\n{estimator} does not accept missing values encoded as NaN "
                             "natively. Impute them, or drop the samples with missing values, before scoring.")
        if np.isinf(array).any():
            raise ValueError(f"Input X contains infinity or a value too large for {array.dtype!r}.")
    if array.shape[0] < 1:
        raise ValueError(f"Found array with 0 sample(s) (shape={array.shape}) while a minimum of 1 is required "
                         f"by {estimator}.")
    if array.shape[1] < 1:
        raise ValueError(f"Found array with 0 feature(s) (shape={array.shape}) while a minimum of 1 is required "
                         f"by {estimator}.")
    if array.shape[1] != n_features:
        raise ValueError(f"X has {array.shape[1]} features, but {estimator} is expecting {n_features} features "
                         "as input.")
    return array.astype(np.float64, copy=False)


def _final_estimator(label: str) -> str:
    """`Ridge` of `Ridge` and of `Pipeline(StandardScaler, Ridge)` (the names `model.estimators` gives)."""
    if label.startswith("Pipeline(") and label.endswith(")"):
        return label[len("Pipeline("):-1].split(", ")[-1]
    return label


def _missing(label: str, attribute: str) -> str:
    """scikit-learn's message for a method a fitted estimator (or its Pipeline) does not have."""
    if label.startswith("Pipeline("):
        return f"This 'Pipeline' has no attribute '{attribute}'"
    return f"'{label}' object has no attribute '{attribute}'"


def served_outputs(description: dict) -> Outputs:
    """The rule from scores to answers that a model description (`GET /v1/model`) gives; for a
    service that gives none, the one its classes imply (labels by sign or argmax; no probabilities)."""
    if description.get("outputs") is not None:
        return Outputs.from_description(description["outputs"])
    label, classes = str(description.get("name") or "model"), description.get("classes")
    single = int(description["n_outputs"]) == 1
    if classes is not None:
        return Outputs(kind="classifier", estimator=label, single_output=single, classes=tuple(classes))
    return Outputs(kind="regressor", estimator=label, single_output=single)


class EncryptedModel:
    """A model the service serves, used as the scikit-learn estimator it was prepared from (see the
    module's docstring).

    Example, a `Pipeline([StandardScaler(), LogisticRegression()])` prepared with
    `python -m model.prepare` and served::

        with EncryptedModel("http://127.0.0.1:8000", api_key=key, batch_size=256) as model:
            labels = model.predict(X_test)           # equal to the pipeline's own, bar quantization
            proba = model.predict_proba(X_test)
            model.n_features_in_, model.classes_, model.key_id

    url: the service's base URL. api_key: sent as `Authorization: Bearer`. model, version: which of
    the service's models (`/v1/models/{model}[/versions/{version}]`); None is the service's default
    model. key_file: where the key pair is kept (made on first use, mode 0600); by default the
    per-user cache (`client.keyfile.default_key_file`). batch_size: samples per request (1: one
    `/score` request each; more: `/score/batch`, up to the model's `max_batch`, for identities the
    service allows batches). clip: encode out-of-range values as the end of their declared range
    instead of raising `InputRangeError`. verify, timeout: TLS verification and socket timeout
    (`ScoringClient`). progress: called with the number of samples scored after each request.

    Construction fetches the model's description and uploads the public key: `ScoringFailed` with
    the service's message if it refuses (an unknown model, a missing API key), `StoredKeyError` for
    a key file made for other parameters or whose public key is not its secret key's.
    """

    def __init__(self, url: str, api_key: str | None = None, model: str | None = None, version: str | None = None,
                 *, key_file: str | os.PathLike[str] | None = None, batch_size: int = 1, clip: bool = False,
                 verify: Verify = True, timeout: float = 120.0,
                 progress: Callable[[int], None] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.url, self.model, self.version = url, model, version
        self.batch_size, self.clip, self.progress = int(batch_size), bool(clip), progress
        # Where the key pair is kept: known once the service has said which parameters it uses.
        self.key_file: Path | None = None if key_file is None else Path(key_file)

        def keys(plan: Plan) -> Keys:
            self.key_file = self.key_file or default_key_file(url, model, version, plan)
            return kept_keys(self.key_file, plan)

        self._scoring = ScoringClient(url, timeout, verify, api_key, prefix=model_prefix(model, version), keys=keys)
        self.description: dict = self._scoring.description
        self.plan: Plan = self._scoring.plan
        self.outputs: Outputs = served_outputs(self.description)

    # -- what the service said it serves ------------------------------------------------------------

    @property
    def n_features_in_(self) -> int:
        return self.plan.n_features

    @property
    def classes_(self) -> np.ndarray:
        if self.outputs.kind != "classifier" or self.outputs.classes is None:
            raise AttributeError(_missing(_final_estimator(self.outputs.estimator), "classes_"))
        return np.asarray(self.outputs.classes)

    @property
    def key_id(self) -> str:
        """The id (SHA-256) of the public key the service holds for this client."""
        return self._scoring.key_id

    @property
    def key_bytes(self) -> int:
        """The size of the public key uploaded at construction."""
        return self._scoring.key_bytes

    def stored_keys(self) -> list[dict]:
        """The caller's public keys the service stores for this model (`GET {prefix}/keys`)."""
        return self._scoring.stored_keys()

    @property
    def traffic(self) -> Traffic:
        """Requests, bytes and seconds spent so far."""
        return self._scoring.traffic

    @property
    def model_name(self) -> str | None:
        """The served model's name, as the service describes it."""
        return self.description.get("name")

    @property
    def model_version(self) -> str | None:
        return self.description.get("version")

    # -- scoring ----------------------------------------------------------------------------------

    def encode(self, X: Any) -> np.ndarray:
        """The integers that would be encrypted for X (samples, n_features), after every check of X:
        scikit-learn's, then each feature's declared range (`InputRangeError` unless `clip`)."""
        samples = check_samples(X, self.n_features_in_, type(self).__name__)
        return self.plan.inputs.encode(samples, self.clip)

    def linear_scores(self, X: Any) -> np.ndarray:
        """The decrypted scores `X @ coef.T + intercept` (samples, n_outputs), for every kind of model:
        what `decision_function` returns for a classifier, the linear predictor for a regressor."""
        integers = self._scoring.integer_scores(self.encode(X), self.batch_size, self.progress)
        return np.asarray(integers, dtype=np.float64) / self.plan.score_scale

    def predict(self, X: Any) -> np.ndarray:
        """Labels of `classes_` (classifiers), or float predictions, 1-D for one target (regressors)."""
        return rules.predict(self.linear_scores(X), self.outputs)

    @property
    def decision_function(self) -> Callable[[Any], np.ndarray]:
        """Classifiers' confidence scores (1-D for one output); AttributeError for regressors."""
        if self.outputs.kind != "classifier":
            raise AttributeError(_missing(self.outputs.estimator, "decision_function"))
        return self._decision_function

    def _decision_function(self, X: Any) -> np.ndarray:
        return rules.decision_function(self.linear_scores(X), self.outputs)

    @property
    def predict_proba(self) -> Callable[[Any], np.ndarray]:
        """Probabilities per class by the estimator's own rule; AttributeError with scikit-learn's
        message where the estimator has none (a regressor, LinearSVC, a hinge-loss SGDClassifier)."""
        if self.outputs.proba is None:
            raise AttributeError(self.outputs.proba_error or _missing(self.outputs.estimator, "predict_proba"))
        return self._predict_proba

    def _predict_proba(self, X: Any) -> np.ndarray:
        return rules.predict_proba(self.linear_scores(X), self.outputs)

    def score(self, X: Any, y: Any) -> float:
        """scikit-learn's default `score`: mean accuracy (classifiers), R^2 averaged over targets (regressors)."""
        predicted = self.predict(X)
        expected = np.asarray(y)
        if self.outputs.kind == "classifier":
            return float(np.mean(predicted == expected))
        truth = expected.astype(np.float64).reshape(len(expected), -1)
        residual = ((truth - np.asarray(predicted, dtype=np.float64).reshape(truth.shape)) ** 2).sum(axis=0)
        total = ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)
        r2 = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), np.where(residual == 0, 1.0, 0.0))
        return float(r2.mean())

    # -- life -------------------------------------------------------------------------------------

    def close(self) -> None:
        self._scoring.close()

    def __enter__(self) -> EncryptedModel:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        named = "".join(f", {name}={value!r}" for name, value in (("model", self.model), ("version", self.version))
                        if value is not None)
        return f"{type(self).__name__}({self.url!r}{named})"
