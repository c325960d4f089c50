"""How scores become what a scikit-learn estimator answers: labels, probabilities, predictions.

Numpy only: the client applies these rules to the scores it decrypts, without scikit-learn, and
the service describes them for each model it serves (`Outputs`, in the model description).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Outputs:
    """How the scores `x @ coef.T + intercept` become the estimator's answers, as scikit-learn computes them.

    kind: "classifier" (decision_function, predict = sign or argmax mapped to `classes`) or
    "regressor" (predict = inverse `link` of the scores). `proba`: predict_proba's rule
    ("logistic": the one-vs-rest logistic of scikit-learn's `_predict_proba_lr`, "softmax",
    "modified_huber"), or None with `proba_error`, scikit-learn's own message for its absence.
    `single_output`: decision_function / predict return 1-D arrays (one score per sample).
    """

    kind: str
    estimator: str
    single_output: bool
    classes: tuple | None = None
    proba: str | None = None
    proba_error: str | None = None
    link: str = "identity"

    def describe(self) -> dict:
        return {"kind": self.kind, "estimator": self.estimator, "single_output": self.single_output,
                "classes": None if self.classes is None else list(self.classes), "proba": self.proba,
                "proba_error": self.proba_error, "link": self.link}

    @classmethod
    def from_description(cls, body: dict) -> Outputs:
        classes = body.get("classes")
        return cls(kind=body["kind"], estimator=body["estimator"], single_output=bool(body["single_output"]),
                   classes=None if classes is None else tuple(classes), proba=body.get("proba"),
                   proba_error=body.get("proba_error"), link=body.get("link", "identity"))




def labels_from_scores(scores: np.ndarray, classes: np.ndarray | tuple | None) -> np.ndarray:
    """scikit-learn's decision rule for rows of scores: the sign for one output, argmax otherwise,
    mapped to `classes` (indices when there are none)."""
    scores = np.asarray(scores, dtype=float)
    indices = (scores[:, 0] > 0).astype(int) if scores.shape[1] == 1 else scores.argmax(axis=1)
    return indices if classes is None else np.asarray(classes)[indices]


def _expit(scores: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-scores))


def _normalized(prob: np.ndarray) -> np.ndarray:
    """Rows divided by their sums; a row of zeros becomes uniform (as scikit-learn does)."""
    total = prob.sum(axis=1, keepdims=True)
    zero = total[:, 0] == 0
    prob[zero], total[zero] = 1.0, prob.shape[1]
    return prob / total


def decision_function(scores: np.ndarray, outputs: Outputs) -> np.ndarray:
    """`decision_function` (classifiers) or the linear predictor (regressors): 1-D for one output."""
    return scores[:, 0] if outputs.single_output else scores


def predict(scores: np.ndarray, outputs: Outputs) -> np.ndarray:
    if outputs.kind == "classifier":
        return labels_from_scores(scores, outputs.classes)
    predictions = np.exp(scores) if outputs.link == "log" else scores
    return predictions[:, 0] if outputs.single_output else predictions


def predict_proba(scores: np.ndarray, outputs: Outputs) -> np.ndarray:
    """Probabilities per class, by the estimator's own rule; AttributeError, with scikit-learn's
    message, where the estimator has none."""
    if outputs.proba is None:
        raise AttributeError(outputs.proba_error or f"'{outputs.estimator}' object has no attribute 'predict_proba'")
    binary = scores.shape[1] == 1
    if outputs.proba == "softmax":
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    if outputs.proba == "logistic":
        prob = _expit(scores)
    elif outputs.proba == "modified_huber":
        prob = (np.clip(scores, -1, 1) + 1) / 2
    else:
        raise ValueError(f"unknown predict_proba rule {outputs.proba!r}")
    return np.hstack([1 - prob, prob]) if binary else _normalized(prob)
