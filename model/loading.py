"""Load a pickled scikit-learn linear model and reduce it to what encrypted scoring needs.

Encrypted scoring only ever evaluates `x @ coef.T + intercept`, so any linear estimator that
exposes `coef_` / `intercept_` can be served, behind a pipeline of affine steps folded into it
(`model.estimators`), whatever scikit-learn version pickled it. Old pickles (the tutorial's file
was written by scikit-learn 0.22) load with the pinned modern version; the version warning
scikit-learn raises is turned into one log line, because only the arrays are used and they are
checked here.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np

from model.catalog import ModelEntry
from model.estimators import UnsupportedModel, outputs_of, unfold
from model.network import NetworkError, NetworkModel, network_outputs
from model.outputs import Outputs

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """The model file is missing, unreadable, or not a linear model we can serve."""


@dataclass(frozen=True)
class LinearModel:
    """The weights of a linear model: `scores = x @ coef.T + intercept`.

    `coef` has one row per output (class) and one column per input feature (of the pipeline's
    input, when the model is a pipeline: its affine steps are folded in).
    """

    coef: np.ndarray
    intercept: np.ndarray
    classes: np.ndarray | None = None
    pickled_with: str | None = None
    outputs: Outputs | None = None  # None for a bare (coef, intercept) pair without an estimator

    @property
    def n_outputs(self) -> int:
        return int(self.coef.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.coef.shape[1])

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Plaintext scores for one sample (1-D) or a batch (2-D), as the encrypted path computes them."""
        return np.asarray(features, dtype=float) @ self.coef.T + self.intercept


def linear_model_from_estimator(served: object, pickled_with: str | None = None) -> LinearModel:
    """Extract and check `coef_` / `intercept_` from a fitted scikit-learn estimator or pipeline."""
    try:
        estimator, transform, label = unfold(served)
    except UnsupportedModel as exc:
        raise ModelLoadError(str(exc)) from None
    if not hasattr(estimator, "coef_"):
        where = f" (the last step of {label})" if label != type(estimator).__name__ else ""
        raise ModelLoadError(
            f"{type(estimator).__name__}{where} has no coef_: only fitted linear models "
            "(LogisticRegression, LinearSVC, RidgeClassifier, LinearRegression, ...) can be served"
        )
    try:
        coef = np.atleast_2d(np.asarray(estimator.coef_, dtype=np.float64))
        intercept = np.atleast_1d(np.asarray(getattr(estimator, "intercept_", 0.0), dtype=np.float64))
        outputs = outputs_of(estimator, served, label)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"coef_/intercept_ of {type(estimator).__name__} are not numeric: {exc}") from exc
    except UnsupportedModel as exc:
        raise ModelLoadError(str(exc)) from None
    if coef.ndim != 2 or coef.shape[0] == 0 or coef.shape[1] == 0:
        raise ModelLoadError(f"coef_ must be (outputs x features), got shape {coef.shape}")
    if intercept.ndim != 1 or intercept.shape[0] not in (1, coef.shape[0]):
        raise ModelLoadError(f"intercept_ of shape {intercept.shape} does not match coef_ of shape {coef.shape}")
    intercept = np.broadcast_to(intercept, (coef.shape[0],)).copy()
    if transform is not None:  # scores = (x @ A + c) @ W.T + b = x @ (W @ A.T).T + (W @ c + b)
        if transform.matrix.shape[1] != coef.shape[1]:
            raise ModelLoadError(f"{label}: the steps give {transform.matrix.shape[1]} features, the estimator "
                                 f"takes {coef.shape[1]}")
        coef, intercept = coef @ transform.matrix.T, coef @ transform.shift + intercept
    if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise ModelLoadError("coef_ or intercept_ contains NaN or infinity")
    classes = getattr(estimator, "classes_", None)
    return LinearModel(coef=coef, intercept=intercept, classes=None if classes is None else np.asarray(classes),
                       pickled_with=pickled_with, outputs=outputs)


def load_estimator(path: str | Path) -> tuple[object, str | None]:
    """The estimator in a joblib/pickle file written by any scikit-learn version, and that version
    when it is not the one installed.

    The file is trusted operator input (unpickling runs code); it never comes from a request.
    """
    # scikit-learn (about 2 s of imports) only where a pickle is read: a worker imports this module, and is
    # handed the models its web process read (`service.model_runtime`).
    from sklearn.exceptions import InconsistentVersionWarning

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        try:
            estimator = joblib.load(path)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the operator
            raise ModelLoadError(f"cannot unpickle {path}: {type(exc).__name__}: {exc}") from exc
    pickled_with = None
    for warning in caught:
        if isinstance(warning.message, InconsistentVersionWarning):
            pickled_with = warning.message.original_sklearn_version
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return estimator, pickled_with


def load_served_model(path: str | Path, outputs: Outputs | None = None) -> LinearModel | NetworkModel:
    """The model a file holds: an ONNX square network (`.onnx`, its answers as `outputs` says when a
    model-settings.json declares them), else a pickled scikit-learn linear model."""
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        return load_linear_model(path)
    from model.onnx_graphs import read_network  # onnx is imported only where a network is served

    try:
        network = read_network(path)
        return NetworkModel(network, outputs if outputs is not None else network_outputs(network))
    except NetworkError as exc:
        raise ModelLoadError(f"{path.name}: {exc}") from None


def load_entry(entry: ModelEntry) -> LinearModel | NetworkModel:
    """The model of a catalog entry, a network's answers as its model-settings.json declares them."""
    return load_served_model(entry.path, entry.description.outputs if entry.description is not None else None)


def load_linear_model(path: str | Path) -> LinearModel:
    """Load a model file (see `load_estimator`) and return its linear weights."""
    estimator, pickled_with = load_estimator(path)
    model = linear_model_from_estimator(estimator, pickled_with=pickled_with)
    if pickled_with is not None:
        import sklearn  # imported by the unpickling above

        log.warning(
            "model %s was pickled by scikit-learn %s and loaded with %s; only coef_ %s and intercept_ are used",
            Path(path).name, pickled_with, sklearn.__version__, model.coef.shape,
        )
    return model
