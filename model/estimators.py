"""Which fitted scikit-learn estimators can be scored on encrypted inputs, reduced to one affine map.

Encrypted scoring evaluates `x @ coef.T + intercept` and nothing else, so a model is served when
everything between the caller's features and its scores is affine:

- a linear estimator with `coef_` / `intercept_` (classifiers and regressors, binary, multiclass
  and multi-output; generalized linear models, whose inverse link the client applies);
- a `Pipeline` of affine transformers (StandardScaler, MinMaxScaler without clipping, MaxAbsScaler,
  PCA with or without whitening, TruncatedSVD) before such an estimator, folded in float64 into one
  affine map: with each step `x -> x @ A + c`, the model's scores are `x @ (A @ W.T) + (c @ W.T + b)`.

Anything else is refused by name (the class, or the pipeline step and its class): a tree, a
network, or a transformer that is not affine (PolynomialFeatures, Normalizer, a clipping scaler).
`model.outputs.Outputs` records how scores become what the estimator's `predict` / `predict_proba` return.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.outputs import Outputs


class UnsupportedModel(Exception):
    """The estimator, or a step of it, is not an affine map followed by a linear model."""


@dataclass(frozen=True)
class Affine:
    """x -> x @ matrix + shift, for x of `matrix.shape[0]` features."""

    matrix: np.ndarray  # (features in, features out)
    shift: np.ndarray  # (features out,)

    @classmethod
    def identity(cls, features: int) -> Affine:
        return cls(np.eye(features), np.zeros(features))

    def then(self, other: Affine) -> Affine:
        """This map followed by `other`."""
        return Affine(self.matrix @ other.matrix, self.shift @ other.matrix + other.shift)


def _diagonal(scale: np.ndarray, shift: np.ndarray) -> Affine:
    return Affine(np.diag(scale), shift)


def _standard_scaler(step: object) -> Affine:
    features = int(step.n_features_in_)
    mean = np.zeros(features) if step.mean_ is None else np.asarray(step.mean_, dtype=np.float64)
    scale = np.ones(features) if step.scale_ is None else np.asarray(step.scale_, dtype=np.float64)
    return _diagonal(1 / scale, -mean / scale)


def _min_max_scaler(step: object) -> Affine:
    if step.clip:
        raise UnsupportedModel("MinMaxScaler(clip=True) clips, which is not affine; refit it with clip=False")
    return _diagonal(np.asarray(step.scale_, dtype=np.float64), np.asarray(step.min_, dtype=np.float64))


def _max_abs_scaler(step: object) -> Affine:
    scale = np.asarray(step.scale_, dtype=np.float64)
    return _diagonal(1 / scale, np.zeros_like(scale))


def _pca(step: object) -> Affine:
    components = np.asarray(step.components_, dtype=np.float64).T  # (features, components)
    mean = np.asarray(step.mean_, dtype=np.float64)
    matrix, shift = components, -(mean @ components)
    if step.whiten:  # as scikit-learn whitens: variances below machine epsilon are clipped to it
        scale = np.sqrt(np.asarray(step.explained_variance_, dtype=np.float64))
        scale[scale < np.finfo(scale.dtype).eps] = np.finfo(scale.dtype).eps
        matrix, shift = matrix / scale, shift / scale
    return Affine(matrix, shift)


def _truncated_svd(step: object) -> Affine:
    components = np.asarray(step.components_, dtype=np.float64).T
    return Affine(components, np.zeros(components.shape[1]))


AFFINE_STEPS = {"StandardScaler": _standard_scaler, "MinMaxScaler": _min_max_scaler,
                "MaxAbsScaler": _max_abs_scaler, "PCA": _pca, "TruncatedSVD": _truncated_svd}
REGRESSOR_LINKS = {"IdentityLink": "identity", "LogLink": "log"}
ONE_VS_ONE = {"SVC", "NuSVC"}


def _plain(values: object) -> tuple:
    """Class labels as JSON-friendly Python values (numpy scalars to int, float, str, bool)."""
    return tuple(value.item() if isinstance(value, np.generic) else value for value in values)


def _proba_rule(estimator: object, served: object) -> tuple[str | None, str | None]:
    """predict_proba's rule for the final `estimator` of what is `served` (itself, or its pipeline)."""
    name = type(estimator).__name__
    try:
        getattr(served, "predict_proba")
    except AttributeError as exc:  # scikit-learn's own words for its absence, raised again by the client
        return None, str(exc)
    if name in ("LogisticRegression", "LogisticRegressionCV"):
        return ("logistic" if len(estimator.classes_) <= 2 else "softmax"), None
    if name == "SGDClassifier":
        return {"log_loss": "logistic", "modified_huber": "modified_huber"}[estimator.loss], None
    raise UnsupportedModel(f"{name}.predict_proba follows a rule this service does not reproduce")


def outputs_of(estimator: object, served: object, label: str) -> Outputs:
    """The output rule of a fitted linear `estimator`, the last step of `served` (named `label`)."""
    name = type(estimator).__name__
    coef = np.asarray(estimator.coef_)
    if hasattr(estimator, "classes_"):
        classes = np.asarray(estimator.classes_)
        binarizer = getattr(estimator, "_label_binarizer", None)
        if classes.ndim != 1 or getattr(binarizer, "y_type_", "") == "multilabel-indicator":
            raise UnsupportedModel(f"{name} was fitted on multilabel targets, which are not supported")
        rows = coef.shape[0] if coef.ndim == 2 else 1
        # SVC and NuSVC vote one-vs-one (a row per pair of classes) beyond two classes: not one affine map.
        if name in ONE_VS_ONE and len(classes) > 2:
            raise UnsupportedModel(f"{name} votes one-vs-one between {len(classes)} classes (a row of coef_ per "
                                   "pair), which is not one affine map: use LinearSVC or another one-vs-rest model")
        if rows != (1 if len(classes) == 2 else len(classes)):
            raise UnsupportedModel(f"{name} has {rows} rows of coef_ for {len(classes)} classes: only linear "
                                   "classifiers with a row per class (or one for two classes) can be served")
        proba, proba_error = _proba_rule(estimator, served)
        return Outputs(kind="classifier", estimator=label, single_output=coef.ndim == 1 or coef.shape[0] == 1,
                       classes=_plain(classes), proba=proba, proba_error=proba_error)
    link = "identity"
    loss = getattr(estimator, "_base_loss", None)
    if loss is not None:
        link_name = type(loss.link).__name__
        if link_name not in REGRESSOR_LINKS:
            raise UnsupportedModel(f"{name}'s link {link_name} is not supported (identity or log only)")
        link = REGRESSOR_LINKS[link_name]
    try:
        getattr(served, "predict_proba")
        proba_error = f"'{type(served).__name__}' object has no attribute 'predict_proba'"
    except AttributeError as exc:
        proba_error = str(exc)
    return Outputs(kind="regressor", estimator=label, single_output=coef.ndim == 1, link=link,
                   proba_error=proba_error)


def unfold(estimator: object) -> tuple[object, Affine | None, str]:
    """The final estimator, the affine map its pipeline steps fold into (None without steps), and a
    name for messages (`Pipeline(StandardScaler, LogisticRegression)`)."""
    steps = getattr(estimator, "steps", None)
    if steps is None or type(estimator).__name__ != "Pipeline":
        return estimator, None, type(estimator).__name__
    names = [type(step).__name__ if step not in (None, "passthrough") else "passthrough" for _, step in steps]
    label = f"Pipeline({', '.join(names)})"
    transform: Affine | None = None
    for (step_name, step), class_name in zip(steps[:-1], names[:-1]):
        if step in (None, "passthrough"):
            continue
        fold = AFFINE_STEPS.get(class_name)
        if fold is None:
            raise UnsupportedModel(f"{label}: step '{step_name}' ({class_name}) is not an affine transformer; "
                                   f"only {', '.join(AFFINE_STEPS)} can come before the linear model")
        affine = fold(step)
        transform = affine if transform is None else transform.then(affine)
    final = steps[-1][1]
    if final in (None, "passthrough"):
        raise UnsupportedModel(f"{label} ends without an estimator")
    if getattr(final, "steps", None) is not None:
        raise UnsupportedModel(f"{label}: nested pipelines are not supported; flatten it")
    return final, transform, label
